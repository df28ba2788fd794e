"""The archive index: a verified InRelease, then the Packages file it vouches for.

Trust flows one way: gpgv checks InRelease against the keyring and we parse only the text
gpgv says was signed; that text gives the SHA256 and size of main/binary-<arch>/Packages.xz;
each Package stanza gives the SHA256 and size of its .deb (checked by download.fetch).

A trixie Packages file has ~69,000 stanzas and parsing all of them with python-debian takes
~16 s, so the index only splits the file into stanzas and reads the Package and Provides
lines up front; a stanza is parsed by python-debian the first time it is looked up.
"""

from __future__ import annotations

import email.utils
import lzma
import posixpath
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from debian import deb822
from debian.debian_support import Version

from b2c_builder.errors import ConfigError, ResolveError, VerifyError
from b2c_builder.log import log, step
from b2c_builder.run import run

from . import download

COMPONENT = "main"


@dataclass(frozen=True)
class FileRef:
    """A file listed in Release: where it is, and what it must hash to."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Release:
    """The fields of a (verified) Release that we use."""

    suite: str
    codename: str
    date: int  # seconds since the epoch: the default SOURCE_DATE_EPOCH of a build
    architectures: tuple[str, ...]
    components: tuple[str, ...]
    acquire_by_hash: bool
    files: dict[str, FileRef]
    valid_until: int | None = None


@dataclass(frozen=True)
class Dependency:
    """One alternative of a relation: ``name[:arch] [(op version)]``."""

    name: str
    arch: str | None = None  # "any", "native", an architecture, or None
    op: str | None = None  # "<<", "<=", "=", ">=", ">>"
    version: str | None = None

    def __str__(self) -> str:
        text = self.name + (f":{self.arch}" if self.arch else "")
        return text + (f" ({self.op} {self.version})" if self.op else "")


Alternatives = tuple[Dependency, ...]  # "a | b (>= 1)"


@dataclass(frozen=True)
class Package:
    """One binary package stanza of a Packages file."""

    name: str
    version: str
    architecture: str
    filename: str
    size: int
    sha256: str
    depends: tuple[Alternatives, ...] = ()
    pre_depends: tuple[Alternatives, ...] = ()
    provides: tuple[Dependency, ...] = ()
    multi_arch: str = "no"
    source: str = ""  # the source package's name ("" until from_stanza fills it in)
    source_version: str = ""  # its version (a binNMU's binary version differs from it)

    @classmethod
    def from_stanza(cls, text: str) -> Package:
        stanza = deb822.Packages(text)
        try:
            return cls(
                name=stanza["Package"],
                version=stanza["Version"],
                architecture=stanza["Architecture"],
                filename=stanza["Filename"],
                size=int(stanza["Size"]),
                sha256=stanza["SHA256"].lower(),
                depends=_relations(stanza.get("Depends", "")),
                pre_depends=_relations(stanza.get("Pre-Depends", "")),
                provides=tuple(alts[0] for alts in _relations(stanza.get("Provides", ""))),
                multi_arch=stanza.get("Multi-Arch", "no"),
                **_source_of(stanza),
            )
        except (KeyError, ValueError) as exc:
            raise VerifyError(
                f"malformed Packages stanza for {stanza.get('Package', '?')}: {exc!r}"
            ) from exc


def _source_of(stanza: deb822.Packages) -> dict[str, str]:
    """The Source field, ``name`` or ``name (version)``; absent means the binary's own
    name and version (Debian policy 5.6.1)."""
    name, version = stanza["Package"], stanza["Version"]
    field = stanza.get("Source", "").strip()
    if field:
        match = re.fullmatch(r"(\S+)(?:\s*\((\S+)\))?", field)
        if match is None:
            raise ValueError(f"Source field {field!r}")
        name, version = match.group(1), match.group(2) or version
    return {"source": name, "source_version": version}


def _relations(text: str) -> tuple[Alternatives, ...]:
    groups: list[Alternatives] = []
    for group in deb822.PkgRelation.parse_relations(text) if text.strip() else []:
        alts: list[Dependency] = []
        for rel in group:
            op, version = rel["version"] or (None, None)
            alts.append(Dependency(rel["name"], rel["archqual"], op, version))
        groups.append(tuple(alts))
    return tuple(groups)


def verify_inrelease(data: bytes, keyring: Path, *, source: str) -> str:
    """The signed text of an InRelease file, if at least one signature is good.

    gpgv exits non-zero when any signature's key is missing from the keyring (Debian signs
    with several keys), so like apt we read its status lines: we need a GOODSIG + VALIDSIG
    and no BADSIG. gpgv writes the signed text even for a bad signature: it is then discarded.
    """
    if not keyring.is_file():
        raise ConfigError(
            f"keyring {keyring} not found",
            hint="apt-get install debian-archive-keyring, or pass --keyring FILE",
        )
    with tempfile.TemporaryDirectory(prefix="b2c-gpgv-") as tmp:
        signed = Path(tmp, "Release")
        proc = run(  # status lines on stdout, alone: signed text cannot forge them
            ["gpgv", "--status-fd", "1", "--keyring", str(keyring), "--output", str(signed), "-"],
            reason="verify the archive's InRelease signature",
            input=data,
            check=False,
            timeout=60,
        )
        text = signed.read_bytes() if signed.exists() else b""
    status = [
        line.split()[1:]
        for line in proc.stdout.decode(errors="replace").splitlines()
        if line.startswith("[GNUPG:] ") and len(line.split()) > 1
    ]
    keywords = {words[0] for words in status}
    if "BADSIG" in keywords or not {"GOODSIG", "VALIDSIG"} <= keywords:
        messages = [
            " ".join(line.removeprefix("gpgv:").split())
            for line in proc.stderr.decode(errors="replace").splitlines()
            if line.startswith("gpgv:")
        ]
        messages = [m for m in messages if not m.startswith(("Signature made", "using "))]
        raise VerifyError(
            f"InRelease signature check failed for {source}: "
            + ("; ".join(messages) or "no valid signature"),
            hint=f"the file is tampered, or {keyring} lacks the signing key (--keyring FILE)",
        )
    signers = [w[1] for w in status if w[0] == "VALIDSIG" and len(w) > 1]
    log.debug("InRelease %s: good signature(s) from %s", source, ", ".join(signers))
    return text.decode("utf-8")


def _unsigned_text(data: bytes) -> str:
    """The payload of a clearsigned file without checking its signature (opt-out only)."""
    lines = deb822.Deb822.split_gpg_and_payload(iter(data.splitlines()))[1]
    return b"\n".join(lines).decode("utf-8") + "\n"


def _epoch(value: str, field: str, source: str) -> int:
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError) as exc:
        raise VerifyError(f"{source}: cannot read {field} {value!r} as a date") from exc


def parse_release(text: str, *, source: str) -> Release:
    """Parse the (already verified) text of a Release file."""
    stanza = deb822.Release(text)
    if "Date" not in stanza:
        raise VerifyError(f"{source} has no Date field; it is not a Release file")
    files = {}
    for item in stanza.get("SHA256", []):
        files[item["name"]] = FileRef(item["name"], item["sha256"].lower(), int(item["size"]))
    until = stanza.get("Valid-Until")
    return Release(
        suite=stanza.get("Suite", ""),
        codename=stanza.get("Codename", ""),
        date=_epoch(stanza["Date"], "Date", source),
        architectures=tuple(stanza.get("Architectures", "").split()),
        components=tuple(stanza.get("Components", "").split()),
        acquire_by_hash=stanza.get("Acquire-By-Hash", "no").lower() == "yes",
        files=files,
        valid_until=_epoch(until, "Valid-Until", source) if until else None,
    )


def _field(stanza: str, name: str) -> str:
    """The value of one field of a stanza, continuation lines included (fast, no parsing)."""
    key = name + ":"
    if stanza.startswith(key):
        start = len(key)
    else:
        at = stanza.find("\n" + key)
        if at == -1:
            return ""
        start = at + 1 + len(key)
    end = stanza.find("\n", start)
    while end != -1 and stanza[end + 1 : end + 2] in (" ", "\t"):
        end = stanza.find("\n", end + 1)
    return stanza[start : len(stanza) if end == -1 else end].strip()


class Archive:
    """The packages of one suite/architecture/component, looked up by name or virtual name."""

    def __init__(
        self,
        mirror: str,
        suite: str,
        arch: str,
        date: int,
        packages: str,
        *,
        release: Release | None = None,
    ) -> None:
        self.mirror = mirror.rstrip("/")
        self.release = release  # the verified Release it came from (None in unit tests)
        self.suite = suite
        self.arch = str(arch)
        self.date = date
        self._stanzas: dict[str, list[str]] = {}
        self._provided_by: dict[str, list[str]] = {}
        self._parsed: dict[str, list[Package]] = {}
        for stanza in re.split(r"\n[ \t]*\n", packages):
            stanza = stanza.strip("\n")
            name = _field(stanza, "Package")
            if not name:
                continue
            self._stanzas.setdefault(name, []).append(stanza)
            for item in _field(stanza, "Provides").split(","):
                virtual = item.split("(", 1)[0].split(":", 1)[0].strip()
                if virtual:
                    self._provided_by.setdefault(virtual, []).append(name)

    def __contains__(self, name: str) -> bool:
        return name in self._stanzas

    def __len__(self) -> int:
        return len(self._stanzas)

    def names(self) -> Iterator[str]:
        return iter(sorted(self._stanzas))

    def versions(self, name: str) -> list[Package]:
        """Every stanza of the real package ``name``, highest version first."""
        if name not in self._parsed:
            packages = [Package.from_stanza(s) for s in self._stanzas.get(name, [])]
            packages.sort(key=lambda p: Version(p.version), reverse=True)
            self._parsed[name] = packages
        return self._parsed[name]

    def get(self, name: str) -> Package | None:
        """The real package ``name`` (its highest version), or None."""
        versions = self.versions(name)
        return versions[0] if versions else None

    def __getitem__(self, name: str) -> Package:
        package = self.get(name)
        if package is None:
            raise ResolveError(
                f"package {name!r} is not in {self.suite}/{self.arch} ({COMPONENT})",
                hint="check the name; only binary packages of the main component are searched",
            )
        return package

    def providers(self, virtual: str) -> list[Package]:
        """Packages whose Provides names ``virtual``, sorted by name then highest version."""
        found = []
        for name in sorted(set(self._provided_by.get(virtual, []))):
            found += [p for p in self.versions(name) if any(d.name == virtual for d in p.provides)]
        return found

    def url_for(self, package: Package) -> str:
        return f"{self.mirror}/{package.filename}"


def _packages_ref(release: Release, arch: str, source: str) -> FileRef:
    if release.architectures and arch not in release.architectures:
        raise ConfigError(
            f"{source} has no architecture {arch} (it has {', '.join(release.architectures)})",
            hint="pass another --arch or --suite",
        )
    return listed_file(release, f"{COMPONENT}/binary-{arch}/Packages.xz", source)


def listed_file(release: Release, path: str, source: str) -> FileRef:
    """The hash and size that (verified) ``release`` gives for ``path``, or a VerifyError."""
    ref = release.files.get(path)
    if ref is None:
        raise VerifyError(
            f"{source} lists no SHA256 for {path}",
            hint="the mirror is incomplete or not a Debian archive; pass another --mirror",
        )
    return ref


def index_file(
    session: requests.Session,
    release: Release,
    dists: str,
    xz: FileRef,
    cache_dir: Path,
    source: str,
) -> str:
    """The uncompressed text of an index file (Packages, Sources) that Release lists as
    ``xz``, checked against the signed hashes. Release lists the hashes of both the .xz and
    the plain file: the former is fetched and checked, the latter is checked and cached so
    that a warm build skips the ~1 s of xz decompression."""
    plain = release.files.get(xz.path.removesuffix(".xz"))
    if plain is not None and (hit := download.cached(cache_dir, plain.sha256, plain.size)):
        data = hit.read_bytes()
    else:
        url = f"{dists}/{xz.path}"
        if release.acquire_by_hash:  # immune to the mirror updating between two requests
            url = f"{dists}/{posixpath.dirname(xz.path)}/by-hash/SHA256/{xz.sha256}"
        path = download.fetch(session, url, xz.sha256, xz.size, cache_dir, what=xz.path)
        try:
            data = lzma.decompress(path.read_bytes())
        except lzma.LZMAError as exc:
            raise VerifyError(f"{xz.path} from {url} is not valid xz: {exc}") from exc
        if plain is not None:
            download.store(cache_dir, plain.sha256, data, what=plain.path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerifyError(f"{source}: {xz.path} is not UTF-8: {exc}") from exc


def _check_release(release: Release, suite: str, source: str) -> None:
    """Refuse a validly signed Release of another suite, or an expired one (replays)."""
    if suite not in (release.suite, release.codename):
        raise VerifyError(
            f"{source} is for suite {release.suite!r} ({release.codename!r}), not {suite!r}",
            hint="the mirror serves the wrong file; pass another --mirror",
        )
    if release.valid_until is not None and release.valid_until < time.time():
        raise VerifyError(
            f"{source} expired (Valid-Until is in the past)",
            hint="the mirror is stale or replaying old files; pass another --mirror",
        )


def open_release(
    session: requests.Session,
    mirror: str,
    suite: str,
    *,
    keyring: Path | None,
    verify_signature: bool = True,
) -> Release:
    """Fetch ``dists/<suite>/InRelease``, check its signature (unless told not to), its
    suite and its expiry: every index file is then checked against its hashes."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/InRelease"
    data = download.get(session, url)
    if verify_signature:
        if keyring is None:
            raise ConfigError("no keyring to verify InRelease with", hint="pass --keyring")
        text = verify_inrelease(data, keyring, source=url)
    else:
        log.warning(
            "!!! NOT verifying the OpenPGP signature of %s (--no-verify-signature): "
            "anyone between you and the mirror can choose what goes into the image !!!",
            url,
        )
        text = _unsigned_text(data)
    release = parse_release(text, source=url)
    _check_release(release, suite, url)
    return release


def open_archive(
    session: requests.Session,
    mirror: str,
    suite: str,
    arch: str,
    *,
    keyring: Path | None,
    cache_dir: Path,
    verify_signature: bool = True,
) -> Archive:
    """Fetch, verify and index ``dists/<suite>`` of ``mirror`` for ``arch`` (main only)."""
    mirror = mirror.rstrip("/")
    arch = str(arch)
    with step(f"Reading the {suite}/{arch} index of {mirror}"):
        release = open_release(
            session, mirror, suite, keyring=keyring, verify_signature=verify_signature
        )
        url = f"{mirror}/dists/{suite}/InRelease"
        ref = _packages_ref(release, arch, url)
        packages = index_file(session, release, f"{mirror}/dists/{suite}", ref, cache_dir, url)
        archive = Archive(mirror, suite, arch, release.date, packages, release=release)
        log.debug("%s/%s: %d packages, dated %d", suite, arch, len(archive), release.date)
        return archive
