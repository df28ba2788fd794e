"""The real release, built from the Debian archive, checked from the outside.

Oracles: sha256sum, bsdtar, GNU cpio, the image's own loader and programs run in a chroot,
depmod and modprobe on the modules archive, and byte comparisons between builds. The default
build (the session `release` fixture) is shared with the other network tests; the few extra
builds here are uncompressed where compression is not what they test.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from b2c_builder.build import compress, elf, image
from b2c_builder.build.cpio import CpioEntry, read_initrd, write_cpio
from b2c_builder.build.rootfs import Entry, Kind, Rootfs
from b2c_builder.config import Arch
from tests.conftest import (
    ROOT,
    Release,
    b2c,
    build_release,
    require_root,
    require_tool,
    shared_cache,
)
from tests.test_image import dangling_symlinks

pytestmark = pytest.mark.network

MAX_SIZE = 20 * 2**20
SDE_PAST = 1_000_000_000  # 2001: before every file of trixie
SDE_FAR = 4_000_000_000  # 2096: after every file, nothing to clamp
ELF_MAGIC = b"\x7fELF"
ARCH = Arch.amd64
SPDX_JSON = "initramfs.linux_amd64.spdx.json"


# --- helpers -----------------------------------------------------------------------------


def entries_of(path: Path) -> list[CpioEntry]:
    """The members of an image (compressed or not), read by our reader."""
    return read_initrd(path.read_bytes())


def to_manifest(entries: Iterable[CpioEntry]) -> Rootfs:
    """A Rootfs (a Tree for b2c_builder.build.elf) holding exactly the archive's members."""
    manifest = Rootfs()
    for e in entries:
        kind = e.kind
        assert kind is not None, e.name
        manifest.add(
            Entry(
                e.name,
                kind,
                e.perm,
                data=e.data if kind is Kind.FILE else b"",
                target=e.target if kind is Kind.SYMLINK else "",
                rdev=e.rdev,
            )
        )
    return manifest


def read_manifest_json(output: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((output / "initramfs.linux_amd64.manifest.json").read_text())
    return doc


def need_root() -> None:
    require_root("GNU cpio makes device nodes, chroot runs the image's programs")


def extract(plain_cpio: bytes, dest: Path) -> Path:
    """Unpack an uncompressed newc archive with GNU cpio, as the kernel would (as root)."""
    require_tool("cpio")
    dest.mkdir(parents=True)
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
        input=plain_cpio,
        cwd=dest,
        check=True,
        timeout=120,
    )
    return dest


