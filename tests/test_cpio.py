"""cpio newc: our writer against our reader, GNU cpio and bsdtar; determinism; bad input."""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath
import re
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b2c_builder.build import compress
from b2c_builder.build.cpio import (
    CpioEntry,
    CpioError,
    iter_entries,
    read_cpio,
    read_initrd,
    write_cpio,
)
from b2c_builder.build.rootfs import Entry, Kind, Rootfs
from b2c_builder.config import Arch, Compression
from b2c_builder.errors import RootfsError
from b2c_builder.run import run

SDE = 1_600_000_000  # 2020-09-13: `-tv` listings show a year, not a time of day


def sample_manifest() -> Rootfs:
    """One of everything the image can hold, with sizes that exercise every padding."""
    m = Rootfs()
    m.add_file("usr/bin/tool", bytes(range(256)) * 9, 0o755)
    m.add_file("usr/bin/su", b"setuid", 0o4755)
    m.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    for size in range(6):
        m.add_file(f"pad/size{size}", b"x" * size, 0o600)
    m.add_file("usr/lib/hl", b"hard linked data\n", 0o755)
    m.add_hardlink("usr/bin/hl1", "usr/lib/hl")
    m.add_hardlink("usr/sbin/hl2", "usr/lib/hl")
    m.add_symlink("bin", "usr/bin")
    m.add_symlink("lib64/ld-linux-x86-64.so.2", "../usr/lib/ld.so")
    m.add_device("dev/console", Kind.CHAR, 5, 1)
    m.add_device("dev/null", Kind.CHAR, 1, 3, 0o666)
    m.add_device("dev/vda", Kind.BLOCK, 254, 0, 0o660)
    m.add(Entry("run/initctl", Kind.FIFO, 0o600))
    m.add_dir("tmp", 0o1777)
    m.add_dir("var/tmp", 0o1777)
    m.add(Entry("home/user", Kind.DIR, 0o700, uid=1000, gid=1000))
    m.add(Entry("home/user/.profile", Kind.FILE, 0o644, data=b"PS1='$ '\n", uid=1000, gid=100))
    m.add_file("etc/old", b"old", mtime=SDE - 86400)  # older than the epoch: kept
    m.add_file("etc/new", b"new", mtime=SDE + 86400)  # newer: clamped
    return m


def archive(entries: Rootfs | list[Entry], sde: int = SDE) -> bytes:
    out = io.BytesIO()
    written = write_cpio(entries, out, source_date_epoch=sde)
    assert written == len(out.getvalue())
    return out.getvalue()


def expected_mtime(entry: Entry, sde: int = SDE) -> int:
    return sde if entry.mtime is None else min(entry.mtime, sde)


def expected_payload(entry: Entry) -> bytes:
    return entry.target.encode() if entry.kind is Kind.SYMLINK else entry.data


# --------------------------------------------------------------------------- own reader


def test_round_trip_through_our_reader() -> None:
    manifest = sample_manifest()
    data = archive(manifest)
    assert len(data) % 4 == 0
    got = read_cpio(data)
    assert [e.name for e in got] == [e.path for e in manifest]
    groups: dict[str, list[CpioEntry]] = {}
    for entry, cpio in zip(manifest, got, strict=True):
        assert cpio.mode == entry.full_mode, entry.path
        assert cpio.kind is entry.kind
        assert (cpio.uid, cpio.gid) == (entry.uid, entry.gid)
        assert cpio.mtime == expected_mtime(entry)
        assert cpio.dev == (0, 0)
        if entry.kind in (Kind.CHAR, Kind.BLOCK):
            assert cpio.rdev == entry.rdev
        else:
            assert cpio.rdev == (0, 0)
        if entry.kind is Kind.SYMLINK:
            assert cpio.target == entry.target
        if entry.link_group is not None:
            groups.setdefault(entry.link_group, []).append(cpio)
        else:
            assert cpio.data == expected_payload(entry)
    assert list(groups) == ["usr/lib/hl"]
    members = groups["usr/lib/hl"]
    assert [m.name for m in members] == ["usr/bin/hl1", "usr/lib/hl", "usr/sbin/hl2"]
    assert {m.ino for m in members} == {members[0].ino}
    assert {m.nlink for m in members} == {3}
    # GNU cpio convention: the data travels with the last member only.
    assert [m.data for m in members] == [b"", b"", b"hard linked data\n"]


