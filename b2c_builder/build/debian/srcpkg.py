"""Source packages: the Sources index, .dsc files, verified downloads, unpacking, patches.

Trust flows as for binary packages, one more link long: the signed InRelease gives the
SHA256 of ``main/source/Sources.xz``; a Sources stanza gives the SHA256 of the .dsc and of
every file it names; the .dsc's own ``Checksums-Sha256`` must agree with the stanza, and
each tarball is checked against both before it is unpacked. The .dsc's OpenPGP signature
(the uploader's) is not checked: the archive's signature over Sources already covers it.

Unpacking follows dpkg-source(1) for the formats Debian uses for Go programs:

- ``3.0 (quilt)``: the ``.orig.tar.*`` tarball (its single top-level folder stripped),
  every ``.orig-COMPONENT.tar.*`` into ``COMPONENT/``, then ``.debian.tar.*`` (which holds
  ``debian/``), then the patches listed in ``debian/patches/series`` in order, each with
  ``patch -p1`` (or the ``-pN`` given on its series line) and no fuzz, as dpkg-source does;
- ``3.0 (native)``: the single ``.tar.*``, top-level folder stripped.

A tar member whose path escapes the destination, or that is a link pointing out of it, or a
device node, makes the whole package refused.
"""

from __future__ import annotations

import io
import posixpath
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import requests
import zstandard
from debian import deb822

from b2c_builder.errors import ExtractError, FetchError, ResolveError, VerifyError
from b2c_builder.log import log, step
from b2c_builder.run import run

from . import download
from .index import (
    COMPONENT,
    Alternatives,
    FileRef,
    Release,
    _field,
    _relations,
    index_file,
    listed_file,
)

SOURCES_PATH = f"{COMPONENT}/source/Sources.xz"
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~_:-]*$")  # no '/' and no leading '.'


@dataclass(frozen=True)
class SourcePackage:
    """One stanza of a Sources index: a source package and the files of its upload."""

    name: str
    version: str
    directory: str  # pool folder, relative to the mirror: "pool/main/p/podman"
    files: tuple[FileRef, ...]  # the .dsc and every tarball; path = the bare file name
    build_depends: tuple[Alternatives, ...]
    binaries: tuple[str, ...]
    format: str = ""
    go_import_path: str = ""

    @property
    def dsc(self) -> FileRef:
        dscs = [f for f in self.files if f.path.endswith(".dsc")]
        if len(dscs) != 1:
            raise VerifyError(f"source {self.name} {self.version} lists {len(dscs)} .dsc files")
        return dscs[0]

    @classmethod
    def from_stanza(cls, text: str) -> SourcePackage:
        """Parse one Sources stanza (Debian policy 5.5; ``Package`` names the source)."""
        stanza = deb822.Deb822(text)
        try:
            files = _checksums(stanza, f"Sources stanza of {stanza.get('Package', '?')}")
            return cls(
                name=stanza["Package"],
                version=stanza["Version"],
                directory=stanza["Directory"].strip("/"),
                files=files,
                build_depends=_relations(stanza.get("Build-Depends", "")),
                binaries=tuple(b.strip() for b in stanza.get("Binary", "").split(",") if b),
                format=stanza.get("Format", ""),
                go_import_path=stanza.get("Go-Import-Path", "").split(",")[0].strip(),
            )
        except (KeyError, ValueError) as exc:
            raise VerifyError(
                f"malformed Sources stanza for {stanza.get('Package', '?')}: {exc!r}"
            ) from exc


def _checksums(stanza: deb822.Deb822, source: str) -> tuple[FileRef, ...]:
    """The ``Checksums-Sha256`` list of a Sources stanza or a .dsc, names checked."""
    files = []
    for line in stanza.get("Checksums-Sha256", "").strip().splitlines():
        words = line.split()
        if len(words) != 3 or not _FILE_NAME.match(words[2]):
            raise VerifyError(f"{source}: bad Checksums-Sha256 line {line.strip()!r}")
        files.append(FileRef(words[2], words[0].lower(), int(words[1])))
    if not files:
        raise VerifyError(f"{source} has no Checksums-Sha256 field")
    return tuple(files)


