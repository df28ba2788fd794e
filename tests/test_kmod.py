"""Kernel-module closure: synthetic golden modules, busybox modprobe, and depmod/modprobe on a
real Debian kernel (network: fetched by our own verified client, tests/kernel.py)."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from b2c_builder.build import kmod
from b2c_builder.build.cpio import CpioEntry, read_cpio, write_cpio
from b2c_builder.build.rootfs import Kind, Origin, Rootfs
from b2c_builder.config import Arch
from b2c_builder.errors import ExtractError, ResolveError
from b2c_builder.run import run, which
from tests.conftest import require
from tests.kernel import DebianKernel

DATA = Path(__file__).parent / "data" / "kmod"
KVER = "6.99.0-1-test"


# ---------------------------------------------------------------- synthetic modules


def fake_module(tmp: Path, name: str, fields: list[str], kver: str = KVER) -> bytes:
    """An ELF relocatable whose .modinfo holds ``fields``, as a real module's does."""
    source, obj, info, out = (tmp / f"{name}.{ext}" for ext in ("c", "o", "modinfo", "ko"))
    source.write_text(f"int {name}_init(void) {{ return 0; }}\n")
    run(["gcc", "-c", "-o", str(obj), str(source)], reason="build a fake module")
    modinfo = [*fields, f"name={name}", f"vermagic={kver} SMP mod_unload modversions "]
    info.write_bytes(b"".join(f.encode() + b"\0" for f in modinfo))
    run(
        ["objcopy", f"--add-section=.modinfo={info}", str(obj), str(out)],
        reason="add a .modinfo section",
    )
    return out.read_bytes()


def compress(data: bytes, path: str) -> bytes:
    if path.endswith(".xz"):
        return lzma.compress(data, check=lzma.CHECK_CRC32)
    if path.endswith(".zst"):
        return zstandard.ZstdCompressor().compress(data)
    if path.endswith(".gz"):
        return gzip.compress(data, mtime=0)
    return data


