"""Read .deb files in Python (ar + control.tar + data.tar.{xz,zst,gz}) into a staging Rootfs.

Nothing touches the disk: members become manifest entries. A member whose path escapes the
root (``../x``, ``/x``) is refused. Each member's parent directory is
resolved through the staging manifest's symlinks first, so on a merged-/usr staging tree
(see ``new_staging``) ``./lib/x86_64-linux-gnu/libc.so.6`` lands at
``usr/lib/x86_64-linux-gnu/libc.so.6``, as dpkg does on a merged-/usr system.
"""

from __future__ import annotations

import dataclasses
import io
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from debian import deb822

from b2c_builder.build import compress
from b2c_builder.build.compress import CompressError
from b2c_builder.build.rootfs import BUILDER, Entry, Kind, Origin, Rootfs
from b2c_builder.config import Arch
from b2c_builder.errors import ExtractError, RootfsError
from b2c_builder.log import log

AR_MAGIC = b"!<arch>\n"


def new_staging(arch: Arch) -> Rootfs:
    """An empty merged-/usr staging tree: the architecture's usr-merge folders (bin, sbin,
    lib, and lib64 on amd64: ``arch.facts.usrmerge``) are symlinks into usr/."""
    manifest = Rootfs()
    for name in arch.facts.usrmerge:
        manifest.add_dir(f"usr/{name}", origin=BUILDER)
        manifest.add_symlink(name, f"usr/{name}", origin=BUILDER)
    return manifest