class SourceIndex:
    """The source packages of one suite (main), looked up by name and version."""

    def __init__(self, mirror: str, suite: str, sources: str) -> None:
        self.mirror = mirror.rstrip("/")
        self.suite = suite
        self._stanzas: dict[str, list[str]] = {}
        for stanza in re.split(r"\n[ \t]*\n", sources):
            stanza = stanza.strip("\n")
            name = _field(stanza, "Package")
            if name:
                self._stanzas.setdefault(name, []).append(stanza)

    def __len__(self) -> int:
        return len(self._stanzas)

    def get(self, name: str, version: str) -> SourcePackage:
        """The stanza of source ``name`` at exactly ``version``, or a ResolveError."""
        for text in self._stanzas.get(name, []):
            if _field(text, "Version") == version:
                return SourcePackage.from_stanza(text)
        have = ", ".join(_field(t, "Version") for t in self._stanzas.get(name, [])) or "none"
        raise ResolveError(
            f"source package {name} {version} is not in {self.suite} (main); versions: {have}",
            hint="the binary and source indexes of the mirror disagree; try another --mirror",
        )

    def url_for(self, package: SourcePackage, ref: FileRef) -> str:
        return f"{self.mirror}/{package.directory}/{ref.path}"


def open_sources(
    session: requests.Session, mirror: str, suite: str, release: Release, cache_dir: Path
) -> SourceIndex:
    """The verified Sources index of ``suite`` (main), from its already verified Release."""
    mirror = mirror.rstrip("/")
    source = f"{mirror}/dists/{suite}/InRelease"
    with step(f"Reading the {suite} source index"):
        ref = listed_file(release, SOURCES_PATH, source)
        text = index_file(session, release, f"{mirror}/dists/{suite}", ref, cache_dir, source)
        index = SourceIndex(mirror, suite, text)
        log.debug("%s: %d source packages", suite, len(index))
        return index


@dataclass(frozen=True)
class Fetched:
    """A source package's verified files in the download cache, by file name."""

    package: SourcePackage
    paths: dict[str, Path]

    @property
    def dsc(self) -> Path:
        return self.paths[self.package.dsc.path]


def parse_dsc(text: str, package: SourcePackage) -> tuple[FileRef, ...]:
    """The files a .dsc names, after checking that it is ``package``'s and agrees with the
    Sources stanza (same names, sizes and SHA256)."""
    dsc = deb822.Deb822(text)
    what = f"{package.dsc.path}"
    if (dsc.get("Source"), dsc.get("Version")) != (package.name, package.version):
        raise VerifyError(
            f"{what} is for {dsc.get('Source')} {dsc.get('Version')}, "
            f"not {package.name} {package.version}"
        )
    files = _checksums(dsc, what)
    listed = {f.path: f for f in package.files}
    for ref in files:
        if listed.get(ref.path) != ref:
            raise VerifyError(
                f"{what} names {ref.path} ({ref.size} bytes, sha256 {ref.sha256}) but the "
                "signed Sources index does not list it so",
                hint="the mirror serves an inconsistent source package; pass another --mirror",
            )
    if {f.path for f in files} != set(listed) - {package.dsc.path}:
        raise VerifyError(f"{what} and the Sources index name different files")
    return files


def fetch(
    session: requests.Session, index: SourceIndex, package: SourcePackage, cache_dir: Path
) -> Fetched:
    """Download the .dsc, check it against Sources, then every file it names against both."""
    paths = {}
    dsc = package.dsc
    try:
        paths[dsc.path] = download.fetch(
            session, index.url_for(package, dsc), dsc.sha256, dsc.size, cache_dir, what=dsc.path
        )
    except FetchError as exc:
        raise FetchError(
            exc.message,
            hint="the Sources index lists it but the mirror does not serve it (some mirrors "
            "and caches carry binary packages only); pass a full Debian mirror with --mirror",
        ) from exc
    try:
        text = paths[dsc.path].read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise VerifyError(f"{dsc.path} is not UTF-8: {exc}") from exc
    for ref in parse_dsc(text, package):
        paths[ref.path] = download.fetch(
            session, index.url_for(package, ref), ref.sha256, ref.size, cache_dir, what=ref.path
        )
    return Fetched(package, paths)