def test_inodes_are_sequential_in_write_order() -> None:
    got = read_cpio(archive(sample_manifest()))
    first_seen: list[int] = []
    for entry in got:
        if entry.ino not in first_seen:
            first_seen.append(entry.ino)
    assert first_seen == list(range(1, len(first_seen) + 1))
    assert len(first_seen) == len(got) - 2  # two extra names for one hard-linked inode


def test_link_counts() -> None:
    got = {e.name: e for e in read_cpio(archive(sample_manifest()))}
    assert got["usr"].nlink == 2 + 3  # usr/bin, usr/lib, usr/sbin
    assert got["usr/bin"].nlink == 2
    assert got["etc/passwd"].nlink == 1
    assert got["bin"].nlink == 1


def test_sorted_with_parents_first() -> None:
    names = [e.name for e in read_cpio(archive(sample_manifest()))]
    assert names == sorted(names, key=lambda n: n.split("/"))
    seen: set[str] = set()
    for name in names:
        parent = posixpath.dirname(name)
        assert not parent or parent in seen, f"{name} comes before its parent"
        assert not name.startswith("/")
        seen.add(name)


def test_mtime_clamping() -> None:
    got = {e.name: e for e in read_cpio(archive(sample_manifest()))}
    assert got["etc/old"].mtime == SDE - 86400
    assert got["etc/new"].mtime == SDE
    assert got["etc/passwd"].mtime == SDE  # no mtime: the epoch


def test_deterministic_bytes() -> None:
    assert archive(sample_manifest()) == archive(sample_manifest())
    # Host mtimes newer than the epoch are the usual leak: first show that they change the
    # bytes when nothing clamps them, then that clamping makes the archives identical.
    now = 1_700_000_000

    def stamped(mtime: int) -> list[Entry]:
        return [dataclasses.replace(e, mtime=mtime) for e in sample_manifest()]

    far_future = 2_000_000_000
    assert archive(stamped(now), far_future) != archive(stamped(now + 1), far_future)
    assert archive(stamped(now), SDE) == archive(stamped(now + 1), SDE)
    assert archive(sample_manifest(), SDE) != archive(sample_manifest(), SDE + 1)


def test_non_utf8_names_round_trip() -> None:
    m = Rootfs()
    name = b"etc/caf\xe9".decode("utf-8", "surrogateescape")
    m.add_file(name, b"latin-1 name")
    data = archive(m)
    assert b"etc/caf\xe9\x00" in data
    assert read_cpio(data)[-1].name == name


# --------------------------------------------------------------------------- GNU cpio, bsdtar

LISTING = re.compile(
    r"^(?P<mode>[-a-z][-rwxsStT]{9})\s+(?P<nlink>\d+)\s+(?P<uid>\d+)\s+(?P<gid>\d+)\s+"
    r"(?:(?P<major>\d+),\s*(?P<minor>\d+)|(?P<size>\d+))\s+"
    r"\w{3}\s+\d+\s+\d{4}\s+(?P<rest>.*)$"
)


@dataclasses.dataclass(frozen=True)
class Listed:
    name: str
    mode: str
    uid: int
    gid: int
    rdev: tuple[int, int] | None
    target: str | None  # symlink target


def parse_listing(text: str) -> list[Listed]:
    """`cpio -itvn` / `bsdtar -tvf --numeric-owner` lines, in archive order."""
    rows = []
    for line in text.splitlines():
        match = LISTING.match(line)
        assert match, f"unexpected listing line {line!r}"
        rest = match["rest"]
        target = None
        if match["mode"].startswith("l"):
            rest, target = rest.split(" -> ", 1)
        rest = rest.split(" link to ", 1)[0]  # bsdtar marks later hard-link members
        rdev = (int(match["major"]), int(match["minor"])) if match["major"] else None
        rows.append(Listed(rest, match["mode"], int(match["uid"]), int(match["gid"]), rdev, target))
    return rows


def expected_listing(manifest: Rootfs) -> list[Listed]:
    return [
        Listed(
            e.path,
            stat.filemode(e.full_mode),
            e.uid,
            e.gid,
            e.rdev if e.kind in (Kind.CHAR, Kind.BLOCK) else None,
            e.target if e.kind is Kind.SYMLINK else None,
        )
        for e in manifest
    ]


