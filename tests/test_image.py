"""Image selection: busybox applet table, symlink-preserving copies, the crun wrapper."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from b2c_builder.build import image
from b2c_builder.build.debian import deb
from b2c_builder.build.rootfs import Kind, Origin, Rootfs
from b2c_builder.config import Arch
from b2c_builder.errors import RootfsError
from b2c_builder.resources import data_path
from tests.conftest import require_tool


def host_busybox() -> Path:
    """The host's static busybox (busybox-static, installed by make deps-test)."""
    return Path(require_tool("busybox")).resolve()


def test_applet_table_matches_busybox_list() -> None:
    busybox = host_busybox()
    listed = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert image.busybox_applets(busybox.read_bytes()) == sorted(listed)


def test_applet_table_missing_is_an_error() -> None:
    with pytest.raises(RootfsError, match="applet table"):
        image.busybox_applets(b"\x7fELF not busybox")


def _staging() -> Rootfs:
    staging = deb.new_staging(Arch.amd64)
    origin = Origin("libfoo1", "1.0-1")
    staging.add_file(
        "usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3", b"\x7fELFfoo", 0o644, origin=origin
    )
    staging.add_symlink("usr/lib/x86_64-linux-gnu/libfoo.so.1", "libfoo.so.1.2.3", origin=origin)
    staging.add_symlink(
        "usr/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld.so", origin=origin
    )
    staging.add_file("usr/lib/x86_64-linux-gnu/ld.so", b"\x7fELFld", 0o755, origin=origin)
    return staging


def test_copy_from_reproduces_symlinks_on_the_way() -> None:
    staging = _staging()
    img = image.new_image(Arch.amd64)
    got = image.copy_from(staging, img, "/lib64/ld-linux-x86-64.so.2")
    assert got == "usr/lib/x86_64-linux-gnu/ld.so"
    assert img["usr/lib64/ld-linux-x86-64.so.2"].target == "/lib/x86_64-linux-gnu/ld.so"
    assert img.resolve("lib64/ld-linux-x86-64.so.2") == "usr/lib/x86_64-linux-gnu/ld.so"
    assert img["usr/lib/x86_64-linux-gnu/ld.so"].origin == Origin("libfoo1", "1.0-1")

    image.copy_from(staging, img, "usr/lib/x86_64-linux-gnu/libfoo.so.1")
    assert img["usr/lib/x86_64-linux-gnu/libfoo.so.1"].kind is Kind.SYMLINK
    assert img.read("usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3") == b"\x7fELFfoo"


def test_copy_from_missing_path() -> None:
    with pytest.raises(RootfsError, match="not in the extracted packages"):
        image.copy_from(_staging(), image.new_image(Arch.amd64), "usr/bin/nothing")


def test_new_image_has_console_and_skeleton() -> None:
    img = image.new_image(Arch.amd64)
    console = img["dev/console"]
    assert (console.kind, console.rdev) == (Kind.CHAR, (5, 1))
    assert img["var/tmp"].mode == 0o1777
    assert img.resolve("bin") == "usr/bin"


def dangling_symlinks(manifest: Rootfs) -> list[str]:
    """'path -> target' of every symlink in ``manifest`` that leads nowhere (a link into
    /proc leads where the kernel's proc filesystem is mounted: etc/mtab)."""
    return [
        f"{entry.path} -> {entry.target}"
        for entry in manifest
        if entry.kind is Kind.SYMLINK
        and not entry.target.startswith("/proc/")
        and manifest.resolve(entry.path) is None
    ]


@pytest.mark.parametrize("arch", list(Arch))
def test_usrmerge_links_lead_somewhere(arch: Arch) -> None:
    """The image gets the staging tree's usr-merge links, and the loader: none dangles (the
    image used to get lib64 -> usr/lib64 on arm64 too, where nothing is in usr/lib64)."""
    staging = deb.new_staging(arch)
    loader = staging.resolve(arch.facts.loader, strict=False)
    assert loader is not None
    staging.add_file(loader, b"\x7fELF loader", 0o755, origin=Origin("libc6", "2.41-1"))
    img = image.new_image(arch)
    image.copy_from(staging, img, arch.facts.loader)
    links = sorted(e.path for e in img if e.kind is Kind.SYMLINK)
    assert links == sorted([*arch.facts.usrmerge, "etc/mtab"])
    assert [e.path for e in staging if e.kind is Kind.SYMLINK] == sorted(arch.facts.usrmerge)
    assert dangling_symlinks(img) == []
    assert img.resolve(arch.facts.loader) == loader


