"""The kernel developer's loop without QEMU: image references, shares, the job initrd, the
b2c option flags, the kernel's release string and the default boot files, and the init's
side of the job (argument files read byte for byte), run on the host."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zstandard

from b2c_builder.boot import job as jobs
from b2c_builder.boot import kernel as kernels
from b2c_builder.boot import launch
from b2c_builder.boot.launch import USER_NET_IP
from b2c_builder.build import kmod
from b2c_builder.build.compress import compress
from b2c_builder.build.cpio import read_cpio, write_cpio
from b2c_builder.build.rootfs import Rootfs
from b2c_builder.config import Arch, Compression, Disk
from b2c_builder.errors import B2CError, ConfigError, ToolError
from b2c_builder.guest import options
from tests.conftest import ROOT, require_tool
from tests.oci import busybox_layer, make_layout
from tests.shell import PODMAN, Shell
from tests.test_kmod import Synthetic, synthetic  # noqa: F401 - the fixture

# Every character the kernel command line cannot carry, and more.
AWKWARD = [
    "a b",
    '"quoted"',
    "'single'",
    "$HOME",
    "${x}",
    "a;b",
    "back\\slash",
    "new\nline",
    "é ü 漢",
    "",
]


# --- image references and shares ---------------------------------------------------------


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    busybox = Path(require_tool("busybox")).resolve()
    return make_layout(
        tmp_path_factory.mktemp("oci") / "layout", busybox_layer(busybox), cmd=["/bin/sh"]
    )


def test_image_references_follow_podman_transports(layout: Path, tmp_path: Path) -> None:
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"x")
    assert jobs.ImageRef.parse(f"oci:{layout}") == jobs.ImageRef(jobs.Transport.oci, str(layout))
    assert jobs.ImageRef.parse(f"oci:{layout}:v1").reference == "v1"
    ref = jobs.ImageRef.parse(f"oci-archive:{archive}:latest")
    assert (ref.transport, ref.location, ref.reference) == (
        jobs.Transport.oci_archive,
        str(archive),
        "latest",
    )
    assert jobs.ImageRef.parse(f"docker-archive:{archive}").transport.local
    remote = jobs.ImageRef.parse("docker://10.0.2.2:5000/test:latest")
    assert (remote.location, remote.transport.local) == ("10.0.2.2:5000/test:latest", False)
    assert str(remote) == "docker://10.0.2.2:5000/test:latest"
    assert jobs.ImageRef.parse("containers-storage:localhost/x").location == "localhost/x"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("busybox:latest", ("transport",)),
        ("oci:/nonexistent", ("/nonexistent", "OCI layout")),
        ("oci-archive:/nonexistent.tar", ("archive file",)),
        ("docker:registry/x", ("docker://",)),
        ("oci:", ("transport",)),
    ],
)
def test_bad_image_references_are_refused(text: str, words: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        jobs.ImageRef.parse(text)
    for word in words:
        assert word in info.value.message
    assert info.value.hint


def test_docker_archive_takes_no_reference(tmp_path: Path) -> None:
    (tmp_path / "a.tar").write_bytes(b"x")
    with pytest.raises(ConfigError, match="file only"):
        jobs.ImageRef.parse(f"docker-archive:{tmp_path / 'a.tar'}:x")


def test_shares_default_to_the_host_path(tmp_path: Path) -> None:
    assert jobs.Share.parse(str(tmp_path)) == jobs.Share(
        tmp_path.resolve(), str(tmp_path.resolve())
    )
    assert jobs.Share.parse(f"{tmp_path}:/src") == jobs.Share(tmp_path.resolve(), "/src")
    for bad in (f"{tmp_path}:/a,b", f"{tmp_path}:/", "/nonexistent-dir"):
        with pytest.raises(ConfigError):
            jobs.Share.parse(bad)


@pytest.mark.parametrize(
    ("guest", "message"),
    [
        ("/proc", "the guest folder /proc would hide the guest's own /proc"),
        ("/usr/", "the guest folder /usr would hide the guest's own /usr"),
        ("/var", "the guest folder /var would hide the guest's own /var/lib/containers"),
        ("/var/lib", "the guest folder /var/lib would hide the guest's own /var/lib/containers"),
        ("/sys/kernel/x", "the guest folder /sys/kernel/x is inside the guest's own /sys"),
        ("/usr/bin", "the guest folder /usr/bin is inside the guest's own /usr"),
        ("/usr/local", "the guest folder /usr/local is inside the guest's own /usr"),
        ("/etc/containers", "the guest folder /etc/containers is inside the guest's own /etc"),
        ("/run/b2c", "the guest folder /run/b2c is inside the guest's own /run"),
    ],
)
def test_a_share_cannot_hide_the_guests_system_folders(
    tmp_path: Path, guest: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        jobs.Share.parse(f"{tmp_path}:{guest}")
    assert str(caught.value.hint).startswith(
        f"pass HOST_DIR:/some/guest/dir, e.g. {tmp_path}:/mnt/"
    )


def test_two_shares_on_one_guest_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "i").write_bytes(b"070701")
    (tmp_path / "a").mkdir()
    request = launch.RunRequest(
        kernel=tmp_path / "k",
        initrds=(tmp_path / "i",),
        shares=(f"{tmp_path / 'a'}:/mnt/x", f"{tmp_path}:/mnt/x/"),
    )
    with pytest.raises(ConfigError, match="two --share options mount on the guest folder /mnt/x"):
        launch.prepare(request, tmp_path)


def test_a_containers_title_keeps_its_quoting_on_one_line() -> None:
    argv = ["oci:/etc/b2c/job/image/1/layout", "sh", "-c", "echo hi; exit 7", "two\nlines"]
    assert jobs.title_of(argv) == (
        "oci:/etc/b2c/job/image/1/layout sh -c 'echo hi; exit 7' 'two\\nlines'"
    )
    assert jobs.title_of(["docker://r/i:1", "make", "check"]) == "docker://r/i:1 make check"


def test_a_relative_guest_folder_gets_its_own_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        jobs.Share.parse(f"{tmp_path}:relative")
    assert caught.value.hint == "GUEST_DIR must be absolute: HOST_DIR:/guest/dir"


@pytest.mark.parametrize("guest", ["/usr/src/linux", "/usr/src", "/var/tmp/out", "/mnt", "/src"])
def test_a_share_may_sit_inside_the_guests_folders(tmp_path: Path, guest: str) -> None:
    # A kernel tree in /usr/src is shared at its own path, as run does by default.
    assert jobs.Share.parse(f"{tmp_path}:{guest}").guest == guest


# --- the b2c option flags ------------------------------------------------------------------


def test_flags_compose_a_command_line_the_init_splits_back() -> None:
    params = launch.b2c_parameters(
        {
            "b2c.container": ["-v a:/b docker://x sh -c 'exit 3'", "docker://y"],
            "b2c.pipefail": True,
            "b2c.cache_device": "auto",
            "b2c.hostname": None,
            "b2c.network": None,
        }
    )
    assert params == [
        "b2c.container=\"-v a:/b docker://x sh -c 'exit 3'\"",
        "b2c.container=docker://y",
        "b2c.pipefail",
        "b2c.cache_device=auto",
    ]
    parsed = options.parse_cmdline(" ".join(params))
    assert parsed[0] == ("b2c.container", "-v a:/b docker://x sh -c 'exit 3'")
    assert options.lint_cmdline(" ".join(params)) == []


@pytest.mark.parametrize(
    ("name", "value", "word"),
    [
        ("b2c.container", 'docker://x sh -c "exit 3"', "double quote"),
        ("b2c.hostname", "bad name!", "--hostname"),
        ("b2c.network", "off", "auto or none"),
        ("b2c.cache_device", "a\nb", "newline"),
    ],
)
def test_flag_values_no_command_line_can_carry_are_refused(
    name: str, value: str, word: str
) -> None:
    with pytest.raises(ConfigError) as info:
        options.compose(name, value)
    assert word in info.value.message
    assert info.value.hint


def test_every_b2c_option_is_a_run_flag() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "b2c_builder", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "TERM": "dumb"},
        timeout=60,
    )
    for opt in options.OPTIONS:
        if opt.name.startswith("b2c.") and opt.kind is not options.ValueKind.unsupported:
            flag = "--" + opt.name.removeprefix("b2c.").replace("_", "-")
            assert flag in proc.stdout, flag


# --- the job initrd ------------------------------------------------------------------------


def test_the_job_carries_arguments_byte_for_byte(tmp_path: Path, layout: Path) -> None:
    require_tool("skopeo")  # recompresses the layout's gzip layer
    (tmp_path / "initrd").write_bytes(b"070701")
    request = launch.RunRequest(
        kernel=tmp_path / "bzImage",
        initrds=(tmp_path / "initrd",),
        images=(f"oci:{layout}",),
        shares=(f"{tmp_path}:/work",),
        command=("sh", "-c", *AWKWARD),
        b2c={"b2c.pipefail": True},
    )
    plan = launch.prepare(request, tmp_path)
    assert plan.job is not None
    files = {e.name: e for e in read_cpio(plan.job.write(tmp_path / "job.cpio").read_bytes())}
    base = "etc/b2c/job/container/1"
    argv = [
        "-v",
        "/work:/work",
        "-w",
        "/work",
        "oci:/etc/b2c/job/image/1/layout:localhost/b2c-run/image-1:latest",
        "sh",
        "-c",
        *AWKWARD,
    ]
    assert [files[f"{base}/{i}"].data.decode() for i in range(len(argv))] == argv
    assert f"{base}/{len(argv)}" not in files
    assert files["etc/b2c/job/share/1/path"].data == b"/work"
    assert files["etc/b2c/job/share/1/tag"].data == b"b2c_share1"
    # The layout as delivered: its gzip layer decompressed (plain_layout; run's default 2G of
    # RAM holds it) in the workdir.
    delivered = tmp_path / "image-1-plain"
    assert jobs.gzip_layers(layout) == 1 and jobs.gzip_layers(delivered) == 0
    assert (
        files["etc/b2c/job/image/1/layout/oci-layout"].data
        == (delivered / "oci-layout").read_bytes()
    )
    # Its index names the image (deliver: an image podman stores unnamed is pruned).
    assert files["etc/b2c/job/image/1/layout/index.json"].data == (
        (tmp_path / "image-1-index.json").read_bytes()
    )
    cmdline = files["etc/b2c/job/cmdline"].data.decode()
    # Local images only: the guest needs no network.
    assert options.parse_cmdline(cmdline) == [
        ("b2c.pipefail", None),
        ("b2c.network", "none"),
        ("b2c.device_drivers", "none"),
        ("b2c.container", f"--b2c-argv-dir=/{base}"),
    ]
    assert options.lint_cmdline(cmdline) == []


def test_a_flag_and_append_setting_one_option_warn_that_the_flag_wins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "i").write_bytes(b"070701")
    request = launch.RunRequest(
        kernel=tmp_path / "k",
        initrds=(tmp_path / "i",),
        append='b2c.poweroff_delay=5 b2c.container="docker://a" b2c.swap=1G b2c.pipefail=0 '
        "b2c.hostname=box b2c.ntp_peer=a b2c.ntp_peer=b",
        b2c={
            "b2c.poweroff_delay": "9",
            "b2c.pipefail": True,
            "b2c.container": ["docker://b"],  # repeatable: both containers run
            "b2c.swap": None,
            "b2c.hostname": "box",  # the same value: nothing to warn about
            "b2c.ntp_peer": "b",  # the same as --append's last one, which /init keeps
        },
    )
    overridden = [opt.name for opt in launch.overridden_in_append(request)]
    assert overridden == ["b2c.poweroff_delay", "b2c.pipefail"]
    with caplog.at_level(logging.WARNING, logger="b2c"):
        plan = launch.prepare(request, tmp_path)
    assert plan.job is not None and "b2c.poweroff_delay=9" in plan.job.cmdline
    assert [r.getMessage() for r in caplog.records] == [
        "b2c.poweroff_delay is set both by --poweroff-delay and in --append: --poweroff-delay's "
        "value wins (the guest reads run's job after the kernel command line); drop one of them",
        "b2c.pipefail is set both by --pipefail and in --append: --pipefail's value wins (the "
        "guest reads run's job after the kernel command line); drop one of them",
    ]


def test_a_registry_image_keeps_the_network(tmp_path: Path) -> None:
    (tmp_path / "i").write_bytes(b"070701")
    request = launch.RunRequest(
        kernel=tmp_path / "k", initrds=(tmp_path / "i",), images=("docker://10.0.2.2:5000/x",)
    )
    plan = launch.prepare(request, tmp_path)
    assert plan.job is not None
    assert not any("b2c.network" in p for p in plan.job.cmdline)
    assert plan.job.containers[0].argv == ("docker://10.0.2.2:5000/x",)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, "none"),
        ({"disks": ("disk.img",)}, "virtio_blk"),
        ({"qemu_args": ("-rtc", "base=2020-01-01")}, "none"),
        # Raw QEMU arguments that may add a device: /init looks for every driver (auto).
        ({"qemu_args": ("-device", "e1000,netdev=n1")}, None),
        ({"qemu_args": ("--drive", "file=d.img")}, None),
        ({"qemu_args": ("-hda", "d.img")}, None),
        # The user's own choice, from the option or --append (an alias too), stays.
        ({"b2c": {"b2c.device_drivers": "nvme"}}, "nvme"),
        ({"append": "b2c.device_drivers=auto"}, None),
    ],
)
def test_the_job_names_the_device_drivers_of_runs_machine(
    tmp_path: Path, given: dict[str, object], expected: str | None
) -> None:
    """run's devices are virtio: the job spares /init the rest of the device class."""
    (tmp_path / "i").write_bytes(b"070701")
    (tmp_path / "disk.img").write_bytes(bytes(512))
    if "disks" in given:
        given = {**given, "disks": (Disk.detect(tmp_path / "disk.img"),)}
    request = launch.RunRequest(
        kernel=tmp_path / "k",
        initrds=(tmp_path / "i",),
        images=("docker://10.0.2.2:5000/x",),
        **given,  # type: ignore[arg-type]
    )
    plan = launch.prepare(request, tmp_path)
    assert plan.job is not None
    values = [v for n, v in options.parse_cmdline(" ".join(plan.job.cmdline))
              if n == "b2c.device_drivers"]  # fmt: skip
    assert values == ([] if expected is None else [expected])