def test_gnu_cpio_lists_the_same_entries() -> None:
    manifest = sample_manifest()
    data = archive(manifest)
    names = run(["cpio", "-it", "--quiet"], input=data, reason="list a cpio archive")
    assert names.stdout.decode().splitlines() == [e.path for e in manifest]
    listing = run(["cpio", "-itvn", "--quiet"], input=data, reason="list a cpio archive")
    assert parse_listing(listing.stdout.decode()) == expected_listing(manifest)


def test_bsdtar_lists_the_same_entries() -> None:
    manifest = sample_manifest()
    proc = run(
        ["bsdtar", "-tvf", "-", "--numeric-owner"],
        input=archive(manifest),
        reason="list a cpio archive",
    )
    assert parse_listing(proc.stdout.decode()) == expected_listing(manifest)
    assert "usr/sbin/hl2 link to usr/bin/hl1" in proc.stdout.decode()


def can_mknod(directory: Path) -> bool:
    probe = directory / "mknod-probe"
    try:
        os.mknod(probe, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError:
        return False
    probe.unlink()
    return True


EXTRACTORS = {
    "gnu-cpio": lambda d: ["cpio", "-idm", "--quiet", "--no-absolute-filenames", "-D", str(d)],
    "bsdtar": lambda d: ["bsdtar", "-xpf", "-", "--numeric-owner", "-C", str(d)],
}


@pytest.mark.parametrize("tool", sorted(EXTRACTORS))
def test_extracted_tree_matches(tool: str, tmp_path: Path) -> None:
    manifest = sample_manifest()
    root = tmp_path / "root"
    root.mkdir()
    devices_possible = can_mknod(tmp_path)
    proc = run(
        EXTRACTORS[tool](root),
        input=archive(manifest),
        reason="extract a cpio archive",
        check=not devices_possible,  # without CAP_MKNOD the device nodes fail, nothing else
    )
    as_root = os.geteuid() == 0
    inodes: dict[str, set[int]] = {}
    for entry in manifest:
        path = root / entry.path
        if entry.kind in (Kind.CHAR, Kind.BLOCK) and not devices_possible:
            assert entry.path in proc.stderr.decode()
            continue
        st_ = os.lstat(path)
        assert stat.S_IFMT(st_.st_mode) == entry.kind.type_bits(), entry.path
        if entry.kind is not Kind.SYMLINK:
            assert stat.S_IMODE(st_.st_mode) == entry.mode, entry.path
        if as_root:
            assert (st_.st_uid, st_.st_gid) == (entry.uid, entry.gid), entry.path
        if entry.kind is Kind.FILE:
            assert path.read_bytes() == entry.data, entry.path
            assert st_.st_mtime == expected_mtime(entry), entry.path
        if entry.kind is Kind.SYMLINK:
            assert os.readlink(path) == entry.target
        if entry.kind in (Kind.CHAR, Kind.BLOCK):
            assert (os.major(st_.st_rdev), os.minor(st_.st_rdev)) == entry.rdev
        if entry.link_group is not None:
            assert st_.st_nlink == 3
            inodes.setdefault(entry.link_group, set()).add(st_.st_ino)
    assert [len(group) for group in inodes.values()] == [1], "hard links became copies"


@pytest.mark.parametrize("tool", ["gnu-cpio", "bsdtar"])
def test_reader_reads_archives_of_other_writers(tool: str, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"hello\n")
    os.link(tmp_path / "d" / "f", tmp_path / "d" / "g")
    os.symlink("d/f", tmp_path / "l")
    os.mkfifo(tmp_path / "p")
    names = ["d", "d/f", "d/g", "l", "p"]
    if tool == "gnu-cpio":
        cmd = ["cpio", "-o", "-H", "newc", "--quiet", "-D", str(tmp_path)]
        proc = run(cmd, input="\n".join(names).encode() + b"\n", reason="write a cpio archive")
    else:
        cmd = ["bsdtar", "--format", "newc", "-n", "-cf", "-", "-C", str(tmp_path), *names]
        proc = run(cmd, reason="write a cpio archive")
    assert len(proc.stdout) % 512 == 0  # both pad the archive to whole blocks
    got = {e.name: e for e in read_cpio(proc.stdout)}
    assert sorted(got) == names
    assert stat.S_ISDIR(got["d"].mode)
    assert got["l"].target == "d/f"
    assert got["p"].kind is Kind.FIFO
    assert got["d/f"].ino == got["d/g"].ino
    assert {got["d/f"].nlink, got["d/g"].nlink} == {2}
    assert got["d/f"].data + got["d/g"].data == b"hello\n"  # once, in one of the members
    assert [e.name for e in iter_entries(proc.stdout * 2)] == [*names, *names]


# --------------------------------------------------------------------------- errors


def test_cpio_error_is_a_manifest_error() -> None:
    assert issubclass(CpioError, RootfsError)


def test_bad_magic() -> None:
    with pytest.raises(CpioError, match="bad cpio magic"):
        read_cpio(b"not a cpio archive at all, but long enough to hold a header" * 3)


def test_compressed_input_gets_a_hint() -> None:
    data = compress.compress(archive(sample_manifest()), Compression.zstd, Arch.amd64)
    with pytest.raises(CpioError) as info:
        read_cpio(data)
    assert "zstd-compressed" in str(info.value)
    assert len(read_initrd(data)) == len(sample_manifest())


def test_odc_gets_a_hint() -> None:
    with pytest.raises(CpioError, match="odc"):
        read_cpio(b"070707" + b"0" * 200)


@pytest.mark.parametrize("cut", [0, 50, 110, 115, 200, -200, -5])
def test_truncation_is_detected(cut: int) -> None:
    data = archive(sample_manifest())
    with pytest.raises(CpioError, match="truncated"):
        read_cpio(data[:cut])


def test_missing_trailer_is_truncation() -> None:
    data = archive(sample_manifest())
    trailer_at = data.rindex(b"070701")
    with pytest.raises(CpioError, match="truncated"):
        read_cpio(data[:trailer_at])


def test_bad_hex_field() -> None:
    data = bytearray(archive(sample_manifest()))
    data[6 + 8 : 6 + 16] = b"0000x1ED"  # the mode of the first entry
    with pytest.raises(CpioError, match="field mode"):
        read_cpio(bytes(data))


def test_crc_format_is_read_and_checked() -> None:
    data = bytearray(archive([Entry("f", Kind.FILE, 0o644, data=b"abc")]))
    data[:6] = b"070702"
    data[6 + 12 * 8 : 6 + 13 * 8] = b"%08X" % sum(b"abc")
    assert read_cpio(bytes(data))[0].data == b"abc"
    data[6 + 12 * 8 : 6 + 13 * 8] = b"%08X" % (sum(b"abc") + 1)
    with pytest.raises(CpioError, match="checksum"):
        read_cpio(bytes(data))


def test_field_overflow_is_refused() -> None:
    with pytest.raises(CpioError, match="uid"):
        archive([Entry("f", Kind.FILE, 0o644, uid=2**32)])


def test_duplicate_and_unnormalised_paths_are_refused() -> None:
    entry = Entry("etc/f", Kind.FILE, 0o644)
    with pytest.raises(CpioError, match="twice"):
        archive([entry, entry])
    with pytest.raises(CpioError, match="canonical"):
        archive([Entry("/etc/f", Kind.FILE, 0o644)])


def test_file_type_bits_in_mode_are_refused() -> None:
    with pytest.raises(CpioError, match="permission bits"):
        archive([Entry("f", Kind.FILE, stat.S_IFREG | 0o644)])


def test_inconsistent_hard_links_are_refused() -> None:
    a = Entry("a", Kind.FILE, 0o644, data=b"one", link_group="a")
    b = dataclasses.replace(a, path="b", data=b"two")
    with pytest.raises(CpioError, match="differ"):
        archive([a, b])


@dataclasses.dataclass(frozen=True)
class LyingEntry(Entry):
    """An entry whose declared size disagrees with its data, as a broken source would."""

    @property
    def size(self) -> int:
        return len(self.data) + 1


def test_writer_checks_declared_size() -> None:
    with pytest.raises(CpioError, match="declares"):
        archive([LyingEntry("f", Kind.FILE, 0o644, data=b"data")])


# --------------------------------------------------------------------------- concatenation


def test_concatenated_archives_raw_and_compressed() -> None:
    base = sample_manifest()
    extra = Rootfs()
    extra.add_file("lib/modules/x.ko", b"\x7fELF module", 0o644)
    extra.add_file("etc/passwd", b"replaced\n")
    raw_base, raw_extra = archive(base), archive(extra)
    initrd = (
        raw_base
        + b"\0" * 512  # GNU cpio style block padding
        + compress.compress(raw_extra, Compression.xz, Arch.amd64)
        + b"\0" * 3
        + compress.compress(raw_extra + b"\0" * 4 + raw_base, Compression.zstd, Arch.amd64)
        + compress.compress(raw_extra, Compression.gzip, Arch.amd64)
    )
    initrd += b"\0" * (-len(initrd) % 4) + raw_extra
    names = [e.name for e in iter_entries(initrd)]
    base_names = [e.path for e in base]
    extra_names = [e.path for e in extra]
    assert names == (
        base_names + extra_names + extra_names + base_names + extra_names + extra_names
    )
    # Our reader of one archive stops at the first trailer, like GNU cpio.
    assert [e.name for e in read_cpio(initrd)] == base_names
    gnu = run(["cpio", "-it", "--quiet"], input=initrd, reason="list a cpio archive")
    assert gnu.stdout.decode().splitlines() == base_names


def test_unaligned_raw_archive_is_refused() -> None:
    data = archive(sample_manifest())
    with pytest.raises(CpioError, match="aligned"):
        list(iter_entries(data + b"\0" * 2 + data))


def test_garbage_between_archives_is_refused() -> None:
    data = archive(sample_manifest())
    with pytest.raises(compress.CompressError, match="unknown data"):
        list(iter_entries(data + b"junk"))


# --------------------------------------------------------------------------- property

names = st.text(alphabet="abc.-_é", min_size=1, max_size=4).filter(lambda s: s not in (".", ".."))
paths = st.lists(names, min_size=1, max_size=4).map("/".join)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from(list(Kind)))
    path = draw(paths)
    mode = 0o777 if kind is Kind.SYMLINK else draw(st.integers(0, 0o7777))
    return Entry(
        path,
        kind,
        mode,
        data=draw(st.binary(max_size=40)) if kind is Kind.FILE else b"",
        target=draw(paths) if kind is Kind.SYMLINK else "",
        rdev=draw(st.tuples(st.integers(0, 4095), st.integers(0, 2**20 - 1)))
        if kind in (Kind.CHAR, Kind.BLOCK)
        else (0, 0),
        uid=draw(st.integers(0, 2**32 - 1)),
        gid=draw(st.integers(0, 2**32 - 1)),
        mtime=draw(st.none() | st.integers(-(2**31), 2**32 - 1)),
    )