def in_image(root: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run one of the image's programs inside it: a chroot with its own /proc, no host libs."""
    require_tool("unshare")
    require_tool("chroot")
    unshare = ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={root / 'proc'}"]
    return subprocess.run(
        [*unshare, "chroot", str(root), *cmd],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin", "LANG": "C"},
    )


def build_plain(output: Path, cache: Path, *extra: str) -> Path:
    """A build without compression (fast; 60 MiB, so a larger --max-size) into ``output``."""
    proc = b2c(
        "build",
        "--output",
        str(output),
        "--cache-dir",
        str(cache),
        "--compression",
        "none",
        "--max-size",
        "256MiB",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr
    return output / "initramfs.linux_amd64.cpio"


def error_lines(stderr: str) -> list[str]:
    """The CLI's error lines, without the hint that follows each."""
    return [
        line for line in stderr.splitlines() if line.startswith("ERROR: ") and "hint:" not in line
    ]


def without_mtimes(entries: Iterable[CpioEntry]) -> list[tuple[Any, ...]]:
    return [(e.name, e.mode, e.uid, e.gid, e.nlink, e.ino, e.rdev, e.data) for e in entries]


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain(release: Release) -> bytes:
    """The release image, decompressed."""
    return compress.decompress(release.image.read_bytes())


@pytest.fixture(scope="module")
def entries(plain: bytes) -> list[CpioEntry]:
    return read_initrd(plain)


@pytest.fixture(scope="module")
def tree(entries: list[CpioEntry]) -> Rootfs:
    return to_manifest(entries)


@pytest.fixture(scope="module")
def rootdir(plain: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release image unpacked by GNU cpio, for programs to run in."""
    need_root()
    return extract(plain, tmp_path_factory.mktemp("image") / "root")


@pytest.fixture(scope="module")
def past_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release's inputs with SOURCE_DATE_EPOCH in 2001, uncompressed."""
    out = tmp_path_factory.mktemp("past")
    return build_plain(out, shared_cache(), "--source-date-epoch", str(SDE_PAST))


# --- the release layout ------------------------------------------------------------------


def test_release_layout_and_checksums(release: Release) -> None:
    require_tool("sha256sum")
    names = sorted(p.name for p in release.output.iterdir())
    artifacts = [release.image.name, release.modules.name, release.kernel.name]
    sboms = [release.manifest.name, SPDX_JSON]
    assert names == sorted([*artifacts, *(f"{a}.sha256" for a in artifacts), *sboms])
    assert release.image.name == "initramfs.linux_amd64.cpio.zst"
    for artifact in artifacts:
        proc = subprocess.run(
            ["sha256sum", "--check", "--strict", f"{artifact}.sha256"],
            cwd=release.output,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout == f"{artifact}: OK\n"
    assert not [p for p in release.output.parent.iterdir() if p.name.startswith(".b2c-build-")]


def test_manifest_lists_every_file_of_the_image(release: Release, entries: list[CpioEntry]) -> None:
    doc = read_manifest_json(release.output)
    assert doc["suite"] == "trixie" and doc["arch"] == "amd64"
    listed = {item["path"]: item for item in doc["files"]}
    assert len(listed) == len(doc["files"]), "each path listed once"
    assert set(listed) == {"/" + e.name for e in entries}
    for e in entries:
        item = listed["/" + e.name]
        assert item["type"] == str(e.kind), e.name
        assert item["mode"] == f"{e.perm:04o}", e.name
        assert item["package"] and item["version"], e.name
        assert e.mtime <= doc["source_date_epoch"], e.name
        if e.kind is Kind.FILE:
            assert item["size"] == len(e.data), e.name
            assert item["sha256"] == hashlib.sha256(e.data).hexdigest(), e.name
        elif e.kind is Kind.SYMLINK:
            assert item["target"] == e.target, e.name
        elif e.kind is Kind.CHAR:
            assert tuple(item["rdev"]) == e.rdev, e.name
    # The SBOM names the Debian package of what came from Debian.
    for binary in image.BINARIES:
        assert listed["/" + binary.path]["package"] == binary.package
    debian = [i for i in doc["files"] if i["type"] == "file" and i["package"] != "b2c-builder"]
    assert len(debian) > 40
    for item in debian:
        assert re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", item["package"]), item
        assert re.fullmatch(r"([0-9]+:)?[0-9][A-Za-z0-9.+~:-]*", item["version"]), item
    assert listed["/usr/lib/x86_64-linux-gnu/libc.so.6"]["package"] == "libc6"


_BSDTAR_LINE = re.compile(
    r"^(?P<mode>\S{10})\s+\d+\s+(?P<uid>\d+)\s+(?P<gid>\d+)\s+(?P<size>\d+|\d+,\d+)"
    r"\s+\w{3}\s+\d+\s+[\d:]+\s+(?P<rest>.+)$"
)


def test_bsdtar_reads_the_same_entries(plain: bytes, entries: list[CpioEntry]) -> None:
    require_tool("bsdtar")
    proc = subprocess.run(
        ["bsdtar", "-tvf", "-"], input=plain, capture_output=True, check=True, timeout=120
    )
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(entries)
    for line, e in zip(lines, entries, strict=True):
        match = _BSDTAR_LINE.match(line)
        assert match, line
        assert match["mode"] == stat.filemode(e.mode), line
        assert (match["uid"], match["gid"]) == ("0", "0"), line
        if e.kind is Kind.SYMLINK:
            assert match["rest"] == f"{e.name} -> {e.target}", line
        else:
            assert match["rest"] == e.name, line
        if e.kind is Kind.FILE:
            assert int(match["size"]) == len(e.data), line
        if e.kind is Kind.CHAR:
            assert match["size"] == f"{e.rdev[0]},{e.rdev[1]}", line


# --- what the image holds ----------------------------------------------------------------


def test_image_size_and_contents(release: Release, tree: Rootfs) -> None:
    assert release.image.stat().st_size < MAX_SIZE
    init = tree["init"]
    assert init.kind is Kind.FILE and init.mode == 0o755 and init.data.startswith(b"#!")
    for program in ("usr/bin/podman", "usr/bin/crun", "usr/bin/conmon", "usr/bin/busybox"):
        entry = tree[program]
        assert entry.kind is Kind.FILE and entry.mode & 0o111, program
        assert entry.data.startswith(ELF_MAGIC), program
    # busybox applets, in /usr/bin and, for the few that need it, in /usr/sbin
    for applet in ("usr/bin/sh", "usr/bin/mount", "usr/bin/udhcpc", "usr/sbin/insmod"):
        assert tree.resolve(applet) == "usr/bin/busybox", applet
    # modprobe, where /init tells the kernel it is, and not at the kernel's default path
    assert tree.resolve("usr/bin/modprobe") == "usr/bin/busybox"
    assert tree.resolve("sbin/modprobe") is None
    assert b"echo /usr/bin/modprobe >" in init.data
    assert tree.resolve("sbin/poweroff") == "usr/bin/busybox"
    # the loader at its ABI path, through lib64 -> usr/lib64
    assert tree["lib64"].kind is Kind.SYMLINK and tree["lib64"].target == "usr/lib64"
    loader = tree.resolve(ARCH.facts.loader)
    assert loader is not None and loader.startswith("usr/lib")
    assert tree.read(loader).startswith(ELF_MAGIC)
    assert dangling_symlinks(tree) == []
    assert tree["etc/mtab"].target == "/proc/self/mounts"  # the kernel's, once /proc is mounted
    console = tree["dev/console"]
    assert (console.kind, console.rdev) == (Kind.CHAR, (5, 1))
    # never whole packages
    for prefix in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info"):
        assert not [p for p in tree.entries if p == prefix or p.startswith(prefix + "/")]
    # podman's configuration drives crun through the --no-pivot wrapper
    conf = tomllib.loads(tree.read("etc/containers/containers.conf").decode())
    runtime = conf["engine"]["runtime"]
    (wrapper,) = conf["engine"]["runtimes"][runtime]
    assert wrapper == "/" + image.CRUN_WRAPPER
    assert tree[wrapper].kind is Kind.FILE and tree[wrapper].mode == 0o755
    assert b"--no-pivot" in tree.read(wrapper)
    (conmon,) = conf["engine"]["conmon_path"]
    assert conmon == "/" + image.CONMON_WRAPPER
    assert tree[conmon].kind is Kind.FILE and tree[conmon].mode == 0o755
    assert conf["engine"]["cgroup_manager"] == "cgroupfs"
    for path in ("etc/containers/policy.json", "etc/containers/storage.conf", "etc/services"):
        assert tree[path].kind is Kind.FILE, path
    assert tree["var/tmp"].kind is Kind.DIR and tree["var/tmp"].mode == 0o1777


def elf_files(tree: Rootfs) -> list[str]:
    return [e.path for e in tree if e.kind is Kind.FILE and e.data.startswith(ELF_MAGIC)]


def test_elf_closure_is_complete_by_parsing(tree: Rootfs) -> None:
    """Every DT_NEEDED of every ELF file in the image resolves inside the image."""
    files = elf_files(tree)
    assert len(files) > 40
    needed = elf.needed_files(tree, files, ARCH)  # raises ResolveError naming what is missing
    assert {n.canonical for n in needed} <= set(files)


_LDD_LINE = re.compile(r"^\s*(?:(\S+) => )?(\S+) \(0x[0-9a-f]+\)$")


def test_elf_closure_matches_the_image_loader(rootdir: Path, tree: Rootfs) -> None:
    """The image's own ld.so, run in the image, finds what b2c_builder.build.elf found."""
    loader = ARCH.facts.loader
    checked = 0
    for path in elf_files(tree):
        info = elf.parse(tree.read(path))
        assert info is not None, path
        if info.interp is None and not info.needed:
            continue  # static (busybox) or the loader itself
        proc = in_image(rootdir, loader, "--list", "/" + path)
        assert proc.returncode == 0, f"/{path}: {proc.stdout}{proc.stderr}"
        assert "not found" not in proc.stdout, f"/{path}: {proc.stdout}"
        found = set()
        for line in proc.stdout.splitlines():
            match = _LDD_LINE.match(line)
            assert match, line
            if match[2].startswith("/"):
                canonical = tree.resolve(match[2])
                assert canonical is not None, line
                found.add(canonical)
        ours = {n.canonical for n in elf.needed_files(tree, [path], ARCH)}
        if info.interp is None:  # a library: ld.so lists itself for it, elf.py does not
            found.discard(tree.resolve(loader))
            ours.discard(str(tree.resolve(loader)))
        assert found == ours, f"/{path}"
        checked += 1
    assert checked > 40


PROGRAMS = {
    "podman": (["/usr/bin/podman", "--version"], "podman version 5"),
    "crun": (["/usr/bin/crun", "--version"], "crun version"),
    "conmon": (["/usr/bin/conmon", "--version"], "conmon version"),
    "busybox": (["/bin/sh", "-c", "echo busybox sh works"], "busybox sh works"),
    "mke2fs": (["/usr/sbin/mke2fs", "-V"], "mke2fs 1."),
    "mkfs.ext4": (["/usr/sbin/mkfs.ext4", "-V"], "mke2fs 1."),
    "sfdisk": (["/usr/sbin/sfdisk", "--version"], "sfdisk from util-linux"),
    "rdate": (["/usr/sbin/rdate"], "Usage: rdate"),
    "crun-wrapper": (["/" + image.CRUN_WRAPPER, "--version"], "crun version"),
    "conmon-wrapper": (["/" + image.CONMON_WRAPPER, "--version"], "conmon version"),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_starts_in_the_image(rootdir: Path, name: str) -> None:
    cmd, expected = PROGRAMS[name]
    proc = in_image(rootdir, *cmd)
    output = proc.stdout + proc.stderr
    assert "error while loading shared libraries" not in output, output
    assert expected in output, output
    if name != "rdate":  # rdate has no --version: usage on stderr, exit 1
        assert proc.returncode == 0, output


# --- the modules archive and the kernel --------------------------------------------------


def dep_map(text: str) -> dict[str, list[str]]:
    deps = {}
    for line in text.splitlines():
        module, _, rest = line.partition(":")
        deps[module] = rest.split()
    return deps


def test_modules_archive_works_with_modprobe(release: Release, tmp_path: Path) -> None:
    need_root()
    require_tool("depmod")
    require_tool("modprobe")
    mods = entries_of(release.modules)
    names = {e.name for e in mods}
    assert "lib" not in names and not [n for n in names if n.startswith("lib/")]
    (kver,) = {n.split("/")[3] for n in names if n.count("/") >= 3}
    assert release.modules.name == f"modules-{kver}.linux_amd64.cpio.zst"
    assert release.kernel.name == f"linux-{kver}.linux_amd64"
    assert release.kernel.read_bytes()[0x202:0x206] == b"HdrS", "a bzImage"
    base = f"usr/lib/modules/{kver}"
    ours = dep_map(next(e for e in mods if e.name == f"{base}/modules.dep").data.decode())
    named = set(ours) | {d for deps in ours.values() for d in deps}
    shipped = {n.removeprefix(base + "/") for n in names if n.endswith((".ko", ".ko.xz"))}
    assert named == shipped, "modules.dep names exactly the modules shipped"
    for name in ("virtio_net", "virtio_blk", "overlay", "ext4", "9pnet_virtio", "nvme"):
        assert [m for m in ours if m.rsplit("/", 1)[1].split(".")[0] == name], name
    # Each dependency list is loadable back to front: a module's own deps come after it.
    for module, deps in ours.items():
        for i, dep in enumerate(deps):
            assert set(ours[dep]) <= set(deps[i + 1 :]), f"{module}: {dep} before its deps"

    # depmod, run on the same modules, finds the same dependencies from their symbols.
    root = extract(compress.decompress(release.modules.read_bytes()), tmp_path / "root")
    (root / "lib").symlink_to("usr/lib")  # the host's kmod looks in lib/modules
    subprocess.run(["depmod", "-b", str(root), kver], check=True, capture_output=True)
    theirs = dep_map((root / base / "modules.dep").read_text())
    assert {m: set(d) for m, d in theirs.items()} == {m: set(d) for m, d in ours.items()}
    proc = subprocess.run(
        ["modprobe", "-d", str(root), "-S", kver, "--show-depends", "virtio_net"],
        capture_output=True,
        text=True,
        check=True,
    )
    loads = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("insmod ")]
    (virtio_net,) = (m for m in ours if m.endswith("/virtio_net.ko"))
    expected = [*reversed(ours[virtio_net]), virtio_net]
    assert [str(Path(p).relative_to(root / "lib/modules" / kver)) for p in loads] == expected


# --- reproducibility ---------------------------------------------------------------------


def test_cold_cache_build_is_byte_identical(release: Release, tmp_path: Path) -> None:
    again = build_release(tmp_path / "out", tmp_path / "cold-cache")
    fetched = [p for p in (tmp_path / "cold-cache").rglob("*") if p.is_file()]
    assert len(fetched) > 50, "every package was downloaded again into the empty cache"
    for ours, theirs in [
        (release.image, again.image),
        (release.modules, again.modules),
        (release.manifest, again.manifest),
        (release.kernel, again.kernel),
        (release.output / SPDX_JSON, again.output / SPDX_JSON),
    ]:
        assert ours.name == theirs.name
        assert ours.read_bytes() == theirs.read_bytes(), ours.name


def test_another_epoch_changes_only_mtimes(
    release: Release, plain: bytes, entries: list[CpioEntry], past_build: Path
) -> None:
    past_bytes = past_build.read_bytes()
    assert past_bytes != plain
    past = read_initrd(past_bytes)
    assert without_mtimes(past) == without_mtimes(entries)
    release_epoch = read_manifest_json(release.output)["source_date_epoch"]
    # Package files keep their (older) times; generated files and newer ones get the epoch.
    assert max(e.mtime for e in entries) == release_epoch
    assert len({e.mtime for e in entries}) > 1
    assert {e.mtime for e in past} == {SDE_PAST}
    ours, theirs = read_manifest_json(release.output), read_manifest_json(past_build.parent)
    assert theirs.pop("source_date_epoch") == SDE_PAST
    ours.pop("source_date_epoch")
    assert ours == theirs


def test_unclamped_package_times_change_the_bytes(past_build: Path, tmp_path: Path) -> None:
    """With SOURCE_DATE_EPOCH after every file's date nothing is clamped: the packages' own
    times reach the image and the bytes differ from the clamped build (normalisation matters);
    generated files still carry the epoch, never a host time."""
    far_build = build_plain(tmp_path / "far", shared_cache(), "--source-date-epoch", str(SDE_FAR))
    far_bytes, past_bytes = far_build.read_bytes(), past_build.read_bytes()
    assert far_bytes != past_bytes
    far, past = read_initrd(far_bytes), read_initrd(past_bytes)
    assert without_mtimes(far) == without_mtimes(past)
    far_times = {e.mtime for e in far}
    assert max(far_times) == SDE_FAR
    assert min(far_times) < SDE_FAR  # package times passed through


def host_tree(root: Path) -> Rootfs:
    """A Rootfs of a directory as the host sees it: modes, contents, targets, devices."""
    manifest = Rootfs()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel, perm = str(path.relative_to(root)), stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            manifest.add(Entry(rel, Kind.DIR, perm))
        elif stat.S_ISLNK(st.st_mode):
            manifest.add(Entry(rel, Kind.SYMLINK, perm, target=os.readlink(path)))
        elif stat.S_ISREG(st.st_mode):
            manifest.add(Entry(rel, Kind.FILE, perm, data=path.read_bytes()))
        elif stat.S_ISCHR(st.st_mode):
            rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
            manifest.add(Entry(rel, Kind.CHAR, perm, rdev=rdev))
        else:
            raise AssertionError(f"unexpected file type: {path}")
    return manifest


def test_normalisation_is_what_makes_it_reproducible(
    release: Release, plain: bytes, tmp_path: Path
) -> None:
    """Unpack the image twice: the host's cpio archives the two identical trees into different
    bytes (inode numbers, link counts, times of the host), our writer into identical ones."""
    need_root()
    epoch = read_manifest_json(release.output)["source_date_epoch"]
    host_archives, our_archives = [], []
    for name in ("a", "b"):
        root = extract(plain, tmp_path / name)
        names = subprocess.run(
            ["find", ".", "-mindepth", "1"], cwd=root, capture_output=True, check=True
        ).stdout
        host_archives.append(
            subprocess.run(
                ["cpio", "-o", "-H", "newc", "--quiet"],
                input=names,
                cwd=root,
                capture_output=True,
                check=True,
            ).stdout
        )
        buf = io.BytesIO()
        write_cpio(host_tree(root), buf, source_date_epoch=epoch)
        our_archives.append(buf.getvalue())
    assert host_archives[0] != host_archives[1], "without normalisation the bytes differ"
    assert our_archives[0] == our_archives[1]
    # The unpacked trees lost the packages' own times (the host stamped them at extraction,
    # then our writer clamped them to the epoch): everything else is the release, byte for byte.
    assert without_mtimes(read_initrd(our_archives[0])) == without_mtimes(read_initrd(plain))


# --- options -----------------------------------------------------------------------------


def test_max_size_fails_and_leaves_the_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "releases"
    out.mkdir()
    (out / "sentinel.txt").write_text("an earlier release\n")
    proc = b2c(
        "build",
        "--output",
        str(out),
        "--cache-dir",
        str(shared_cache()),
        "--compression",
        "none",
        "--max-size",
        "1MiB",
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert re.search(
        r"the image is [\d.]+ MiB \(\d+ bytes\), above the --max-size of 1MiB", errors[0]
    )
    assert "--max-size" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["sentinel.txt"]
    assert (out / "sentinel.txt").read_text() == "an earlier release\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["releases"], "no temporary folder left"


# Mount a small tmpfs on $1 in a private mount namespace, build into it, then list it.
_FULL_DISK = (
    'mount -t tmpfs -o size=2m tmpfs "$1" && d=$1 && shift && "$@"; rc=$?; ls -A "$d"; exit $rc'
)


def test_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    need_root()
    require_tool("unshare")
    disk = tmp_path / "disk"
    disk.mkdir()
    build = [sys.executable, "-m", "b2c_builder", "build", "--output", f"{disk}/releases"]
    build += ["--cache-dir", str(shared_cache()), "--compression", "none", "--max-size", "1GiB"]
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", _FULL_DISK, "sh", str(disk), *build],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert f"cannot write the release into {disk}/releases: No space left on device" in errors[0]
    assert proc.stdout == "", "nothing left on the full disk, no staging folder"


def test_extra_package_adds_its_programs_and_libraries(
    entries: list[CpioEntry], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    build_plain(out, shared_cache(), "--extra-package", "strace")
    extra = read_initrd((out / "initramfs.linux_amd64.cpio").read_bytes())
    tree = to_manifest(extra)
    listed = {i["path"]: i for i in read_manifest_json(out)["files"]}
    # Everything of the default image is still there, unchanged.
    before = {e.name: e.data for e in entries}
    assert {e.name: e.data for e in extra if e.name in before} == before
    added = {e.name for e in extra} - set(before)
    assert "usr/bin/strace" in added
    assert listed["/usr/bin/strace"]["package"] == "strace"
    # What it adds: strace's programs, and the libraries they need that were not there yet
    # (each file with the symlink the loader reaches it by), attributed to their packages.
    needed = {n.canonical for n in elf.needed_files(tree, ["usr/bin/strace"], ARCH)}
    new_libraries = {p for p in added if listed["/" + p]["package"] != "strace"}
    assert {tree.resolve(p) for p in new_libraries} <= needed
    assert any("libunwind" in p for p in new_libraries), "the default image lacks libunwind"
    for path in new_libraries:
        item = listed["/" + path]
        assert item["package"].startswith("lib") and item["version"], item
    assert not [p for p in added if p.startswith("usr/share/")], "no docs or man pages"
    if os.geteuid() == 0:
        plain = (out / "initramfs.linux_amd64.cpio").read_bytes()
        proc = in_image(extract(plain, tmp_path / "root"), "/usr/bin/strace", "-V")
        assert proc.returncode == 0 and "strace -- version" in proc.stdout, proc.stderr
