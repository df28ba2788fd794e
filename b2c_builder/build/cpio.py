"""cpio "newc" archives, the format the kernel unpacks into its initramfs: writer and reader.

The writer is deterministic: entries are written in the order given (a Rootfs yields them
sorted, parents first), inode numbers count from 1 in write order, hard links share the inode
of their group, owners come from the entry, and mtimes are clamped to SOURCE_DATE_EPOCH.
Nothing of the host (uids, inode numbers, readdir order, clocks) can reach the bytes.

Hard links follow the GNU cpio convention that the kernel's unpacker relies on: every member
of a group has the same inode and nlink = group size, and only the last one carries the data.

The reader parses what the kernel parses: one archive (``read_cpio``), or a whole initrd made
of raw and compressed archives one after another with NUL padding between them
(``iter_entries``).
"""

from __future__ import annotations

import posixpath
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from b2c_builder.build import compress
from b2c_builder.build.rootfs import Entry, Kind, normalize
from b2c_builder.config import Compression
from b2c_builder.errors import RootfsError

NEWC_MAGIC = b"070701"
CRC_MAGIC = b"070702"  # newc with a checksum of the data: read, never written
TRAILER = "TRAILER!!!"
HEADER_SIZE = 110
_FIELDS = (
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)
_MAX_FIELD = 0xFFFFFFFF


class CpioError(RootfsError):
    """A cpio archive cannot be written or read (bad magic, truncation, field overflow)."""


class Writable(Protocol):
    """Anything with ``write``: a file, a BytesIO, a compress.CompressedWriter."""

    def write(self, data: bytes, /) -> int | None: ...


def _pad(offset: int) -> int:
    """Bytes of NUL padding that bring ``offset`` to a multiple of 4."""
    return -offset % 4


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------- writer


@dataclass(frozen=True)
class _Slot:
    """What the writer decided for one entry: its inode, link count and whether it has data."""

    ino: int
    nlink: int
    carries_data: bool


def _inode_of(entry: Entry) -> tuple[int, int, int, int | None, bytes]:
    """What hard links to one inode must agree on."""
    return (entry.mode, entry.uid, entry.gid, entry.mtime, entry.data)


def _plan(entries: list[Entry]) -> list[_Slot]:
    """Check the entries and assign inodes, link counts and the data-carrying link member."""
    seen: set[str] = set()
    for entry in entries:
        if not entry.path or normalize(entry.path) != entry.path:
            raise CpioError(
                f"cannot archive {entry.path!r}: not a canonical image path",
                hint="add entries through a Rootfs, which normalises paths",
            )
        if entry.path in seen:
            raise CpioError(f"/{entry.path} appears twice in the archive")
        seen.add(entry.path)
        if entry.link_group is not None and entry.kind is not Kind.FILE:
            raise CpioError(f"/{entry.path}: only regular files can be hard links")
        if entry.mode & ~0o7777:
            raise CpioError(
                f"/{entry.path}: mode {entry.mode:#o} is more than permission bits",
                hint="Entry.mode holds permissions only; the kind gives the file type",
            )

    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        if entry.link_group is not None:
            groups.setdefault(entry.link_group, []).append(entry)
    for name, members in groups.items():
        first = members[0]
        for other in members[1:]:
            if _inode_of(other) != _inode_of(first):
                raise CpioError(
                    f"hard links /{first.path} and /{other.path} (group {name!r}) differ",
                    hint="members of a link group share one inode: same data, mode and owner",
                )
    last_of_group = {name: members[-1].path for name, members in groups.items()}

    subdirs = Counter(posixpath.dirname(e.path) for e in entries if e.kind is Kind.DIR)
    group_ino: dict[str, int] = {}
    slots: list[_Slot] = []
    next_ino = 1
    for entry in entries:
        group = entry.link_group
        if group is not None and group in group_ino:
            ino = group_ino[group]
        else:
            ino = next_ino
            next_ino += 1
            if group is not None:
                group_ino[group] = ino
        if entry.kind is Kind.DIR:
            nlink = 2 + subdirs[entry.path]
        elif group is not None:
            nlink = len(groups[group])
        else:
            nlink = 1
        carries_data = group is None or last_of_group[group] == entry.path
        slots.append(_Slot(ino, nlink, carries_data))
    return slots