@st.composite
def manifests(draw: st.DrawFn) -> Rootfs:
    m = Rootfs()
    for entry in draw(st.lists(entries(), max_size=25)):
        try:
            m.add(entry)
        except RootfsError:
            continue  # a file where a directory is needed, or a conflicting path
    files = [e.path for e in m if e.kind is Kind.FILE]
    for path in draw(st.lists(paths, max_size=4)):
        try:
            if files and path not in m:
                m.add_hardlink(path, draw(st.sampled_from(files)))
        except RootfsError:
            continue
    return m


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=manifests(), sde=st.integers(0, 2**32 - 1))
def test_random_manifests_round_trip(manifest: Rootfs, sde: int) -> None:
    data = archive(manifest, sde)
    assert data == archive(manifest, sde)
    got = read_cpio(data)
    assert [e.name for e in got] == [e.path for e in manifest]
    last_member = {e.link_group: e.path for e in manifest if e.link_group}
    for entry, cpio in zip(manifest, got, strict=True):
        assert cpio.mode == entry.full_mode
        assert (cpio.uid, cpio.gid) == (entry.uid, entry.gid)
        assert cpio.mtime == max(expected_mtime(entry, sde), 0)
        if entry.kind in (Kind.CHAR, Kind.BLOCK):
            assert cpio.rdev == entry.rdev
        if entry.link_group is None or last_member[entry.link_group] == entry.path:
            assert cpio.data == expected_payload(entry)
        else:
            assert cpio.data == b""
    assert [e.name for e in iter_entries(data + data)] == [e.path for e in manifest] * 2