@dataclass
class Synthetic:
    root: Path  # lib/modules/<kver>
    plain: dict[str, bytes]  # module name -> uncompressed .ko


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Synthetic:
    """tests/data/kmod/tree.txt built as lib/modules/6.99.0-1-test."""
    work = tmp_path_factory.mktemp("kmod-src")
    root = tmp_path_factory.mktemp("kmod-tree") / KVER
    plain: dict[str, bytes] = {}
    for line in (DATA / "tree.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        path, *fields = (part.strip() for part in line.split("|"))
        name = kmod.name_of(path)
        plain[name] = fake_module(work, name, fields)
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(compress(plain[name], path))
    for name in ("modules.builtin", "modules.order"):
        shutil.copy(DATA / name, root / name)
    return Synthetic(root, plain)


def names(closure: list[kmod.Module]) -> list[str]:
    return [m.name for m in closure]


def test_closure_is_in_load_order(synthetic: Synthetic) -> None:
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    assert tree.version == KVER
    closure = kmod.module_closure(tree, ["top-d"])
    assert names(closure) == ["core_a", "lib_b", "mid_c", "lib_e", "top_d"]
    top = closure[-1]
    assert top.path == "kernel/drivers/top/top_d.ko.gz"
    assert top.plain_path == "kernel/drivers/top/top_d.ko"
    assert top.depends == ("mid_c", "lib_e")  # '-' and '_' are one
    assert top.softdeps == ("pre: crypto-crc32c",)
    assert closure[2].depends == ("lib_b", "core_a", "crc16")


def test_each_module_once_and_names_normalised(synthetic: Synthetic) -> None:
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    closure = kmod.module_closure(tree, ["lib_b", "core_a", "mid_c", "core-a", "solo"])
    assert names(closure) == ["core_a", "lib_b", "mid_c", "solo"]
    assert "core-a" in tree and "core_a" in tree and "ghost" not in tree


def test_builtins_are_satisfied(synthetic: Synthetic) -> None:
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    assert tree.builtin == {"ext4", "crc16"}
    assert kmod.module_closure(tree, ["ext4", "crc16"]) == []


def test_unknown_module_lists_close_matches(synthetic: Synthetic) -> None:
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    with pytest.raises(ResolveError) as info:
        kmod.module_closure(tree, ["top_dd"])
    assert "no module named 'top_dd'" in info.value.message
    assert info.value.hint is not None and "top_d" in info.value.hint


def test_missing_default_members_are_skipped(synthetic: Synthetic) -> None:
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    closure = kmod.module_closure(
        tree, [*kmod.DEFAULT_MODULES, "solo"], optional=kmod.DEFAULT_MODULES
    )
    assert names(closure) == ["solo"]  # ext4 is built in, the others do not exist here
    with pytest.raises(ResolveError, match="no module named 'virtio_pci'"):
        kmod.module_closure(tree, kmod.DEFAULT_MODULES)
    # skip_missing does not excuse a name the user asked for.
    with pytest.raises(ResolveError, match="no module named 'nope'"):
        kmod.module_closure(tree, ["nope"], optional=kmod.DEFAULT_MODULES)


def test_missing_dependency_is_an_error(synthetic: Synthetic) -> None:
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    with pytest.raises(ResolveError, match=f"needs_ghost depends on ghost, .* {KVER}"):
        kmod.module_closure(tree, ["needs_ghost"])


def test_archive_entries(synthetic: Synthetic) -> None:
    tree = kmod.ModuleTree.from_directory(synthetic.root, origin=Origin("linux-image-test", "1"))
    manifest = Rootfs()
    requested = ["top-d", "solo", "ext4", "virtio_pci", "top_d"]
    closure = kmod.add_modules(manifest, tree, requested, required=["top-d"])
    assert names(closure) == ["core_a", "lib_b", "mid_c", "lib_e", "top_d", "solo"]
    # Never a "lib" entry: unpacked over the base image it would replace lib -> usr/lib.
    assert {e.path.split("/")[0] for e in manifest} == {"usr"}
    moddir = f"usr/lib/modules/{KVER}"
    files = {e.path: e for e in manifest if e.kind is Kind.FILE}
    expected_modules = {f"{moddir}/{m.plain_path}": synthetic.plain[m.name] for m in closure}
    generated = {"modules.dep", "modules.builtin", "modules.order", "modules.alias", "b2c.modules"}
    assert set(files) == set(expected_modules) | {f"{moddir}/{n}" for n in generated}
    for path, data in expected_modules.items():
        assert files[path].data == data  # decompressed, byte for byte
        assert files[path].origin == Origin("linux-image-test", "1")
        assert files[path].mode == 0o644
    assert files[f"{moddir}/modules.dep"].data == (DATA / "modules.dep.expected").read_bytes()
    assert files[f"{moddir}/modules.builtin"].data == (DATA / "modules.builtin").read_bytes()
    assert files[f"{moddir}/modules.order"].data.decode().split() == [
        "kernel/lib/core-a.ko",
        "kernel/lib/lib_e.ko",
        "kernel/lib/lib_b.ko",
        "kernel/drivers/mid/mid-c.ko",
        "kernel/fs/solo/solo.ko",
        "kernel/drivers/top/top_d.ko",
    ]
    # depmod's format: what busybox modprobe resolves fs-solo (a mount's request) through.
    assert files[f"{moddir}/modules.alias"].data == (
        b"alias fs-solo solo\nalias fs-solo2 solo\nalias pci:v00001AF4d* mid_c\n"
    )
    # What init/modules.sh modprobes: the requested modules (built-in and absent ones left
    # out), at boot: neither is in DEFAULT_MODULES.
    load_list = files[f"{moddir}/b2c.modules"].data.decode().splitlines()
    assert [line for line in load_list if not line.startswith("#")] == ["top_d boot", "solo boot"]


def test_load_list_says_when(synthetic: Synthetic) -> None:
    """A default's LoadWhen goes in b2c.modules; what the user requires is loaded at boot
    even when the defaults would load it later."""
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    manifest = Rootfs()
    when = {
        "solo": kmod.LoadWhen.demand,
        "lib_e": kmod.LoadWhen.device,
        "core-a": kmod.LoadWhen.network,
    }
    kmod.add_modules(manifest, tree, ["solo", "lib_e", "core_a"], required=["lib_e"], when=when)
    data = manifest.entries[f"usr/lib/modules/{KVER}/b2c.modules"].data.decode()
    lines = [line for line in data.splitlines() if not line.startswith("#")]
    assert lines == ["solo demand", "lib_e boot", "core_a network"]


def test_readme_says_when_each_default_module_loads() -> None:
    """The README's table of LoadWhen rows lists every default module in its row."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = {}
    for when in kmod.LoadWhen:
        match = re.search(rf"^\| `{when}` \| ([^|]*) \|", readme, re.M)
        assert match, f"no README row for {when}"
        rows[when] = {m.strip() for m in re.split(r"[,;]", match.group(1))}
    for name, when in kmod.DEFAULT_MODULES.items():
        assert name in rows[when], (name, when)


def test_archive_requirements_and_directory(synthetic: Synthetic) -> None:
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    with pytest.raises(ResolveError, match="no module named 'nope'"):
        kmod.add_modules(Rootfs(), tree, ["solo", "nope"], required=["nope"])
    assert kmod.add_modules(Rootfs(), tree, ["nope"], required=[]) == []


def test_from_manifest_finds_version_and_kernel(synthetic: Synthetic) -> None:
    origin = Origin("linux-image-6.99.0-1-test", "6.99.0-1")
    staging = Rootfs()
    base = f"usr/lib/modules/{KVER}"
    for path in sorted(synthetic.root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(synthetic.root)
            staging.add_file(f"{base}/{rel}", path.read_bytes(), origin=origin)
    staging.add_symlink(f"{base}/build", f"/usr/src/linux-headers-{KVER}")
    staging.add_file(f"boot/vmlinuz-{KVER}", b"kernel", origin=origin)
    assert kmod.kernel_versions(staging) == {KVER: base}

    tree = kmod.ModuleTree.from_manifest(staging, Arch.amd64)
    assert (tree.version, tree.base, tree.vmlinuz) == (KVER, base, f"boot/vmlinuz-{KVER}")
    assert tree.kernel_image() == b"kernel"
    image = Rootfs()
    closure = kmod.add_modules(image, tree, ["top_d"], required=["top_d"])
    assert names(closure) == ["core_a", "lib_b", "mid_c", "lib_e", "top_d"]
    assert image[f"{base}/kernel/lib/lib_b.ko"].origin == origin
    assert image[f"{base}/modules.builtin"].origin == origin

    staging.add_dir("lib/modules/5.0.0-other")
    with pytest.raises(ResolveError, match="expected one kernel version"):
        kmod.ModuleTree.from_manifest(staging, Arch.amd64)
    with pytest.raises(ResolveError, match="--kernel-package"):
        kmod.ModuleTree.from_directory(synthetic.root).kernel_image()


def test_corrupt_and_foreign_files_are_reported(tmp_path: Path, synthetic: Synthetic) -> None:
    root = tmp_path / KVER
    shutil.copytree(synthetic.root, root)
    xz = root / "kernel/fs/solo/solo.ko.xz"
    xz.write_bytes(xz.read_bytes()[:40])
    (root / "kernel/lib/lib_e.ko").write_bytes(b"\x7fELF not really")
    tree = kmod.ModuleTree.from_directory(root)
    with pytest.raises(ExtractError, match=r"cannot decompress module kernel/fs/solo/solo\.ko\.xz"):
        kmod.module_closure(tree, ["solo"])
    with pytest.raises(ExtractError, match=r"kernel/lib/lib_e\.ko is not a valid kernel module"):
        kmod.module_closure(tree, ["lib_e"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResolveError, match="no kernel modules"):
        kmod.ModuleTree.from_directory(empty)


# ---------------------------------------------------------------- busybox modprobe


def write_manifest(manifest: Rootfs, root: Path) -> None:
    for entry in manifest:
        path = root / entry.path
        if entry.kind is Kind.DIR:
            path.mkdir(parents=True, exist_ok=True)
        elif entry.kind is Kind.FILE:
            path.write_bytes(entry.data)
        elif entry.kind is Kind.SYMLINK:
            path.symlink_to(entry.target)


def busybox_show_depends(root: Path, name: str) -> list[str]:
    """``busybox modprobe -D NAME`` chrooted into ``root``: the insmod paths, in order."""
    prefix = [] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user"]
    cmd = [*prefix, "chroot", str(root), "/bin/busybox", "modprobe", "-D", name]
    out = run(cmd, reason="ask busybox modprobe what it would load", check=False)
    if out.returncode != 0:
        raise AssertionError(f"busybox modprobe -D {name}: {out.stderr.decode()}")
    return [line.split()[1] for line in out.stdout.decode().splitlines()]


def busybox_root(
    tmp_path: Path, tree: kmod.ModuleTree, names: list[str]
) -> tuple[Path, list[kmod.Module]]:
    """A chroot with busybox and the modules archive, in lib/modules/`uname -r` where busybox
    looks for the running kernel's modules."""
    require(
        os.geteuid() == 0
        or run(["unshare", "-r", "true"], reason="probe", check=False).returncode == 0,
        "needs root or unprivileged user namespaces to chroot busybox",
    )
    root = tmp_path / "bbroot"
    manifest = Rootfs()
    closure = kmod.add_modules(manifest, tree, names, required=())
    (root / "bin").mkdir(parents=True)
    shutil.copy(which("busybox", reason="check modules.dep with busybox"), root / "bin/busybox")
    write_manifest(manifest, root)
    # busybox modprobe reads /lib/modules/`uname -r`: the host's release, not the tree's.
    (root / "lib/modules").mkdir(parents=True)
    (root / kmod.MODULES_DIR / tree.version).rename(root / "lib/modules" / os.uname().release)
    return root, closure


def assert_busybox_follows(root: Path, closure: list[kmod.Module]) -> None:
    moddir = f"/lib/modules/{os.uname().release}/"
    transitive = _transitive(closure)
    for module in closure:
        expected = [m.plain_path for m in closure if m.name in transitive[module.name]]
        shown = busybox_show_depends(root, module.name)
        assert shown == [moddir + p for p in [*expected, module.plain_path]], module.name
        for path in shown:
            assert (root / path.lstrip("/")).is_file()


def _transitive(closure: list[kmod.Module]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for module in closure:  # dependencies come first
        result[module.name] = set()
        for dep in module.depends:
            if dep in result:
                result[module.name] |= {dep, *result[dep]}
    return result


def test_busybox_modprobe_reads_our_modules_dep(tmp_path: Path, synthetic: Synthetic) -> None:
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    root, closure = busybox_root(tmp_path, tree, ["top_d", "solo", "ext4"])
    assert names(closure) == ["core_a", "lib_b", "mid_c", "lib_e", "top_d", "solo"]
    assert_busybox_follows(root, closure)
    assert busybox_show_depends(root, "top-d")[-1].endswith("top_d.ko")
    with pytest.raises(AssertionError, match="module ext4 is builtin"):
        busybox_show_depends(root, "ext4")


# ---------------------------------------------------------------- a real Debian kernel


@dataclass
class Oracle:
    """Debian's kernel (tests/kernel.py) and kmod's depmod run on a copy of its modules."""

    modules: Path  # the package's lib/modules/<kver>, modules as Debian ships them (.ko.xz)
    kver: str
    depmod_root: Path  # a copy where depmod ran (modules.softdep removed: hard deps only)


@pytest.fixture(scope="session")
def oracle(debian_kernel: DebianKernel, tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    modules, kver = debian_kernel.modules, debian_kernel.release
    depmod_root = tmp_path_factory.mktemp("depmod")
    (depmod_root / "lib/modules").mkdir(parents=True)
    run(["cp", "-al", str(modules), str(depmod_root / "lib/modules")], reason="copy modules")
    run(["depmod", "-b", str(depmod_root), kver], reason="compute the oracle modules.dep")
    (depmod_root / f"lib/modules/{kver}/modules.softdep").unlink()
    return Oracle(modules, kver, depmod_root)


DEEP = ("btrfs", "nf_tables", "nft_chain_nat", "kvm_intel", "xfs", "i915", "vhost_net", "bridge")


def modprobe_show_depends(kernel: Oracle, name: str) -> list[str]:
    """kmod's answer: insmod paths (relative to lib/modules/<kver>) in order; [] if built in."""
    out = run(
        ["modprobe", "-d", str(kernel.depmod_root), "-S", kernel.kver, "--show-depends", name],
        reason="ask kmod's modprobe what it would load",
    )
    moddir = f"{kernel.depmod_root}/lib/modules/{kernel.kver}/"
    paths = []
    for line in out.stdout.decode().splitlines():
        if line.startswith("builtin "):
            continue
        assert line.startswith("insmod "), line
        paths.append(line.split()[1].removeprefix(moddir))
    return paths


@pytest.mark.network
@pytest.mark.parametrize("name", [*kmod.DEFAULT_MODULES, *DEEP])
def test_closure_matches_modprobe(oracle: Oracle, name: str) -> None:
    tree = kmod.ModuleTree.from_directory(oracle.modules)
    closure = kmod.module_closure(tree, [name])
    expected = modprobe_show_depends(oracle, name)
    assert sorted(m.path for m in closure) == sorted(expected)
    # Both orders load every module after its dependencies (as kmod computes them).
    position = {m.path: i for i, m in enumerate(closure)}
    for module in closure:
        for dep in modprobe_show_depends(oracle, module.name)[:-1]:
            assert position[dep] < position[module.path], (dep, module.path)


@pytest.mark.network
def test_modules_dep_matches_depmod(oracle: Oracle, tmp_path: Path) -> None:
    tree = kmod.ModuleTree.from_directory(oracle.modules)
    root, closure = busybox_root(tmp_path, tree, [*kmod.DEFAULT_MODULES, *DEEP])
    ours = _parse_dep(kmod.modules_dep(closure).decode())
    theirs = _parse_dep((oracle.depmod_root / f"lib/modules/{oracle.kver}/modules.dep").read_text())
    # We ship modules decompressed (kernel/fs/ext4/ext4.ko); Debian's are .ko.xz.
    theirs = {_plain(p): [_plain(d) for d in deps] for p, deps in theirs.items()}
    assert {path: set(deps) for path, deps in ours.items()} == {
        path: set(theirs[path]) for path in ours
    }
    assert_busybox_follows(root, closure)


def _plain(path: str) -> str:
    return re.sub(r"\.ko\.(xz|zst|gz)$", ".ko", path)


def _parse_dep(text: str) -> dict[str, list[str]]:
    result = {}
    for line in text.splitlines():
        path, _, deps = line.partition(":")
        result[path] = deps.split()
    return result


@pytest.mark.network
def test_compressed_debian_modules(oracle: Oracle, tmp_path: Path) -> None:
    """Debian ships xz-compressed modules; half of the closure recompressed by the real zstd:
    both read back to what the real xz decompresses."""
    shipped = kmod.ModuleTree.from_directory(oracle.modules)
    plain = kmod.module_closure(shipped, kmod.DEFAULT_MODULES, optional=kmod.DEFAULT_MODULES)
    assert {m.path.rsplit(".", 1)[-1] for m in plain} == {"xz"}, "Debian ships .ko.xz"

    def unxz(path: Path) -> bytes:
        return run(["xz", "-dc", str(path)], reason="decompress a module as the oracle").stdout

    root = tmp_path / oracle.kver
    run(["cp", "-al", str(oracle.modules), str(root)], reason="copy modules")
    for module in plain[::2]:
        path = root / module.path
        path.unlink()  # a hard link to the cache: replace, never modify in place
        (root / module.plain_path).write_bytes(unxz(oracle.modules / module.path))
        run(["zstd", "-q", "--rm", str(root / module.plain_path)], reason="compress a module")
    tree = kmod.ModuleTree.from_directory(root)
    manifest = Rootfs()
    closure = kmod.add_modules(manifest, tree, kmod.DEFAULT_MODULES, required=())
    assert [m.plain_path for m in closure] == [m.plain_path for m in plain]
    assert {m.path.rsplit(".", 1)[-1] for m in closure} == {"xz", "zst"}
    moddir = f"usr/lib/modules/{tree.version}"
    for module in plain:
        data = manifest.read(f"{moddir}/{module.plain_path}")
        assert data == unxz(oracle.modules / module.path), module.name


# ---------------------------------------------------------------- one boot's share of an archive


def as_cpio(manifest: Rootfs) -> list[CpioEntry]:
    """``manifest`` written as a newc archive and read back, as run reads a modules archive."""
    out = io.BytesIO()
    write_cpio(manifest, out, source_date_epoch=0)
    return read_cpio(out.getvalue())


def scheduled_archive(synthetic: Synthetic) -> list[CpioEntry]:
    """top_d loaded with the network, lib_e a device driver, solo on demand (kmod.LoadWhen)."""
    tree = kmod.ModuleTree.from_directory(synthetic.root)
    manifest = Rootfs()
    when = {"top_d": kmod.LoadWhen.network, "lib_e": kmod.LoadWhen.device, "solo": "demand"}
    schedule = {name: kmod.LoadWhen(w) for name, w in when.items()}
    kmod.add_modules(manifest, tree, ["top_d", "lib_e", "solo"], required=(), when=schedule)
    return as_cpio(manifest)


def index_files(subset: Rootfs) -> dict[str, str]:
    moddir = f"{kmod.MODULES_DIR}/{KVER}/"
    return {
        e.path.removeprefix(moddir): e.data.decode()
        for e in subset
        if e.kind is Kind.FILE and not e.path.endswith(".ko")
    }


def test_archive_subset_keeps_a_boots_modules_and_their_dependencies(
    synthetic: Synthetic,
) -> None:
    entries = scheduled_archive(synthetic)
    cut = kmod.archive_subset(entries, kmod.BootNeeds(network=True))
    assert cut is not None
    subset, kept = cut
    # lib_e is a device driver nobody asked for, but top_d depends on it.
    assert kept == {"core_a", "lib_b", "mid_c", "lib_e", "top_d"}
    assert sorted(kmod.name_of(e.path) for e in subset if e.path.endswith(".ko")) == sorted(kept)
    files = index_files(subset)
    assert files["modules.dep"] == (DATA / "modules.dep.expected").read_text().replace(
        "kernel/fs/solo/solo.ko:\n", ""
    )
    assert files["modules.alias"] == "alias pci:v00001AF4d* mid_c\n"
    assert "solo" not in files["modules.order"] and "top_d" in files["modules.order"]
    assert files["modules.builtin"] == (DATA / "modules.builtin").read_text()
    listed = [ln for ln in files["b2c.modules"].splitlines() if not ln.startswith("#")]
    assert listed == ["top_d network", "lib_e device"]


def test_archive_subset_by_class(synthetic: Synthetic) -> None:
    entries = scheduled_archive(synthetic)
    on_demand = kmod.archive_subset(entries, kmod.BootNeeds(False, demand=frozenset({"solo"})))
    assert on_demand is not None and on_demand[1] == {"solo"}
    assert index_files(on_demand[0])["modules.alias"] == "alias fs-solo solo\nalias fs-solo2 solo\n"
    device = kmod.archive_subset(entries, kmod.BootNeeds(False, devices=frozenset({"lib_e"})))
    assert device is not None and device[1] == {"lib_e"}
    nothing = kmod.archive_subset(entries, kmod.BootNeeds(network=False))
    assert nothing is not None and nothing[1] == set()
    assert not [e for e in nothing[0] if e.path.endswith(".ko")]
    assert index_files(nothing[0])["modules.dep"] == ""


def test_archive_subset_leaves_other_archives_alone(synthetic: Synthetic) -> None:
    needs = kmod.BootNeeds(network=True)
    entries = scheduled_archive(synthetic)
    extra = Rootfs()
    extra.add_file("etc/motd", b"hello\n")
    assert kmod.archive_subset([*entries, *as_cpio(extra)], needs) is None
    beside = Rootfs()
    beside.add_file("usr/lib/mod", b"a file whose path begins like the modules folder's\n")
    assert kmod.archive_subset([*entries, *as_cpio(beside)], needs) is None
    no_dep = [e for e in entries if not e.name.endswith("/modules.dep")]
    assert kmod.archive_subset(no_dep, needs) is None
    assert kmod.archive_subset(as_cpio(extra), needs) is None


def test_busybox_modprobe_reads_a_cut_archive(tmp_path: Path, synthetic: Synthetic) -> None:
    require(
        os.geteuid() == 0
        or run(["unshare", "-r", "true"], reason="probe", check=False).returncode == 0,
        "needs root or unprivileged user namespaces to chroot busybox",
    )
    cut = kmod.archive_subset(scheduled_archive(synthetic), kmod.BootNeeds(network=True))
    assert cut is not None
    root = tmp_path / "bbroot"
    (root / "bin").mkdir(parents=True)
    shutil.copy(which("busybox", reason="check modules.dep with busybox"), root / "bin/busybox")
    write_manifest(cut[0], root)
    (root / "lib/modules").mkdir(parents=True)
    (root / kmod.MODULES_DIR / KVER).rename(root / "lib/modules" / os.uname().release)
    shown = busybox_show_depends(root, "top_d")
    assert shown[-1].endswith("/kernel/drivers/top/top_d.ko")
    assert {kmod.name_of(path) for path in shown} == cut[1]
    for path in shown:
        assert (root / path.lstrip("/")).is_file()
    with pytest.raises(AssertionError, match="solo"):
        busybox_show_depends(root, "solo")
