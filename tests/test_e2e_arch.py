"""Every foreign architecture we boot-test: its release boots under its qemu-system-* (TCG)
and runs a container of that architecture from the local registry to its exit status.

The container's busybox comes from Debian's busybox-static package for the architecture,
fetched and verified with the project's own archive client, and is pushed with skopeo to
the session's registry on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from b2c_builder.build.cpio import read_initrd
from b2c_builder.build.debian import deb, download, index, sources
from b2c_builder.build.rootfs import Kind, Origin
from b2c_builder.config import DEFAULT_KEYRING, DEFAULT_SUITE, Arch
from tests.conftest import (
    RELEASE_ARGS,
    ROOT,
    Release,
    build_release,
    require_tool,
    shared_cache,
)
from tests.oci import busybox_layer, make_layout
from tests.registry import Registry

pytestmark = [pytest.mark.network]

# The architectures whose Debian kernel boots under QEMU's TCG in a few minutes (amd64 is
# tests/test_e2e.py's): every one of config.ARCHES.
BOOT_TESTED = [arch for arch in Arch if arch is not Arch.amd64]
# Seconds from QEMU's start; measured to the container's status: 10-40 s under TCG.
BOOT_TIMEOUT = 600
# A board of each architecture whose device tree Debian's kernel package ships.
A_BOARD = {
    Arch.arm64: "broadcom/bcm2711-rpi-4-b.dtb",  # Raspberry Pi 4
    Arch.riscv64: "sifive/hifive-unmatched-a00.dtb",
}


@pytest.fixture(scope="module", params=BOOT_TESTED, ids=str)
def arch(request: pytest.FixtureRequest) -> Arch:
    return Arch(request.param)


@pytest.fixture(scope="module")
def arch_release(arch: Arch, tmp_path_factory: pytest.TempPathFactory) -> Release:
    return build_release(
        tmp_path_factory.mktemp(str(arch)), shared_cache(), *RELEASE_ARGS, arch=str(arch)
    )


def debian_busybox(arch: Arch, dest: Path) -> Path:
    """Debian's static busybox for ``arch``, written to ``dest``."""
    session = download.make_session()
    archive = index.open_archive(
        session,
        sources.default_mirror(),
        DEFAULT_SUITE,
        arch,
        keyring=DEFAULT_KEYRING,
        cache_dir=shared_cache(),
    )
    package = archive["busybox-static"]
    path = download.fetch(
        session, archive.url_for(package), package.sha256, package.size, shared_cache()
    )
    staging = deb.new_staging(arch)
    deb.extract_into(staging, path, Origin(package.name, package.version))
    dest.write_bytes(staging.read("usr/bin/busybox"))
    return dest


@pytest.fixture(scope="module")
def arch_image(arch: Arch, registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox image of ``arch`` in the registry; its reference as the guest sees it."""
    work = tmp_path_factory.mktemp(f"{arch}-oci")
    busybox = debian_busybox(arch, work / "busybox")
    # The OCI platform's architecture is GOARCH's name for it (podman picks by it).
    layout = make_layout(
        work / "layout", busybox_layer(busybox), cmd=["/bin/sh"], arch=arch.facts.goarch
    )
    registry.push(layout, f"b2c-test-{arch}")
    return f"docker://{registry.guest_host}/b2c-test-{arch}:latest"


@pytest.mark.qemu
def test_container_status_is_the_run_exit_code(
    arch: Arch, arch_release: Release, arch_image: str
) -> None:
    require_tool(arch.facts.qemu_binary)
    marker = f"B2C-{str(arch).upper()}"
    append = (
        f'b2c.container="--tls-verify=false {arch_image} '
        f"sh -c 'echo {marker}-$((6*7)) $(uname -m); exit 3'\""
    )
    proc = subprocess.run(
        [
            sys.executable, "-m", "b2c_builder", "run",
            "--arch", str(arch),
            "--accel", "tcg",
            "--kernel", str(arch_release.kernel),
            "--initrd", str(arch_release.image),
            "--initrd", str(arch_release.modules),
            "--timeout", str(BOOT_TIMEOUT),
            "--append", append,
        ],
        capture_output=True, text=True, timeout=BOOT_TIMEOUT + 100, cwd=ROOT,
    )  # fmt: skip
    console = (proc.stdout + proc.stderr).replace("\r", "")
    # uname -m in the container is the guest kernel's machine: the container really ran there.
    assert f"\n{marker}-42 {arch.facts.uname_machine}" in console, console[-4000:]
    assert "Execution is over, pipeline status: 3" in console, console[-4000:]
    assert proc.returncode == 3, console[-4000:]


def test_image_is_for_the_arch(arch: Arch, arch_release: Release) -> None:
    manifest = arch_release.manifest.read_text()
    assert f'"/usr/lib/{arch.facts.multiarch}/libc.so.6"' in manifest
    assert f'"/usr{arch.facts.loader}"' in manifest  # lib and lib64 are links into usr/
    assert f'"arch": "{arch}"' in manifest
    assert arch_release.image.stat().st_size < 20 * 2**20


def test_device_trees_are_an_archive_beside_the_kernel(arch: Arch, arch_release: Release) -> None:
    found = sorted(arch_release.output.glob(f"dtbs-*.linux_{arch}.cpio.zst"))
    if arch not in A_BOARD:  # ppc64el's and s390x's kernel packages ship no device tree
        assert found == []
        return
    (dtbs,) = found
    release = dtbs.name.removeprefix("dtbs-").removesuffix(f".linux_{arch}.cpio.zst")
    assert arch_release.kernel.name == f"linux-{release}.linux_{arch}"
    entries = read_initrd(dtbs.read_bytes())
    files = {e.name: e.data for e in entries if e.kind is Kind.FILE}
    folder = f"usr/lib/linux-image-{release}/"
    assert all(name.startswith(folder) and name.endswith((".dtb", ".dtbo")) for name in files)
    # Every one is a flattened device tree (magic 0xd00dfeed), the board's among them.
    assert {data[:4] for data in files.values()} == {b"\xd0\x0d\xfe\xed"}
    assert folder + A_BOARD[arch] in files
    assert len({e.mtime for e in entries}) == 1
