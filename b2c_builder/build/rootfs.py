"""The rootfs manifest: archive path -> entry. No files on disk, no root, no mknod.

Paths are stored relative to the image root, without a leading slash ("usr/bin/podman").
Missing parents are filled in as 0755 directories (an explicit directory entry added later
replaces them), conflicting entries are errors (two directories with different modes or
owners included), iteration is sorted so that parents always come before their children.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from b2c_builder.errors import RootfsError


class Kind(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"

    def type_bits(self) -> int:
        """The S_IFMT bits of this kind, as cpio and stat(2) spell them."""
        return {
            Kind.FILE: stat.S_IFREG,
            Kind.DIR: stat.S_IFDIR,
            Kind.SYMLINK: stat.S_IFLNK,
            Kind.CHAR: stat.S_IFCHR,
            Kind.BLOCK: stat.S_IFBLK,
            Kind.FIFO: stat.S_IFIFO,
        }[self]


@dataclass(frozen=True)
class Origin:
    """Where an entry came from: a Debian package and version, or the builder itself."""

    package: str
    version: str


BUILDER = Origin("b2c-builder", "generated")
# Symlinks one path resolution may cross before it counts as a loop (Linux's MAXSYMLINKS).
MAX_SYMLINKS = 40


@dataclass(frozen=True)
class Entry:
    path: str
    kind: Kind
    mode: int  # permission bits only (no S_IFMT)
    data: bytes = b""  # FILE contents
    target: str = ""  # SYMLINK target
    rdev: tuple[int, int] = (0, 0)  # CHAR/BLOCK major, minor
    uid: int = 0
    gid: int = 0
    mtime: int | None = None  # None: the build's SOURCE_DATE_EPOCH
    origin: Origin | None = None
    link_group: str | None = None  # FILE entries sharing data (hardlinks) name the first path

    @property
    def size(self) -> int:
        if self.kind is Kind.FILE:
            return len(self.data)
        if self.kind is Kind.SYMLINK:
            return len(self.target.encode())
        return 0

    @property
    def full_mode(self) -> int:
        return self.kind.type_bits() | self.mode

    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def normalize(path: str, *, clamp: bool = False) -> str:
    """Canonical manifest spelling of ``path``: no leading slash, no '.', no '..' escape.

    A '..' above the root is an error, unless ``clamp`` (symlink targets): then it stays at
    the root, as the kernel resolves paths inside a chroot.
    """
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            elif not clamp:
                raise RootfsError(f"path {path!r} escapes the image root")
            continue
        parts.append(part)
    return "/".join(parts)


def link_target(link_dir: str, target: str) -> str:
    """Where a symlink in ``link_dir`` pointing at ``target`` leads, inside the image."""
    base = "" if target.startswith("/") else link_dir
    return normalize(f"{base}/{target}", clamp=True)


@dataclass
class Rootfs:
    """An in-memory image: add entries, then iterate them sorted."""

    entries: dict[str, Entry] = field(default_factory=dict)
    # Directories filled in as parents, not added by anyone: an explicit entry replaces them.
    _implicit: set[str] = field(default_factory=set, repr=False, compare=False)

    def __contains__(self, path: str) -> bool:
        return normalize(path) in self.entries

    def __getitem__(self, path: str) -> Entry:
        return self.entries[normalize(path)]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        # Sorting by path components puts every parent right before its children.
        for key in sorted(self.entries, key=lambda p: p.split("/")):
            yield self.entries[key]

    def get(self, path: str) -> Entry | None:
        return self.entries.get(normalize(path))

    def add(self, entry: Entry, *, replace: bool = False) -> Entry:
        path = normalize(entry.path)
        if not path:
            raise RootfsError("the image root itself cannot be an entry")
        if path != entry.path:
            entry = dataclasses.replace(entry, path=path)
        self._add_parents(path)
        old = self.entries.get(path)
        filled_in = path in self._implicit and entry.kind is Kind.DIR
        if old is not None and not replace and old != entry and not filled_in:
            if not (old.kind is Kind.DIR and entry.kind is Kind.DIR):
                raise RootfsError(
                    f"conflicting entries for /{path}: {_describe(old)} vs {_describe(entry)}",
                    hint="two sources provide the same path; drop one of them",
                )
            if (old.mode, old.uid, old.gid) != (entry.mode, entry.uid, entry.gid):
                raise RootfsError(
                    f"conflicting directory entries for /{path}: {_describe(old)} vs "
                    f"{_describe(entry)}",
                    hint="two sources give the directory different modes or owners; "
                    "make them agree",
                )
            return old  # the same directory (its mtime or origin aside): the first stays
        self._implicit.discard(path)
        self.entries[path] = entry
        return entry

    def _add_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        missing: list[str] = []
        while parent:
            existing = self.entries.get(parent)
            if existing is not None:
                if existing.kind is not Kind.DIR:
                    raise RootfsError(
                        f"/{parent} is a {existing.kind} but /{path} needs it to be a directory",
                        hint="add files under the canonical (resolved) path",
                    )
                break
            missing.append(parent)
            parent = posixpath.dirname(parent)
        for p in missing:
            self.entries[p] = Entry(p, Kind.DIR, 0o755, origin=BUILDER)
            self._implicit.add(p)

    def implicit(self, path: str) -> bool:
        """Was the directory at ``path`` only filled in as a parent (no one added it)?"""
        return normalize(path) in self._implicit

    def add_file(
        self,
        path: str,
        data: bytes,
        mode: int = 0o644,
        *,
        origin: Origin | None = BUILDER,
        mtime: int | None = None,
        replace: bool = False,
    ) -> Entry:
        return self.add(
            Entry(path, Kind.FILE, mode, data=data, origin=origin, mtime=mtime), replace=replace
        )

    def add_dir(self, path: str, mode: int = 0o755, *, origin: Origin | None = BUILDER) -> Entry:
        return self.add(Entry(path, Kind.DIR, mode, origin=origin))

    def add_symlink(
        self, path: str, target: str, *, origin: Origin | None = BUILDER, replace: bool = False
    ) -> Entry:
        return self.add(
            Entry(path, Kind.SYMLINK, 0o777, target=target, origin=origin), replace=replace
        )

    def add_device(self, path: str, kind: Kind, major: int, minor: int, mode: int = 0o600) -> Entry:
        if kind not in (Kind.CHAR, Kind.BLOCK):
            raise RootfsError(f"/{path}: a device node must be char or block, not {kind}")
        return self.add(Entry(path, kind, mode, rdev=(major, minor), origin=BUILDER))

    def add_hardlink(self, path: str, existing: str) -> Entry:
        """Make ``path`` a hard link to the regular file ``existing``."""
        first = self[existing]
        if first.kind is not Kind.FILE:
            raise RootfsError(f"/{path}: cannot hard-link to /{first.path}, a {first.kind}")
        group = first.link_group or first.path
        if first.link_group is None:
            self.entries[first.path] = dataclasses.replace(first, link_group=group)
        return self.add(dataclasses.replace(first, path=path, link_group=group))

    def read(self, path: str) -> bytes:
        """Contents of the regular file at the (resolved) ``path``."""
        entry = self.entries.get(normalize(path))
        if entry is None or entry.kind is not Kind.FILE:
            raise RootfsError(f"/{normalize(path)} is not a regular file in the image")
        return entry.data

    def resolve(
        self,
        path: str,
        *,
        strict: bool = True,
        on_link: Callable[[Entry], None] | None = None,
    ) -> str | None:
        """Follow symlinks inside the image (absolute targets are image-rooted).

        With ``strict`` a missing component gives None; without it the missing rest of the
        path is kept as spelled, which gives the canonical place to add a new entry.
        ``on_link`` is called with every symlink the resolution goes through.
        """
        parts = normalize(path).split("/") if normalize(path) else []
        done: list[str] = []
        links = 0
        while parts:
            part = parts.pop(0)
            current = "/".join([*done, part])
            entry = self.entries.get(current)
            if entry is None:
                if strict:
                    return None
                return "/".join([*done, part, *parts])
            if entry.kind is Kind.SYMLINK:
                links += 1
                if links > MAX_SYMLINKS:
                    return None
                if on_link is not None:
                    on_link(entry)
                target = link_target("/".join(done), entry.target)
                parts = (target.split("/") if target else []) + parts
                done = []
                continue
            done.append(part)
        return "/".join(done)


def _describe(entry: Entry) -> str:
    origin = f" from {entry.origin.package}" if entry.origin else ""
    if entry.kind is Kind.DIR:
        return f"directory (mode {entry.mode:04o}, owner {entry.uid}:{entry.gid}){origin}"
    if entry.kind is Kind.SYMLINK:
        return f"symlink -> {entry.target}{origin}"
    if entry.kind is Kind.FILE:
        return f"file ({entry.size} bytes, sha256 {entry.sha256()[:12]}){origin}"
    return f"{entry.kind}{origin}"