def _header(**fields: int) -> bytes:
    values = []
    for name in _FIELDS:
        value = fields.get(name, 0)
        if not 0 <= value <= _MAX_FIELD:
            raise CpioError(f"cpio field {name}={value} does not fit in 32 bits")
        values.append(b"%08X" % value)
    return NEWC_MAGIC + b"".join(values)


class _Counter:
    """Counts the bytes that reach ``out`` and insists that each write is complete."""

    def __init__(self, out: Writable) -> None:
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> None:
        while data:
            n = self.out.write(data)
            done = len(data) if n is None else n  # None: a file-like that writes everything
            if done <= 0:
                raise CpioError("the output stream accepted no data")
            self.count += done
            data = data[done:]


def write_cpio(entries: Iterable[Entry], out: Writable, *, source_date_epoch: int) -> int:
    """Write ``entries`` and the trailer as a newc archive to ``out``; return the bytes written.

    mtime is ``min(entry.mtime, source_date_epoch)`` (never below 0), or source_date_epoch
    when the entry has none. Raises CpioError (a RootfsError) on an inconsistent entry or
    when the data written for an entry differs from the size its header declares.
    """
    items = list(entries)
    slots = _plan(items)
    counter = _Counter(out)
    for entry, slot in zip(items, slots, strict=True):
        if entry.kind is Kind.FILE:
            payload = entry.data if slot.carries_data else b""
            declared = entry.size if slot.carries_data else 0
        elif entry.kind is Kind.SYMLINK:
            payload = _encode(entry.target)
            declared = len(payload)
        else:
            payload, declared = b"", 0
        mtime = source_date_epoch if entry.mtime is None else min(entry.mtime, source_date_epoch)
        device = entry.kind in (Kind.CHAR, Kind.BLOCK)
        header = _header(
            ino=slot.ino,
            mode=entry.full_mode,
            uid=entry.uid,
            gid=entry.gid,
            nlink=slot.nlink,
            mtime=max(mtime, 0),
            filesize=declared,
            rdevmajor=entry.rdev[0] if device else 0,
            rdevminor=entry.rdev[1] if device else 0,
            namesize=len(_encode(entry.path)) + 1,
        )
        name = _encode(entry.path) + b"\0"
        counter.write(header + name + b"\0" * _pad(len(header) + len(name)))
        before = counter.count
        counter.write(payload)
        if counter.count - before != declared:
            raise CpioError(
                f"/{entry.path}: wrote {counter.count - before} bytes of data, "
                f"the header declares {declared}"
            )
        counter.write(b"\0" * _pad(declared))
    trailer = _encode(TRAILER) + b"\0"
    header = _header(nlink=1, namesize=len(trailer))
    counter.write(header + trailer + b"\0" * _pad(len(header) + len(trailer)))
    return counter.count


# ---------------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class CpioEntry:
    """One member of an archive as the kernel sees it."""

    name: str
    mode: int  # with the S_IFMT bits
    uid: int
    gid: int
    nlink: int
    mtime: int
    ino: int
    dev: tuple[int, int]
    rdev: tuple[int, int]
    data: bytes  # file contents, or the symlink target

    @property
    def kind(self) -> Kind | None:
        """The manifest kind of this entry, None for types a manifest cannot hold (sockets)."""
        for kind in Kind:
            if stat.S_IFMT(self.mode) == kind.type_bits():
                return kind
        return None

    @property
    def perm(self) -> int:
        return stat.S_IMODE(self.mode)

    @property
    def target(self) -> str:
        if not stat.S_ISLNK(self.mode):
            raise CpioError(f"{self.name} is not a symlink")
        return _decode(self.data)


def _field(raw: bytes, name: str, offset: int) -> int:
    if raw.strip(b"0123456789abcdefABCDEF"):
        raise CpioError(f"cpio header at offset {offset}: field {name} is {raw!r}, not hex")
    return int(raw, 16)


def _take(buf: bytes, pos: int, size: int, what: str) -> bytes:
    if pos + size > len(buf):
        raise CpioError(
            f"truncated cpio archive: {what} at offset {pos} needs {size} bytes, "
            f"only {max(len(buf) - pos, 0)} left",
            hint="the archive was cut short; rebuild or download it again",
        )
    return buf[pos : pos + size]


