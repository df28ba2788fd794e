"""End to end, the kernel developer's loop: `b2c-builder run --image LOCAL --share DIR -- CMD`
boots the release's kernel under QEMU (TCG) with no registry and no network, and exits with
the container's status. Every verdict comes from what the guest wrote into the shared folder
or printed, and from the exit code of `b2c-builder run`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from b2c_builder.boot.kernel import kernel_release
from tests.conftest import ROOT, Release, require_tool
from tests.kernel import DebianKernel
from tests.oci import busybox_layer, make_layout
from tests.test_e2e_faults import first_partition_offset

pytestmark = [pytest.mark.qemu, pytest.mark.network]

BOOT_TIMEOUT = 300
# Every character a kernel command line cannot carry, a newline and non-ASCII text.
AWKWARD = [
    'a "b" c',
    "it's",
    "$HOME ${x} $(id)",
    "a;b|c&d",
    "back\\slash",
    "two\nlines",
    "é ü 漢",
    "",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The same busybox image as an OCI layout, an oci-archive and a docker-archive."""
    skopeo = require_tool("skopeo")
    busybox = Path(require_tool("busybox")).resolve()
    work = tmp_path_factory.mktemp("kdev-images")
    layout = make_layout(work / "layout", busybox_layer(busybox), cmd=["/bin/sh"])
    for dest in (f"oci-archive:{work}/oci.tar:test", f"docker-archive:{work}/docker.tar:b2c/t:1"):
        subprocess.run(
            [skopeo, "copy", "-q", f"oci:{layout}:latest", dest], check=True, timeout=120
        )
    return {
        "oci": f"oci:{layout}",
        "oci-archive": f"oci-archive:{work}/oci.tar",
        "docker-archive": f"docker-archive:{work}/docker.tar",
    }


def run(
    release: Release, *args: str, command: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`b2c-builder run` with the release folder's defaults (kernel, image, modules)."""
    require_tool("qemu-system-x86_64")
    return subprocess.run(
        [
            sys.executable, "-m", "b2c_builder", "run",
            "--releases", str(release.output),
            "--accel", "tcg",
            "--memory", "1G",
            "--timeout", str(BOOT_TIMEOUT),
            *args,
            *(("--", *command) if command else ()),
        ],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=BOOT_TIMEOUT + 120,
        cwd=ROOT,
    )  # fmt: skip


def logged(proc: subprocess.CompletedProcess[str], message: str) -> list[str]:
    """The init's stamped log lines starting with ``message``."""
    found = []
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r"\[\d+\.\d+\]: (.*)", line.strip())
        if m and m[1].startswith(message):
            found.append(m[1])
    return found


def test_exact_arguments_shared_folder_and_working_directory(
    release: Release, images: dict[str, str], tmp_path: Path
) -> None:
    share = tmp_path / "src tree"
    share.mkdir()
    script = 'for a in "$@"; do printf "%s\\0" "$a"; done > args; pwd > cwd; exit 6'
    proc = run(
        release,
        "--image", images["oci"],
        "--share", str(share),
        command=("sh", "-c", script, "sh", *AWKWARD),
    )  # fmt: skip
    assert proc.returncode == 6, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert (share / "args").read_bytes() == b"".join(a.encode() + b"\0" for a in AWKWARD)
    assert (share / "cwd").read_text() == f"{share}\n"
    # Files the container wrote belong to the user who ran b2c-builder.
    assert (share / "args").stat().st_uid == os.getuid()
    (share / "args").unlink()
    # Nothing needed the network: no DHCP wait.
    assert logged(proc, "No network (b2c.network=none)"), proc.stdout[-3000:]
    assert not logged(proc, "Got an address by DHCP")


@pytest.mark.parametrize(
    ("kind", "code"), [("oci-archive", 0), ("docker-archive", 1), ("oci-archive", 125)]
)
def test_archives_and_exit_codes(
    release: Release, images: dict[str, str], kind: str, code: int
) -> None:
    proc = run(
        release, "--image", images[kind], command=("sh", "-c", f"echo from-{kind}; exit {code}")
    )
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"from-{kind}" in proc.stdout.splitlines()
    assert logged(proc, f"The container 1 exited with status {code}")


def test_a_local_image_stays_on_the_cache_disk_from_boot_to_boot(
    release: Release, images: dict[str, str], tmp_path: Path
) -> None:
    """An image given without a reference is named in the job (job.deliver), so the clean-up
    of a cache (podman image prune) keeps it and the next boot unpacks no layer."""
    disk = tmp_path / "cache.img"
    with disk.open("wb") as f:
        f.truncate(1 << 30)

    def cached(path: str) -> str:
        """The file ``path`` of the cache filesystem on ``disk`` (debugfs's stdout)."""
        image = f"{disk}?offset={first_partition_offset(disk)}"
        command = [require_tool("debugfs"), "-R", f"cat {path}", image]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    layers = []
    for n in (1, 2):
        proc = run(
            release,
            "--disk", str(disk),
            "--cache-device", "auto",
            "--image", images["oci-archive"],
            command=("sh", "-c", f"echo boot-{n}; exit 3"),
        )  # fmt: skip
        assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert f"boot-{n}" in proc.stdout.splitlines()
        stored = json.loads(cached("/containers/storage/overlay-images/images.json"))
        assert [i["names"] for i in stored] == [["localhost/b2c-run/image-1:latest"]], stored
        layers.append(cached("/containers/storage/overlay-layers/layers.json"))
    # The same layer, made by the first boot: the second one unpacked nothing.
    assert layers[0] == layers[1]


