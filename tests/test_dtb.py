"""The kernel package's device trees as their own archive: what is selected, and the archive
the build writes beside the kernel (contents, clamped times, byte-for-byte reproducible).

A synthetic extracted kernel package stands for Debian's: no network, no QEMU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from b2c_builder.build import dtb
from b2c_builder.build.cpio import CpioEntry, read_initrd
from b2c_builder.build.debian import deb
from b2c_builder.build.pipeline import KernelParts, build_kernel_parts
from b2c_builder.build.rootfs import Kind, Origin, Rootfs
from b2c_builder.config import Arch, BuildConfig, Compression

RELEASE = "6.99.0-1-test"
ORIGIN = Origin(f"linux-image-{RELEASE}", "6.99.0-1")
FOLDER = f"usr/lib/linux-image-{RELEASE}"
EPOCH = 1_700_000_000
LATER = EPOCH + 86_400  # the package's own file times: after the epoch, so clamped
# A flattened device tree starts with its magic, 0xd00dfeed, big-endian.
FDT = b"\xd0\x0d\xfe\xed"
TREES = {
    f"{FOLDER}/sifive/hifive-unmatched-a00.dtb": FDT + b"unmatched",
    f"{FOLDER}/allwinner/sun20i-d1-nezha.dtb": FDT + b"nezha",
    f"{FOLDER}/renesas/sub/r9a07g043-smarc-pmod.dtbo": FDT + b"overlay",
}


def kernel_staging(arch: Arch, *, with_trees: bool = True) -> Rootfs:
    """An extracted linux-image package: an empty modules tree, the kernel where the
    architecture's package puts it, device trees and things that are not this release's
    device trees."""
    staging = deb.new_staging(arch)
    base = f"usr/lib/modules/{RELEASE}"
    staging.add_file(f"{base}/modules.builtin", b"", origin=ORIGIN, mtime=LATER)
    staging.add_file(f"{base}/modules.order", b"", origin=ORIGIN, mtime=LATER)
    staging.add_file(arch.facts.kernel_image.format(release=RELEASE), b"kernel", origin=ORIGIN)
    if with_trees:
        for path, data in TREES.items():
            staging.add_file(path, data, 0o644, origin=ORIGIN, mtime=LATER)
        staging.add_file(f"{FOLDER}/sifive/README", b"not a device tree", origin=ORIGIN)
        staging.add_symlink(f"{FOLDER}/sifive/alias.dtb", "hifive-unmatched-a00.dtb")
    staging.add_file("usr/lib/linux-image-6.1.0-old/old.dtb", FDT + b"old", origin=ORIGIN)
    staging.add_file(f"boot/config-{RELEASE}", b"CONFIG_OF=y\n", origin=ORIGIN)
    return staging


def files_of(entries: list[CpioEntry]) -> dict[str, bytes]:
    return {e.name: e.data for e in entries if e.kind is Kind.FILE}


def test_device_trees_are_this_release_s_dtb_and_dtbo_files() -> None:
    trees = dtb.device_trees(kernel_staging(Arch.riscv64), RELEASE)
    files = {e.path: e for e in trees if e.kind is Kind.FILE}
    assert {path: e.data for path, e in files.items()} == TREES
    assert {e.origin for e in files.values()} == {ORIGIN}
    assert {e.mode for e in files.values()} == {0o644}
    # Only their folders besides: no README, no symlink, no other release, no kernel.
    others = sorted(e.path for e in trees if e.kind is not Kind.FILE)
    assert all(e.kind is Kind.DIR for e in trees if e.kind is not Kind.FILE)
    folders = ["allwinner", "renesas", "renesas/sub", "sifive"]
    assert others == ["usr", "usr/lib", FOLDER, *(f"{FOLDER}/{f}" for f in folders)]


def test_a_package_without_device_trees_gives_an_empty_selection() -> None:
    assert len(dtb.device_trees(kernel_staging(Arch.amd64, with_trees=False), RELEASE)) == 0


def parts(arch: Arch, tmp: Path, epoch: int = EPOCH, *, with_trees: bool = True) -> KernelParts:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = BuildConfig(
        arch=arch,
        compression=Compression.zstd,
        output=tmp / "out",
        cache_dir=tmp / "cache",
        kernel_package=f"linux-image-{arch}",
        verify_signature=False,
    )
    return build_kernel_parts(kernel_staging(arch, with_trees=with_trees), cfg, epoch, tmp)


@pytest.mark.parametrize("arch", [Arch.arm64, Arch.riscv64])
def test_the_build_writes_the_device_trees_beside_the_kernel(arch: Arch, tmp_path: Path) -> None:
    result = parts(arch, tmp_path)
    assert result.dtbs is not None and result.kernel is not None
    assert result.dtbs.path.name == f"dtbs-{RELEASE}.linux_{arch}.cpio.zst"
    assert result.kernel.path.name == f"linux-{RELEASE}.linux_{arch}"
    assert result.dtbs.path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # zstd, as the image
    entries = read_initrd(result.dtbs.path.read_bytes())
    assert files_of(entries) == TREES
    assert {e.mtime for e in entries} == {EPOCH}
    assert {(e.uid, e.gid) for e in entries} == {(0, 0)}
    # The modules archive is apart: no device tree in it, no module in this one.
    modules = read_initrd(result.modules.path.read_bytes())
    assert not [e.name for e in modules if e.name.endswith(dtb.DTB_SUFFIXES)]
    assert all(e.name.startswith(FOLDER) or FOLDER.startswith(e.name) for e in entries)


def test_the_device_tree_archive_is_reproducible(tmp_path: Path) -> None:
    first = parts(Arch.arm64, tmp_path / "a").dtbs
    second = parts(Arch.arm64, tmp_path / "b").dtbs
    other_epoch = parts(Arch.arm64, tmp_path / "c", EPOCH - 1).dtbs
    assert first is not None and second is not None and other_epoch is not None
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == second.sha256
    # The epoch is what the bytes depend on: another one gives another archive.
    assert other_epoch.sha256 != first.sha256
    assert {e.mtime for e in read_initrd(other_epoch.path.read_bytes())} == {EPOCH - 1}


def test_no_device_tree_archive_without_device_trees(tmp_path: Path) -> None:
    result = parts(Arch.amd64, tmp_path, with_trees=False)
    assert result.dtbs is None
    assert result.kernel is not None
    assert sorted(p.name for p in tmp_path.glob("dtbs-*")) == []