def _parse_archive(buf: bytes, pos: int) -> tuple[list[CpioEntry], int]:
    """Parse one archive starting at ``pos``; return its entries and the offset after it.

    Padding is computed from the start of ``buf``, like the kernel does: an archive must start
    at an offset that is a multiple of 4.
    """
    entries: list[CpioEntry] = []
    while True:
        start = pos
        header = _take(buf, pos, HEADER_SIZE, "a header")
        magic = header[:6]
        if magic not in (NEWC_MAGIC, CRC_MAGIC):
            raise CpioError(
                f"bad cpio magic {magic!r} at offset {start}",
                hint=_magic_hint(header),
            )
        raw = [header[6 + 8 * i : 14 + 8 * i] for i in range(len(_FIELDS))]
        f = {name: _field(value, name, start) for name, value in zip(_FIELDS, raw, strict=True)}
        pos += HEADER_SIZE
        if f["namesize"] < 1:
            raise CpioError(f"cpio header at offset {start} has an empty name")
        name_raw = _take(buf, pos, f["namesize"], "a name")
        if name_raw[-1:] != b"\0" or b"\0" in name_raw[:-1]:
            raise CpioError(f"cpio name at offset {pos} is not NUL-terminated: {name_raw!r}")
        name = _decode(name_raw[:-1])
        pos += f["namesize"] + _pad(pos + f["namesize"])
        data = _take(buf, pos, f["filesize"], f"the data of {name!r}")
        pos += f["filesize"] + _pad(pos + f["filesize"])
        if magic == CRC_MAGIC and sum(data) & _MAX_FIELD != f["check"]:
            raise CpioError(f"checksum mismatch for {name!r} at offset {start}")
        if name == TRAILER:
            return entries, pos
        entries.append(
            CpioEntry(
                name=name,
                mode=f["mode"],
                uid=f["uid"],
                gid=f["gid"],
                nlink=f["nlink"],
                mtime=f["mtime"],
                ino=f["ino"],
                dev=(f["devmajor"], f["devminor"]),
                rdev=(f["rdevmajor"], f["rdevminor"]),
                data=data,
            )
        )


def _magic_hint(header: bytes) -> str:
    if header.startswith(b"070707"):
        return "this is an odc (-H odc) archive; the kernel only reads newc"
    kind = compress.sniff(header)
    if kind is not None and kind is not Compression.none:
        return f"the data is {kind}-compressed: decompress it first, or use iter_entries()"
    return "not a newc cpio archive (cpio -H newc)"


def read_cpio(data: bytes | BinaryIO) -> list[CpioEntry]:
    """The entries of the first newc archive in ``data``, up to its TRAILER!!!."""
    buf = data if isinstance(data, bytes) else data.read()
    entries, _ = _parse_archive(buf, 0)
    return entries


def _iter_raw(buf: bytes) -> Iterator[CpioEntry]:
    """Entries of uncompressed archives one after another, NUL padding between them."""
    pos = 0
    while pos < len(buf):
        if buf[pos] == 0:
            pos += 1
            continue
        if pos % 4:
            raise CpioError(f"cpio archive at offset {pos} is not aligned to 4 bytes")
        entries, pos = _parse_archive(buf, pos)
        yield from entries


def iter_entries(data: bytes | BinaryIO) -> Iterator[CpioEntry]:
    """Every entry of every archive in an initrd, in order, the way the kernel reads it.

    An initrd is raw newc archives and compressed streams (gzip, xz, zstd) of such archives,
    one after another, with optional NUL padding between them. Later entries of the same name
    replace earlier ones when the kernel unpacks them; this yields them all.
    """
    buf = data if isinstance(data, bytes) else data.read()
    pos = 0
    while pos < len(buf):
        if buf[pos] == 0:
            pos += 1
            continue
        if buf.startswith(b"07070", pos):
            if pos % 4:
                raise CpioError(
                    f"cpio archive at offset {pos} is not aligned to 4 bytes",
                    hint="the kernel only looks for an uncompressed archive at such offsets",
                )
            entries, pos = _parse_archive(buf, pos)
            yield from entries
            continue
        plain, pos = compress.decompress_stream(buf, pos)
        yield from _iter_raw(plain)


def read_initrd(data: bytes | BinaryIO) -> list[CpioEntry]:
    """All entries of a (possibly compressed, possibly concatenated) initrd as a list."""
    return list(iter_entries(data))