def test_modules_dir_boots_a_kernel_with_its_own_modules(
    release: Release, images: dict[str, str], debian_kernel: DebianKernel, tmp_path: Path
) -> None:
    # Debian's modules unpacked to a folder, as `make modules_install` would leave them.
    tree = debian_kernel.modules
    assert kernel_release(release.kernel) == debian_kernel.release == tree.name
    share = tmp_path / "share"
    share.mkdir()
    proc = run(
        release,
        "--kernel", str(release.kernel),
        "--modules-dir", str(tree),
        "--cache-dir", str(tmp_path / "cache"),
        "--image", images["oci-archive"],
        "--share", str(share),
        command=("sh", "-c", "cat /proc/modules > modules"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    loaded = {line.split()[0] for line in (share / "modules").read_text().splitlines()}
    # The share itself needs 9p from the tree; virtio_net and overlay come from it too.
    assert {"9p", "9pnet_virtio", "overlay"} <= loaded, sorted(loaded)
    assert list((tmp_path / "cache/modules").glob("modules-*.cpio")), "the archive is cached"


def test_an_image_from_the_hosts_containers_storage(
    release: Release, images: dict[str, str]
) -> None:
    skopeo = require_tool("skopeo")
    name = "localhost/b2c-kdev-test:latest"
    layout = images["oci"].removeprefix("oci:")
    subprocess.run(
        [skopeo, "copy", "-q", f"oci:{layout}:latest", f"containers-storage:{name}"],
        check=True,
        timeout=120,
    )
    try:
        proc = run(
            release, "--image", f"containers-storage:{name}", command=("echo", "from-storage")
        )
    finally:
        subprocess.run([skopeo, "delete", f"containers-storage:{name}"], timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "from-storage" in proc.stdout.splitlines()


KTAP = """\
KTAP version 1
1..3
    KTAP version 1
    # Subtest: hid
    1..3
    ok 1 hid_probe
    not ok 2 hid_report # broken descriptor
    ok 3 hid_bpf # SKIP no BPF
ok 1 hid
ok 2 evdev
not ok 3 uinput
"""


def test_junit_report_from_ktap(release: Release, images: dict[str, str], tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    xmlschema = pytest.importorskip("xmlschema")
    report = tmp_path / "report.xml"
    proc = run(
        release,
        "--junit", str(report),
        "--image", images["oci-archive"],
        command=("sh", "-c", f"printf '%s' '{KTAP}'; exit 1"),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    xmlschema.XMLSchema(str(ROOT / "tests/data/junit/junit.xsd")).validate(str(report))
    (suite,) = ET.parse(report).getroot().iter("testsuite")
    outcome = {}
    for case in suite.iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        outcome[f"{case.get('classname')}.{case.get('name')}"] = kind
    expected = {
        "container_1.hid.hid_probe": "passed",
        "container_1.hid.hid_report": "failure",
        "container_1.hid.hid_bpf": "skipped",
        "container_1.hid": "passed",
        "container_1.evdev": "passed",
        "container_1.uinput": "failure",
    }
    assert {name: outcome.get(name) for name in expected} == expected, outcome
    # The container itself is a testcase too, failed with its status.
    assert list(outcome.values()).count("failure") == 3, outcome
    assert "KTAP version 1" in (suite.findtext("system-out") or "")


def test_microvm_boots_with_virtio_mmio_nic_disk_and_share(
    release: Release, images: dict[str, str], tmp_path: Path
) -> None:
    """`--machine microvm`: no PCI bus, so every device is a virtio-mmio one, found through
    ACPI once the job's b2c.insmods loads virtio_mmio. The NIC gets an address by DHCP
    (the network is asked for), the disk is the guest's vda and the share its working
    directory; the container's status is run's."""
    share = tmp_path / "share"
    share.mkdir()
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * (3 << 20))
    script = "ls /sys/bus/virtio/drivers > drivers; cat /sys/block/vda/size > vda; exit 7"
    proc = run(
        release,
        "--machine", "microvm",
        "--image", images["oci-archive"],
        "--share", str(share),
        "--disk", str(disk),
        "--append", "b2c.network=auto",
        command=("sh", "-c", script),
    )  # fmt: skip
    assert proc.returncode == 7, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " -M microvm," in proc.stderr  # run logs the QEMU command
    assert (share / "vda").read_text() == f"{(3 << 20) // 512}\n"
    drivers = set((share / "drivers").read_text().split())
    assert {"virtio_net", "virtio_blk", "9pnet_virtio"} <= drivers, drivers
    assert logged(proc, "Got an address by DHCP"), proc.stdout[-3000:]
    assert logged(proc, "Loaded the kernel module virtio_mmio"), proc.stdout[-3000:]


def test_microvm_boots_while_the_host_is_busy(release: Release, images: dict[str, str]) -> None:
    """microvm has no HPET and no ACPI PM timer: with the host's CPUs busy, the kernel's PIT
    calibration of the TSC fails and, with no other reference, it hung before /init (every
    boot under three busy loops on a 2-core host). run hands it the host's TSC frequency
    (tsc_early_khz=), so the boot goes on and the container's status comes back."""
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(max(3, (os.cpu_count() or 1) + 1))
    ]
    try:
        proc = run(
            release,
            "--machine", "microvm",
            "--image", images["oci-archive"],
            command=("sh", "-c", "exit 5"),
        )  # fmt: skip
    finally:
        for loop in busy:
            loop.kill()
            loop.wait()
    assert proc.returncode == 5, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r" -append '[^']*\btsc_early_khz=[1-9]\d*\b", proc.stderr), proc.stderr
    assert "could not calculate TSC khz" not in proc.stdout