def test_busybox_links_never_shadow_real_programs() -> None:
    img = image.new_image(Arch.amd64)
    img.add_file("usr/bin/busybox", host_busybox().read_bytes(), 0o755)
    img.add_file("usr/bin/mount", b"real mount", 0o755)
    applets = image.add_busybox_links(img)
    assert "sh" in applets and "mount" in applets
    assert img["usr/bin/sh"].target == "/usr/bin/busybox"
    assert img["usr/bin/mount"].kind is Kind.FILE
    assert img["usr/sbin/rmmod"].target == "/usr/bin/busybox"
    # Not at the kernel's default CONFIG_MODPROBE_PATH: /init sets /proc/sys/kernel/modprobe.
    assert img["usr/bin/modprobe"].target == "/usr/bin/busybox"
    assert img.get("usr/sbin/modprobe") is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--root", "/run/crun", "create", "--bundle", "/b", "id"],
            ["--root", "/run/crun", "create", "--no-pivot", "--bundle", "/b", "id"],
        ),
        (["run", "x"], ["run", "--no-pivot", "x"]),
        (["--log", "/l", "start", "id"], ["--log", "/l", "start", "id"]),
        (["create", "run", "a b"], ["create", "--no-pivot", "run", "a b"]),
        (["delete", "--force", "id"], ["delete", "--force", "id"]),
    ],
)
def test_crun_wrapper_inserts_no_pivot(
    tmp_path: Path, argv: list[str], expected: list[str]
) -> None:
    busybox = host_busybox()
    fake = tmp_path / "crun"
    fake.write_text('#!/bin/sh\nfor a; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    out = subprocess.run(
        [str(busybox), "sh", str(data_path("init/crun-no-pivot")), *argv],
        env={"B2C_CRUN": str(fake), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == expected


EXIT_COMMAND = [
    "--exit-command",
    "/usr/bin/podman",
    "--exit-command-arg",
    "--root",
    "--exit-command-arg",
    "/var/lib/containers/storage",
    "--exit-command-arg",
    "container",
    "--exit-command-arg",
    "cleanup",
]


@pytest.mark.parametrize(
    ("drop", "argv", "expected"),
    [
        # podman's own order: the exit command between the other options.
        ("1", ["-c", "id", *EXIT_COMMAND, "--exit-dir", "/x"], ["-c", "id", "--exit-dir", "/x"]),
        ("1", ["--exit-command=/p", "--exit-command-arg=a b", "-n", "*"], ["-n", "*"]),
        ("1", ["--version"], ["--version"]),
        # Kept arguments are passed by position, never evaluated, past the ninth too.
        (
            "1",
            [*(str(n) for n in range(1, 10)), *EXIT_COMMAND, "$(touch pwned)", "'", '"', "\\", ""],
            [*(str(n) for n in range(1, 10)), "$(touch pwned)", "'", '"', "\\", ""],
        ),
        ("1", [*EXIT_COMMAND], []),
        # With a cache device (the variable unset or not 1) conmon gets every argument.
        ("", ["-c", "id", *EXIT_COMMAND], ["-c", "id", *EXIT_COMMAND]),
        ("0", ["a  b", "", "*"], ["a  b", "", "*"]),
    ],
)
def test_conmon_wrapper_drops_the_exit_command_on_a_tmpfs_store(
    tmp_path: Path, drop: str, argv: list[str], expected: list[str]
) -> None:
    busybox = host_busybox()
    fake = tmp_path / "conmon"
    fake.write_text('#!/bin/sh\nfor a; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    env = {"B2C_CONMON": str(fake), "PATH": "/usr/bin:/bin"}
    if drop:
        env["B2C_CONMON_NO_EXIT_COMMAND"] = drop
    out = subprocess.run(
        [str(busybox), "sh", str(data_path("init/conmon-no-exit-command")), *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert out.split("\n")[:-1] == expected
    assert not (tmp_path / "pwned").exists()