@pytest.mark.parametrize(
    ("given", "static"),
    [
        ({}, True),
        ({"qemu_args": ("-rtc", "base=utc")}, True),
        # The user's own network configuration, in any form, stays.
        ({"append": "ip=dhcp"}, False),
        ({"b2c": {"b2c.iface": "eth0,dhcp"}}, False),
        ({"append": "b2c.network=auto"}, False),
        ({"qemu_args": ("-nic", "user,model=e1000")}, False),
        # Local images only: no network at all.
        ({"images": ("oci:{layout}",)}, False),
    ],
)
def test_the_job_gives_the_user_networks_addresses(
    tmp_path: Path, layout: Path, given: dict[str, Any], static: bool
) -> None:
    """QEMU's user network has fixed addresses: ip= instead of a DHCP exchange."""
    require_tool("skopeo")
    (tmp_path / "i").write_bytes(b"070701")
    if "images" in given:
        given = {**given, "images": (f"oci:{layout}",)}
    request = launch.RunRequest(
        kernel=tmp_path / "k",
        initrds=(tmp_path / "i",),
        **{"images": ("docker://10.0.2.2:5000/x",), **given},
    )
    plan = launch.prepare(request, tmp_path)
    assert plan.job is not None
    params = options.parse_cmdline(" ".join(plan.job.cmdline))
    assert [v for n, v in params if n == "ip"] == ([USER_NET_IP] if static else [])
    assert options.lint_cmdline(" ".join(plan.job.cmdline)) == []