def ar_members(data: BinaryIO, source: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each member of an ar archive (the outer format of a .deb)."""
    if data.read(len(AR_MAGIC)) != AR_MAGIC:
        raise ExtractError(f"{source} is not a Debian package (no ar header)")
    while header := data.read(60):
        if len(header) != 60 or header[58:60] != b"`\n":
            raise ExtractError(f"{source}: corrupt ar member header")
        name = header[:16].decode("ascii", "replace").strip().removesuffix("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise ExtractError(f"{source}: corrupt ar member size") from exc
        body = data.read(size)
        if len(body) != size:
            raise ExtractError(f"{source}: truncated ar member {name}")
        if size % 2:
            data.read(1)  # members are aligned on 2 bytes
        yield name, body


_MEMBER_SUFFIXES = (".tar", ".tar.xz", ".tar.zst", ".tar.gz")


def _decompress(name: str, body: bytes, source: str) -> bytes:
    """A control.tar or data.tar member, decompressed by its magic (compress.unpack)."""
    if not name.endswith(_MEMBER_SUFFIXES):
        raise ExtractError(f"{source}: unsupported member compression {name}")
    try:
        return compress.unpack(body)
    except CompressError as exc:
        raise ExtractError(f"{source}: cannot decompress {name}: {exc.message}") from exc


def _tars(deb: Path) -> tuple[bytes, bytes]:
    """The uncompressed control.tar and data.tar of ``deb``."""
    control = data = None
    with deb.open("rb") as f:
        for name, body in ar_members(f, str(deb)):
            if name.startswith("control.tar"):
                control = _decompress(name, body, str(deb))
            elif name.startswith("data.tar"):
                data = _decompress(name, body, str(deb))
    if control is None or data is None:
        raise ExtractError(f"{deb} has no control.tar or no data.tar member")
    return control, data


def read_control(deb: Path) -> dict[str, str]:
    """The fields of the package's DEBIAN/control."""
    return _control_fields(_tars(deb)[0], deb)


def _control_fields(control_tar: bytes, deb: Path) -> dict[str, str]:
    try:
        with tarfile.open(fileobj=io.BytesIO(control_tar)) as tar:
            for member in tar:
                if member.isfile() and posixpath.normpath(member.name) == "control":
                    f = tar.extractfile(member)
                    assert f is not None
                    return dict(deb822.Deb822(f.read().decode("utf-8")))
    except (tarfile.TarError, UnicodeDecodeError) as exc:
        raise ExtractError(f"{deb}: corrupt control.tar: {exc}") from exc
    raise ExtractError(f"{deb} has no control file")


def member_path(name: str, source: str) -> str:
    """The image path of tar member ``name``, refusing any that escapes the root."""
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm == ".." or norm.startswith("../"):
        raise ExtractError(
            f"{source}: member {name!r} escapes the extraction root; refusing the package",
            hint="the package is malicious or corrupt; do not use it",
        )
    return "" if norm == "." else norm


@dataclass(frozen=True)
class Extracted:
    """What one package contributed: its control fields and the paths it added."""

    control: dict[str, str]
    paths: tuple[str, ...]


def extract_into(
    manifest: Rootfs,
    deb: Path,
    origin: Origin,
) -> Extracted:
    """Add every member of ``deb`` to ``manifest``, each at its canonical path.

    A path that already exists keeps its first entry: directories merge and identical
    content is fine. Two packages shipping one path with different contents (which Debian
    forbids unless one Replaces the other) is logged as a warning naming both packages: the
    image could otherwise get a file other than the one a reader of the log expects.
    """
    control_tar, data_tar = _tars(deb)
    control = _control_fields(control_tar, deb)
    try:
        with tarfile.open(fileobj=io.BytesIO(data_tar)) as tar:
            added = _extract(manifest, tar, deb, origin)
    except tarfile.TarError as exc:
        raise ExtractError(f"{deb}: corrupt data.tar: {exc}") from exc
    return Extracted(control, tuple(added))


def _extract(
    manifest: Rootfs,
    tar: tarfile.TarFile,
    deb: Path,
    origin: Origin,
) -> list[str]:
    added: list[str] = []
    members = tar.getmembers()
    for member in members:  # refuse the whole package before adding any of it
        member_path(member.name, str(deb))
        if member.islnk():
            member_path(member.linkname, str(deb))
    for member in members:
        path = member_path(member.name, str(deb))
        if not path:
            continue  # the root directory itself
        try:
            path = _canonical(manifest, path, follow_last=member.isdir())
            if _add_member(manifest, tar, member, path, origin, deb):
                added.append(path)
        except RootfsError as exc:
            raise ExtractError(f"{deb}: cannot add member {member.name!r}: {exc}") from exc
    return added


def _canonical(manifest: Rootfs, path: str, *, follow_last: bool) -> str:
    """``path`` with its parent (and itself, for a directory) resolved through symlinks."""
    if follow_last:
        return manifest.resolve(path, strict=False) or path
    parent, base = posixpath.split(path)
    if not parent:
        return base
    return posixpath.join(manifest.resolve(parent, strict=False) or parent, base)


def _add_member(
    manifest: Rootfs,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    path: str,
    origin: Origin,
    deb: Path,
) -> bool:
    """Add one tar member at ``path``; False when the path was already taken or unsupported."""
    mode, mtime = member.mode & 0o7777, int(member.mtime)
    if member.islnk():
        target = _canonical(manifest, member_path(member.linkname, str(deb)), follow_last=False)
        first = manifest.get(target)
        if first is None or first.kind is not Kind.FILE:
            raise ExtractError(f"{deb}: hard link {member.name!r} to a missing file {target!r}")
        if _taken(manifest, dataclasses.replace(first, path=path), deb):
            return False
        manifest.add_hardlink(path, target)
        return True
    if member.isdir():
        entry = Entry(path, Kind.DIR, mode, mtime=mtime, origin=origin)
    elif member.issym():
        entry = Entry(path, Kind.SYMLINK, 0o777, target=member.linkname, mtime=mtime, origin=origin)
    elif member.isfile():
        f = tar.extractfile(member)
        assert f is not None
        entry = Entry(path, Kind.FILE, mode, data=f.read(), mtime=mtime, origin=origin)
    elif member.type in _DEVICES:
        rdev = (member.devmajor, member.devminor)
        entry = Entry(path, _DEVICES[member.type], mode, rdev=rdev, mtime=mtime, origin=origin)
    else:
        log.debug("%s: skipping member %s of unsupported type %r", deb, member.name, member.type)
        return False
    if _taken(manifest, entry, deb):
        return False
    manifest.add(entry)
    return True


_DEVICES = {tarfile.CHRTYPE: Kind.CHAR, tarfile.BLKTYPE: Kind.BLOCK, tarfile.FIFOTYPE: Kind.FIFO}


def _taken(manifest: Rootfs, entry: Entry, deb: Path) -> bool:
    """Is ``entry.path`` already in the manifest? Warn when the two entries differ."""
    old = manifest.get(entry.path)
    if old is None:
        return False
    if manifest.implicit(entry.path) and entry.kind is Kind.DIR:
        return False  # a parent filled in earlier: the package's own entry replaces it
    if old.kind is Kind.DIR and entry.kind is Kind.DIR:
        if old.mode != entry.mode:
            log.warning(
                "/%s: %s makes it a directory with mode %04o, %s with %04o; keeping %04o",
                entry.path,
                _package(old),
                old.mode,
                _package(entry),
                entry.mode,
                old.mode,
            )
        return True
    if (old.kind, old.data, old.target, old.rdev) != (
        entry.kind,
        entry.data,
        entry.target,
        entry.rdev,
    ):
        log.warning(
            "two packages ship /%s with different contents: %s (%s) and %s (%s, in %s); "
            "keeping the first",
            entry.path,
            _package(old),
            _summary(old),
            _package(entry),
            _summary(entry),
            deb.name,
        )
    return True


def _package(entry: Entry) -> str:
    return entry.origin.package if entry.origin else "the builder"


def _summary(entry: Entry) -> str:
    if entry.kind is Kind.FILE:
        return f"{entry.size} bytes, sha256 {entry.sha256()[:12]}"
    if entry.kind is Kind.SYMLINK:
        return f"symlink to {entry.target}"
    return str(entry.kind)


def extract_to_dir(deb: Path, dest: Path, *, prefixes: tuple[str, ...]) -> list[str]:
    """Write the members of ``deb`` whose path starts with one of ``prefixes`` under ``dest``
    (a build folder, not an image: files keep their modes, owners are ours). The paths
    written, relative to ``dest``.

    An absolute symlink target is made relative, so that it points inside ``dest`` instead of
    at the host; a member (or a link) that would land outside ``dest``, or a device node,
    refuses the package (tarfile's ``data`` filter).
    """
    data_tar = _tars(deb)[1]
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data_tar)) as tar:
            members = []
            for member in tar.getmembers():
                path = member_path(member.name, str(deb))
                if not path.startswith(prefixes) or member.isdev():
                    continue
                member.name = path
                if member.issym() and member.linkname.startswith("/"):
                    member.linkname = posixpath.relpath(
                        member.linkname.lstrip("/") or ".", posixpath.dirname(path) or "."
                    )
                elif member.islnk():
                    member.linkname = member_path(member.linkname, str(deb))
                members.append(member)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise ExtractError(
            f"{deb}: refusing a member: {exc}",
            hint="the package is malicious or corrupt; do not use it",
        ) from exc
    except tarfile.TarError as exc:
        raise ExtractError(f"{deb}: corrupt data.tar: {exc}") from exc
    return [m.name for m in members]