def unpack(fetched: Fetched, dest: Path) -> Path:
    """Unpack the source package into the new folder ``dest`` and apply its patches.

    Raises ExtractError for an unsupported format or a hostile tarball, ToolError when a
    patch does not apply.
    """
    package = fetched.package
    fmt = package.format.strip()
    names = sorted(fetched.paths)
    if dest.exists():
        raise ExtractError(f"{dest} already exists; refusing to unpack {package.name} there")
    dest.mkdir(parents=True)
    if fmt == "3.0 (quilt)":
        orig = [n for n in names if re.search(r"\.orig\.tar\.[a-z0-9]+$", n)]
        debian = [n for n in names if re.search(r"\.debian\.tar\.[a-z0-9]+$", n)]
        if len(orig) != 1 or len(debian) != 1:
            raise ExtractError(
                f"{package.name}: a 3.0 (quilt) source needs one orig and one "
                f"debian tarball, got {names}"
            )
        _untar(fetched.paths[orig[0]], dest, strip=True)
        for name in names:
            component = re.search(r"\.orig-([A-Za-z0-9][A-Za-z0-9-]*)\.tar\.[a-z0-9]+$", name)
            if component:
                _untar(fetched.paths[name], dest / component.group(1), strip=True)
        shutil.rmtree(dest / "debian", ignore_errors=True)  # dpkg-source replaces it too
        _untar(fetched.paths[debian[0]], dest, strip=False)
        apply_patches(dest)
    elif fmt == "3.0 (native)":
        tars = [n for n in names if re.search(r"\.tar\.[a-z0-9]+$", n)]
        if len(tars) != 1:
            raise ExtractError(f"{package.name}: a native source needs one tarball, got {names}")
        _untar(fetched.paths[tars[0]], dest, strip=True)
    else:
        raise ExtractError(
            f"{package.name} {package.version} is in source format {fmt!r}",
            hint="only the 3.0 (quilt) and 3.0 (native) formats are supported",
        )
    return dest


def series(tree: Path) -> list[tuple[str, int]]:
    """(patch file name, strip level) of ``debian/patches/series``, in order (quilt's
    format: one name per line, optionally followed by ``-pN``; ``#`` starts a comment)."""
    path = tree / "debian/patches/series"
    if not path.is_file():
        return []
    patches = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        level = 1
        for option in words[1:]:
            if not re.fullmatch(r"-p\d", option):
                raise ExtractError(f"{path}:{number}: unsupported series option {option!r}")
            level = int(option[2:])
        name = posixpath.normpath(words[0])
        if name.startswith(("../", "/")) or name == "..":
            raise ExtractError(f"{path}:{number}: patch {words[0]!r} is outside debian/patches")
        patches.append((name, level))
    return patches


def apply_patches(tree: Path) -> list[str]:
    """Apply the series in order with GNU patch; the names of the applied patches."""
    applied = []
    for name, level in series(tree):
        patch = tree / "debian/patches" / name
        if not patch.is_file():
            raise ExtractError(f"debian/patches/series names {name}, which is missing")
        run(
            # dpkg-source's options: no fuzz, no backups, forward only, no rejects file.
            [
                "patch",
                "-s",
                "-t",
                "-F",
                "0",
                "-N",
                f"-p{level}",
                "-u",
                "-E",
                "--no-backup-if-mismatch",
                "--reject-file=-",
                "-d",
                str(tree),
                "-i",
                str(patch),
            ],
            reason=f"apply Debian's patch {name}",
            timeout=120,
        )
        applied.append(name)
    log.debug("%s: applied %d patch(es)", tree.name, len(applied))
    return applied


def _untar(archive: Path, dest: Path, *, strip: bool) -> None:
    """Extract ``archive`` (tar.xz/gz/bz2/zst/plain) into ``dest``, safely."""
    dest.mkdir(parents=True, exist_ok=True)
    with _open_tar(archive) as tar:
        members = []
        for member in tar.getmembers():
            if strip:
                member.name = _strip_top(member.name)
                if not member.name:
                    continue  # the top-level folder itself
                if member.islnk():  # a hard link names another member by its path
                    member.linkname = _strip_top(member.linkname)
            members.append(member)
        try:
            tar.extractall(dest, members=members, filter="data")
        except (tarfile.FilterError, OSError) as exc:
            raise ExtractError(
                f"{archive.name}: refusing a member: {exc}",
                hint="the source package is malicious or corrupt; do not use it",
            ) from exc


def _strip_top(name: str) -> str:
    """``name`` without its first path component (tar --strip-components=1)."""
    return name.removeprefix("./").partition("/")[2]


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        if path.name.endswith(".zst"):
            data = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
            return tarfile.open(fileobj=io.BytesIO(data))
        return tarfile.open(path)
    except (tarfile.TarError, zstandard.ZstdError, OSError) as exc:
        raise ExtractError(f"{path.name} is not a readable tarball: {exc}") from exc