def test_a_boot_without_b2c_options_gets_no_job(tmp_path: Path) -> None:
    """A kernel and an initramfs of the user's own (the bench's floor): nothing is added."""
    (tmp_path / "i").write_bytes(b"070701")
    request = launch.RunRequest(kernel=tmp_path / "k", initrds=(tmp_path / "i",), append="quiet")
    assert launch.prepare(request, tmp_path).job is None
    with_b2c = replace(request, append="quiet b2c.pipefail")
    job = launch.prepare(with_b2c, tmp_path).job
    assert job is not None and job.cmdline == ["b2c.device_drivers=none", f"ip={USER_NET_IP}"]


def test_a_command_needs_an_image(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--image"):
        launch.prepare(launch.RunRequest(kernel=tmp_path / "k", command=("true",)), tmp_path)


def test_an_image_too_large_for_the_memory_is_refused(tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar.gz"
    with gzip.open(layer, "wb", compresslevel=1) as out:
        out.write(b"\0" * (300 * 2**20))  # 300 MiB unpacked, a few hundred KiB delivered
    job = jobs.Job(images=[jobs.Delivery("oci:/x", (("layer", layer),))])
    with pytest.raises(ConfigError) as info:
        jobs.check_memory("512M", 64 * 2**20, job, cache_disk=False)
    assert "--memory 512M" in info.value.message and "300 MiB unpacked" in info.value.message
    assert info.value.hint and "--memory" in info.value.hint and "cache" in info.value.hint
    jobs.check_memory("2G", 64 * 2**20, job, cache_disk=False)
    jobs.check_memory("1G", 64 * 2**20, job, cache_disk=True)


def test_containers_storage_without_tools_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither skopeo nor podman
    ref = jobs.ImageRef.parse("containers-storage:localhost/test")
    with pytest.raises(ToolError) as info:
        jobs.deliver(ref, 1, tmp_path)
    assert "skopeo" in info.value.message and "podman" in info.value.message


# --- the kernel's release string ------------------------------------------------------------


def _bzimage(release: str) -> bytes:
    image = bytearray(0x4000)
    image[0x202:0x206] = b"HdrS"
    image[0x20E:0x210] = (0x1000 - 0x200).to_bytes(2, "little")
    text = f"{release} (someone@example) #1 SMP".encode()
    image[0x1000 : 0x1000 + len(text)] = text
    return bytes(image)


def test_release_from_the_x86_setup_header(tmp_path: Path) -> None:
    (tmp_path / "bzImage").write_bytes(_bzimage("6.13.0-rc1-dirty"))
    assert kernels.kernel_release(tmp_path / "bzImage") == "6.13.0-rc1-dirty"


def test_release_from_a_compressed_image_banner(tmp_path: Path) -> None:
    banner = b"\0" * 100 + b"Linux version 6.12.9-arm64 (builder@host) (gcc) #1 SMP\0" + b"\0" * 100
    (tmp_path / "Image.gz").write_bytes(gzip.compress(banner))
    assert kernels.kernel_release(tmp_path / "Image.gz") == "6.12.9-arm64"
    (tmp_path / "junk").write_bytes(b"not a kernel")
    with pytest.raises(ConfigError, match="no Linux version"):
        kernels.kernel_release(tmp_path / "junk")


def test_release_from_the_s390x_parmarea(tmp_path: Path) -> None:
    """An s390x image: the banner is compressed, the parmarea's kernel_version (a big-endian
    file offset at 0x10428) points at "<release> (<builder>) <version>"."""
    image = bytearray(0x20000)
    text = b"6.12.38+deb13-s390x (debian-kernel@lists.debian.org) #1 SMP Debian\0"
    image[0x18000 : 0x18000 + len(text)] = text
    image[0x10428:0x10430] = (0x18000).to_bytes(8, "big")
    (tmp_path / "vmlinuz").write_bytes(bytes(image))
    assert kernels.kernel_release(tmp_path / "vmlinuz") == "6.12.38+deb13-s390x"
    image[0x10428:0x10430] = (0x18000).to_bytes(8, "little")  # points nowhere: no release
    (tmp_path / "other").write_bytes(bytes(image))
    with pytest.raises(ConfigError, match="no Linux version"):
        kernels.kernel_release(tmp_path / "other")


def _modules_archive(path: Path, release: str) -> Path:
    tree = Rootfs()
    tree.add_file(f"usr/lib/modules/{release}/b2c.modules", b"virtio_net\n", 0o644)
    with path.open("wb") as out:
        write_cpio(tree, out, source_date_epoch=0)
    return path


def test_defaults_pick_the_newest_kernel_and_its_modules(tmp_path: Path) -> None:
    for release in ("6.1.0-9-amd64", "6.12.1-amd64", "6.2.0-1-amd64"):
        (tmp_path / f"linux-{release}.linux_amd64").write_bytes(_bzimage(release))
        (tmp_path / f"linux-{release}.linux_amd64.sha256").write_text("x")
    (tmp_path / "initramfs.linux_amd64.cpio.zst").write_bytes(b"x")
    _modules_archive(tmp_path / "modules-6.1.0-9-amd64.linux_amd64.cpio", "6.1.0-9-amd64")
    # Misnamed on purpose: the contents decide.
    _modules_archive(tmp_path / "modules-other.linux_amd64.cpio", "6.12.1-amd64")
    files = kernels.default_boot_files(tmp_path, Arch.amd64, None, None)
    assert files.kernel.name == "linux-6.12.1-amd64.linux_amd64"
    assert files.release == "6.12.1-amd64"
    assert [p.name for p in files.initrds] == [
        "initramfs.linux_amd64.cpio.zst",
        "modules-other.linux_amd64.cpio",
    ]
    with pytest.raises(ConfigError, match=r"no modules archive for kernel 6\.2\.0-1-amd64"):
        kernels.default_boot_files(
            tmp_path, Arch.amd64, tmp_path / "linux-6.2.0-1-amd64.linux_amd64", None
        )
    with pytest.raises(ConfigError, match="make build ARCH=arm64"):
        kernels.default_boot_files(tmp_path, Arch.arm64, None, None)


def test_release_folder_is_the_flat_build_or_the_newest_version_folder(tmp_path: Path) -> None:
    """`make build` writes releases/ itself, `make release` releases/<version>/: run looks in
    the first that has an image for the architecture."""
    old, new = tmp_path / "0.1.0+trixie.20261101", tmp_path / "0.1.0+trixie.20261128"
    for folder, mtime in ((new, 2_000_000_000), (old, 1_000_000_000)):
        folder.mkdir()
        (folder / "initramfs.linux_amd64.cpio.zst").write_bytes(b"x")
        os.utime(folder, (mtime, mtime))
    (tmp_path / "empty").mkdir()
    assert kernels.release_folder(tmp_path, Arch.amd64) == new
    # No folder has arm64's: releases/ itself, whose lookup then names it.
    assert kernels.release_folder(tmp_path, Arch.arm64) == tmp_path
    (tmp_path / "initramfs.linux_amd64.cpio").write_bytes(b"x")
    assert kernels.release_folder(tmp_path, Arch.amd64) == tmp_path


def test_run_hands_qemu_uncompressed_initrds(tmp_path: Path) -> None:
    plain = tmp_path / "image.cpio"
    _modules_archive(plain, "6.1.0-test")
    packed = tmp_path / "image.cpio.zst"
    packed.write_bytes(compress(plain.read_bytes(), Compression.zstd, Arch.amd64))
    cache = tmp_path / "cache"
    copy = kernels.uncompressed_initrd(packed, cache)
    assert copy.parent == cache / "initrd" and copy.read_bytes() == plain.read_bytes()
    assert kernels.uncompressed_initrd(packed, cache) == copy  # cached
    assert kernels.uncompressed_initrd(plain, cache) == plain  # nothing to do
    (tmp_path / "bad.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    with pytest.raises(B2CError):
        kernels.uncompressed_initrd(tmp_path / "bad.zst", cache)
    with pytest.raises(ConfigError, match="not a file"):
        kernels.uncompressed_initrd(tmp_path / "missing", cache)


def test_modules_dir_archives_are_cached_by_content(
    tmp_path: Path,
    synthetic: Synthetic,  # noqa: F811 - the fixture of test_kmod
) -> None:
    tree = tmp_path / "lib/modules" / synthetic.root.name
    shutil.copytree(synthetic.root, tree)
    cache = tmp_path / "cache"
    first = kernels.modules_initrd(tree, Arch.amd64, cache)
    assert kernels.modules_release(first) == tree.name
    assert kernels.modules_initrd(tree, Arch.amd64, cache) == first
    some = next(p for p in sorted(tree.rglob("*.ko*")))
    some.write_bytes(some.read_bytes() + b"\0")
    assert kernels.modules_initrd(tree, Arch.amd64, cache) != first
    with pytest.raises(ConfigError, match="is for kernel"):
        kernels.modules_initrd(tree, Arch.amd64, cache, release="9.9.9")


# --- the init's side -------------------------------------------------------------------------


def test_the_init_passes_argument_files_byte_for_byte(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("podman", PODMAN)
    argv = ["--pull=never", "oci:/etc/b2c/job/image/1/layout", "sh", "-c", *AWKWARD[:-1], "x\n\n"]
    base = "etc/b2c/job/container/1"
    for i, arg in enumerate(argv):
        sh.write(f"{base}/{i}", arg)
    sh.write(f"{base}/title", "the test\n")
    sh.write("etc/b2c/job/cmdline", f"b2c.container=--b2c-argv-dir=/{base}\n")
    result = sh.run(
        "b2c_job_parse || exit 99\n"
        "B2C_PIPELINE_STATUS=0 B2C_PIPELINE_SHUTDOWN_MODE=default\n"
        "b2c_run_pipeline\n"
    )
    assert result.status == 0, result.err
    (create,) = [c for c in result.called("podman") if c[0] in ("run", "create")]
    # The stub log is read as latin-1: compare bytes, not text.
    assert create[-len(argv) :] == [arg.encode().decode("latin-1") for arg in argv]
    assert "Run container 1: the test" in result.out


def test_the_jobs_options_come_after_the_kernel_command_line(tmp_path: Path) -> None:
    """What run's warning about a flag and --append setting one option says."""
    sh = Shell(tmp_path)
    sh.write("line", "b2c.poweroff_delay=5")
    sh.write("etc/b2c/job/cmdline", "b2c.poweroff_delay=9\n")
    result = sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline || exit 98\n'
        'b2c_job_parse || exit 99\necho "delay=$B2C_POWEROFF_DELAY"'
    )
    assert result.lines[-1] == "delay=9", result.err


def test_the_init_mounts_shares_with_9p(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write("etc/b2c/job/share/1/tag", "b2c_share1")
    sh.write("etc/b2c/job/share/1/path", "/home/dev/linux tree")
    result = sh.run("b2c_job_mount_shares || exit 7")
    assert result.status == 0, result.err
    (mount,) = result.called("mount")
    assert mount[:2] == ["-t", "9p"] and mount[-2] == "b2c_share1"
    assert mount[-1] == f"{tmp_path}/root/home/dev/linux tree"


def test_a_share_that_cannot_be_mounted_names_the_kernel_options(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("mount", "return 32")
    sh.write("etc/b2c/job/share/1/tag", "b2c_share1")
    sh.write("etc/b2c/job/share/1/path", "/src")
    result = sh.run("b2c_job_mount_shares || exit 7")
    assert result.status == 7
    assert "CONFIG_9P_FS" in result.out


def test_an_oci_archive_reaches_the_guest_as_a_layout(tmp_path: Path, layout: Path) -> None:
    import tarfile

    archive = tmp_path / "img.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout, arcname=".")
    delivery = jobs.deliver(jobs.ImageRef.parse(f"oci-archive:{archive}:latest"), 2, tmp_path)
    assert delivery.guest_ref == "oci:/etc/b2c/job/image/2/layout:latest"
    assert "layout/index.json" in {rel for rel, _ in delivery.files}
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escaped")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ConfigError, match="cannot unpack"):
        jobs.deliver(jobs.ImageRef.parse(f"oci-archive:{evil}"), 3, tmp_path / "w")
    assert not (tmp_path / "escaped").exists()


def _image_manifest(layout: Path) -> Any:
    """The JSON of the one image manifest of an OCI layout."""
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    algorithm, encoded = entry["digest"].split(":")
    return json.loads((layout / "blobs" / algorithm / encoded).read_text())


def _gzip_source(tmp_path: Path) -> tuple[bytes, Path, list[str]]:
    """A busybox layer, the layout in ``tmp_path``/src holding it gzip-compressed, and the
    names of that layout's blobs (to check that delivering it writes nothing there)."""
    require_tool("skopeo")
    layer_tar = busybox_layer(Path(require_tool("busybox")).resolve())
    source = make_layout(tmp_path / "src", layer_tar, cmd=["/bin/sh"])
    return layer_tar, source, sorted(p.name for p in (source / "blobs/sha256").iterdir())


def test_gzip_layers_reach_the_guest_recompressed_as_zstd(tmp_path: Path) -> None:
    layer_tar, source, before = _gzip_source(tmp_path)
    assert jobs.gzip_layers(source) == 1
    delivery = jobs.deliver(jobs.ImageRef.parse(f"oci:{source}:latest"), 1, tmp_path / "w")
    assert delivery.guest_ref == "oci:/etc/b2c/job/image/1/layout:latest"
    delivered = tmp_path / "w/image-1-zstd"
    assert {p for _, p in delivery.files} <= set(delivered.rglob("*"))
    assert jobs.gzip_layers(delivered) == 0
    manifest = _image_manifest(delivered)
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    blob = (delivered / "blobs" / layer["digest"].replace(":", "/")).read_bytes()
    # The same files, so the same diff ID in the config: only the compression changed.
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read() == layer_tar
    config = manifest["config"]["digest"].replace(":", "/")
    diff_ids = json.loads((delivered / "blobs" / config).read_text())["rootfs"]["diff_ids"]
    assert diff_ids == [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]
    # The user's layout is read, never written.
    assert sorted(p.name for p in (source / "blobs/sha256").iterdir()) == before


def test_an_image_without_gzip_layers_is_delivered_as_it_is(tmp_path: Path) -> None:
    require_tool("skopeo")
    busybox = Path(require_tool("busybox")).resolve()
    gzip_layout = make_layout(tmp_path / "gz", busybox_layer(busybox), cmd=["/bin/sh"])
    zstd_layout = jobs.zstd_layout(gzip_layout, "latest", tmp_path / "zstd")
    assert zstd_layout == tmp_path / "zstd"
    delivery = jobs.deliver(jobs.ImageRef.parse(f"oci:{zstd_layout}"), 2, tmp_path / "w")
    assert dict(delivery.files)["layout/index.json"] == tmp_path / "w/image-2-index.json"
    assert {p for r, p in delivery.files if r != "layout/index.json"} <= set(zstd_layout.rglob("*"))
    assert not (tmp_path / "w/image-2-zstd").exists()


def test_without_skopeo_gzip_layers_are_delivered_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    busybox = Path(require_tool("busybox")).resolve()
    layout = make_layout(tmp_path / "gz", busybox_layer(busybox), cmd=["/bin/sh"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with caplog.at_level(logging.INFO, logger="b2c"):
        delivery = jobs.deliver(jobs.ImageRef.parse(f"oci:{layout}"), 3, tmp_path / "w")
    assert {p for r, p in delivery.files if r != "layout/index.json"} <= set(layout.rglob("*"))
    assert jobs.gzip_layers(layout) == 1
    (note,) = [r.getMessage() for r in caplog.records if "gzip layer" in r.getMessage()]
    assert "skopeo is not installed" in note and "apt-get install skopeo" in note


def test_an_image_without_a_reference_is_delivered_under_a_name(tmp_path: Path) -> None:
    # Unnamed in podman's storage, a cache disk's clean-up (podman image prune) removed it,
    # and every boot unpacked its layers again.
    busybox = Path(require_tool("busybox")).resolve()
    layout = make_layout(tmp_path / "src", busybox_layer(busybox), cmd=["/bin/sh"])
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    before = (layout / "index.json").read_bytes()
    delivery = jobs.deliver(jobs.ImageRef.parse(f"oci:{layout}"), 4, tmp_path / "w")
    name = "localhost/b2c-run/image-4:latest"
    assert delivery.guest_ref == f"oci:/etc/b2c/job/image/4/layout:{name}"
    index = json.loads(dict(delivery.files)["layout/index.json"].read_text())
    (named,) = index["manifests"]
    assert named["annotations"][jobs.REF_NAME] == name
    # The manifest it names is delivered (recompressed as zstd when skopeo is there).
    blob = "layout/blobs/" + named["digest"].replace(":", "/")
    assert blob in dict(delivery.files)
    assert named["mediaType"] == entry["mediaType"]
    # The user's layout is read, never written.
    assert (layout / "index.json").read_bytes() == before


def test_an_index_with_several_manifests_is_delivered_as_it_is(tmp_path: Path) -> None:
    busybox = Path(require_tool("busybox")).resolve()
    layout = make_layout(tmp_path / "src", busybox_layer(busybox), cmd=["/bin/sh"])
    document = json.loads((layout / "index.json").read_text())
    document["manifests"] *= 2
    (layout / "index.json").write_text(json.dumps(document))
    assert jobs.named_index(layout / "index.json", "x:1", tmp_path / "out.json") is None
    assert not (tmp_path / "out.json").exists()
    (layout / "index.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not an OCI index"):
        jobs.named_index(layout / "index.json", "x:1", tmp_path / "out.json")


def test_an_image_skopeo_cannot_read_is_refused_before_booting(tmp_path: Path) -> None:
    require_tool("skopeo")
    busybox = Path(require_tool("busybox")).resolve()
    layout = make_layout(tmp_path / "gz", busybox_layer(busybox), cmd=["/bin/sh"])
    with pytest.raises(ConfigError) as info:
        jobs.deliver(jobs.ImageRef.parse(f"oci:{layout}:nope"), 1, tmp_path / "w")
    assert f"--image oci:{layout}:nope" in info.value.message
    assert "nope" in info.value.message.split("skopeo cannot read it")[1]
    assert info.value.hint and "skopeo inspect" in info.value.hint
    assert not (tmp_path / "w/image-1-zstd").exists()


def test_gzip_layers_are_counted_through_nested_indexes(tmp_path: Path) -> None:
    """An image index (a multi-arch image) inside index.json: its manifests' layers count,
    a manifest listed twice counts once, and a missing blob counts for nothing."""
    blobs = tmp_path / "blobs/sha256"
    blobs.mkdir(parents=True)

    def blob(document: dict[str, object]) -> str:
        data = json.dumps(document).encode()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    gz = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    amd64 = blob({"layers": [{"mediaType": gz}, {"mediaType": gz + "x"}]})
    arm64 = blob({"layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}]})
    index = blob({"manifests": [{"digest": amd64}, {"digest": arm64}, {"digest": amd64}]})
    missing = "sha256:" + "0" * 64
    (tmp_path / "index.json").write_text(
        json.dumps({"manifests": [{"digest": index}, {"digest": missing}, {"digest": "../x"}]})
    )
    assert jobs.gzip_layers(tmp_path) == 2


@pytest.mark.parametrize(
    ("append", "network"),
    [
        ("", False),
        ("quiet b2c.hostname=dut", False),
        ("ip", False),  # no value: the kernel's own flag, nothing for /init to do
        ('b2c.run="docker://x"', True),  # an alias
        ('"b2c.ntp_peer=auto"', True),  # quoted whole, as the kernel allows
        ("ip=dhcp", True),
        # Values that turn an option off ask for no network, as the run flags' do.
        ("b2c.ntp_peer=none", False),
        ("ip=off", False),
    ],
)
def test_append_parameters_that_need_the_network_keep_it(
    tmp_path: Path, layout: Path, append: str, network: bool
) -> None:
    (tmp_path / "i").write_bytes(b"070701")
    request = launch.RunRequest(
        kernel=tmp_path / "k", initrds=(tmp_path / "i",), images=(f"oci:{layout}",), append=append
    )
    plan = launch.prepare(request, tmp_path)
    assert plan.job is not None
    assert ("b2c.network=none" not in plan.job.cmdline) is network


@pytest.mark.parametrize(("machine", "insmods"), [("microvm", True), ("q35", False), (None, False)])
def test_microvm_boots_load_the_virtio_mmio_transport(
    tmp_path: Path, machine: str | None, insmods: bool
) -> None:
    """virtio_mmio ships as a demand module that nothing asks for: run's job names it, on
    microvm only, so q35 boots load nothing more."""
    (tmp_path / "i").write_bytes(b"070701")
    request = launch.RunRequest(kernel=tmp_path / "k", initrds=(tmp_path / "i",), machine=machine)
    plan = launch.prepare(request, tmp_path)
    cmdline = plan.job.cmdline if plan.job is not None else []
    assert ("b2c.insmods=virtio_mmio" in cmdline) is insmods
    assert options.lint_cmdline(" ".join(cmdline)) == []


def test_a_machine_the_architecture_lacks_is_refused_before_anything_else(tmp_path: Path) -> None:
    request = launch.RunRequest(kernel=tmp_path / "k", arch=Arch.riscv64, machine="microvm")
    with pytest.raises(ConfigError, match="x86 guests only"):
        launch.prepare(request, tmp_path)


def test_run_config_carries_the_machine(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"kernel")
    request = launch.RunRequest(kernel=tmp_path / "k", machine="microvm")
    plan = launch.Plan(tmp_path / "k", (), None, (), ())
    assert launch.run_config(request, plan, None).qemu_machine.microvm
    assert not launch.run_config(launch.RunRequest(), plan, None).qemu_machine.microvm


# --- the modules a boot of run can load ------------------------------------------------------


def test_boot_needs_follow_the_boots_devices_and_options(tmp_path: Path) -> None:
    base = launch.RunRequest(kernel=tmp_path / "k", b2c={"b2c.container": ["docker://x/y"]})
    assert launch.boot_needs(base, network=True) == kmod.BootNeeds(
        network=True, demand=frozenset({"overlay"})
    )
    full = replace(
        base,
        disks=(Disk(tmp_path / "disk.img"),),
        shares=(f"{tmp_path}:/work",),
        machine="microvm",
    )
    assert launch.boot_needs(full, network=False) == kmod.BootNeeds(
        network=False,
        devices=frozenset({"virtio_blk"}),
        demand=frozenset(
            {"overlay", "ext4", "crc32c_generic", "9p", "9pnet_virtio", "virtio_mmio"}
        ),
    )
    # What run cannot foresee: the whole archive.
    for unforeseen in (
        replace(base, append="b2c.insmods=e1000e"),
        replace(base, append="b2c.modules=e1000e"),
        replace(base, append="b2c.filesystem=data,type=xfs,src=/dev/vdb"),
        replace(base, b2c={**base.b2c, "b2c.device_drivers": "nvme"}),
        replace(base, qemu_args=("-device", "e1000,netdev=n0")),
    ):
        assert launch.boot_needs(unforeseen, network=True) is None, unforeseen


def _release_with_modules(folder: Path, synthetic: Synthetic) -> Path:  # noqa: F811 - a name
    """A release folder: a kernel, an image, and the synthetic tree's modules archive with
    top_d loaded with the network and solo on demand."""
    release = synthetic.root.name
    folder.mkdir()
    (folder / f"linux-{release}.linux_amd64").write_bytes(_bzimage(release))
    (folder / "initramfs.linux_amd64.cpio").write_bytes(b"")
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    manifest = Rootfs()
    when = {"top_d": kmod.LoadWhen.network, "solo": kmod.LoadWhen.demand}
    kmod.add_modules(manifest, tree, ["top_d", "solo"], required=(), when=when)
    archive = folder / f"modules-{release}.linux_amd64.cpio"
    with archive.open("wb") as out:
        write_cpio(manifest, out, source_date_epoch=0)
    return archive


def test_run_boots_the_modules_it_can_load(
    tmp_path: Path,
    synthetic: Synthetic,  # noqa: F811 - the fixture of test_kmod
) -> None:
    archive = _release_with_modules(tmp_path / "releases", synthetic)
    cache = tmp_path / "cache"
    request = launch.RunRequest(
        releases=tmp_path / "releases", cache_dir=cache, b2c={"b2c.container": ["docker://x/y"]}
    )
    plan = launch.prepare(request, tmp_path)
    trimmed = plan.initrds[-1]
    assert trimmed.parent == cache / "initrd" and trimmed.name.startswith("modules-")
    names = {kmod.name_of(e.name) for e in read_cpio(trimmed.read_bytes()) if ".ko" in e.name}
    assert names == {"core_a", "lib_b", "mid_c", "lib_e", "top_d"}  # no solo: nothing asks
    assert launch.prepare(request, tmp_path).initrds[-1] == trimmed  # cached
    # A dry run cuts nothing, and says what the boot would keep.
    dry = launch.prepare(request, tmp_path, uncompressed=False)
    assert dry.initrds[-1] == archive
    assert dry.modules == kmod.BootNeeds(network=True, demand=frozenset({"overlay"}))
    assert launch.describe(dry)[0] == (
        f"# {archive}: only the modules this boot can load go to the guest: its network "
        "driver, overlay, with their dependencies and the archive's boot modules"
    )
    # Told to load a module by name, the boot gets the whole archive.
    told = replace(request, append="b2c.insmods=solo")
    assert launch.prepare(told, tmp_path).initrds[-1] == archive
    # Nor does run cut an archive that --initrd names.
    named = replace(request, initrds=(tmp_path / "releases/initramfs.linux_amd64.cpio", archive))
    assert launch.prepare(named, tmp_path).initrds[-1] == archive


# --- local images delivered uncompressed ------------------------------------------------------


def test_layers_reach_the_guest_uncompressed_within_the_limit(tmp_path: Path) -> None:
    layer_tar, source, before = _gzip_source(tmp_path)
    ref = jobs.ImageRef.parse(f"oci:{source}:latest")
    delivery = jobs.deliver(ref, 1, tmp_path / "w", plain_limit=len(layer_tar))
    delivered = tmp_path / "w/image-1-plain"
    assert {p for _, p in delivery.files} <= set(delivered.rglob("*"))
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["image-1-plain"]
    manifest = _image_manifest(delivered)
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    # The layer's digest is now its diff ID: the config, and so the image's id, are the same.
    assert (delivered / "blobs" / layer["digest"].replace(":", "/")).read_bytes() == layer_tar
    config = manifest["config"]["digest"].replace(":", "/")
    diff_ids = json.loads((delivered / "blobs" / config).read_text())["rootfs"]["diff_ids"]
    assert diff_ids == [layer["digest"]]
    assert sorted(p.name for p in (source / "blobs/sha256").iterdir()) == before
    # One byte more than the limit allows: zstd, as before.
    jobs.deliver(ref, 2, tmp_path / "w", plain_limit=len(layer_tar) - 1)
    assert not (tmp_path / "w/image-2-plain").exists()
    assert _image_manifest(tmp_path / "w/image-2-zstd")["layers"][0]["mediaType"].endswith("zstd")


def test_an_image_index_is_not_delivered_uncompressed(tmp_path: Path) -> None:
    """Copied on its own, an index would keep only the host's platform: it goes whole, as
    zstd (skopeo copy --all)."""
    require_tool("skopeo")
    busybox = Path(require_tool("busybox")).resolve()
    layout = make_layout(tmp_path / "src", busybox_layer(busybox), cmd=["/bin/sh"])
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    nested = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": entry["mediaType"],
                    "digest": entry["digest"],
                    "size": entry["size"],
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    digest = hashlib.sha256(nested).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(nested)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": f"sha256:{digest}",
                "size": len(nested),
                "annotations": {jobs.REF_NAME: "multi"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    assert jobs.plain_layout(layout, "multi", tmp_path / "plain", 1 << 30) is None
    assert not (tmp_path / "plain").exists()
    jobs.deliver(jobs.ImageRef.parse(f"oci:{layout}:multi"), 1, tmp_path / "w", plain_limit=1 << 30)
    assert (tmp_path / "w/image-1-zstd/index.json").is_file()


def test_run_delivers_uncompressed_what_still_fits_in_the_guests_ram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mib = 2**20
    assert launch.plain_limit("2G") == (2048 - 512 - 128) * mib // 3
    assert launch.plain_limit("1G") == 128 * mib
    assert launch.plain_limit("512") == 0  # QEMU's default unit: MiB
    for memory in ("1G", "2G", "8G"):
        limit = launch.plain_limit(memory)
        blob = tmp_path / f"blob-{memory}"
        with blob.open("wb") as out:  # sparse: only its size counts
            out.truncate(limit)
        job = jobs.Job(images=[jobs.Delivery("oci:/x", (("layout/blob", blob),))])
        monkeypatch.setattr(jobs, "layers_size", lambda _files, size=limit: size)
        jobs.check_memory(memory, 100 * mib, job, cache_disk=False)  # fits: no ConfigError
