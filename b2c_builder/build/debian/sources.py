"""Find the host's Debian mirror in its apt sources, so that no host name lives in our code.

apt reads /etc/apt/sources.list, then /etc/apt/sources.list.d/ in file-name order, taking
one-line ``*.list`` files and deb822 ``*.sources`` files and ignoring every other name
(``foo.list.disabled-by-farm``, ``foo.sources.save``, ...). We read them the same way.

A source is a *Debian archive mirror* when all of these hold:

- its type is ``deb`` (not ``deb-src``) and it is not ``Enabled: no``;
- its URI is http(s) and its path ends in ``/debian`` (a snapshot URI ending in
  ``/debian/<YYYYMMDDTHHMMSSZ>`` also counts). This excludes ``/debian-security``,
  ``/debian-ports``, ``/debian-debug`` and most third-party repositories;
- it is trusted by the Debian archive keyring: either no ``Signed-By`` (apt's default
  trust store, which is Debian's) or a ``Signed-By`` naming a ``debian-archive-*`` keyring
  file. This excludes third-party repositories that also live under a ``/debian`` path
  but ship their own key (``.../linux/debian`` with ``Signed-By: /etc/apt/keyrings/x.asc``).
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from debian import deb822

from b2c_builder.errors import ConfigError
from b2c_builder.log import log

_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # apt ignores names with other characters
_DEBIAN_PATH = re.compile(r"(^|/)debian(/\d{8}T\d{6}Z)?$")


@dataclass(frozen=True)
class Source:
    """One apt source entry (a one-line ``deb`` line or one deb822 stanza)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: tuple[str, ...]  # keyring paths, fingerprints or one inline key
    enabled: bool
    where: str  # "file:line" for messages


def source_files(root: Path = Path("/")) -> list[Path]:
    """The files apt reads, in the order it reads them."""
    etc = root / "etc/apt"
    files = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    parts = etc / "sources.list.d"
    if parts.is_dir():
        files += sorted(
            p
            for p in parts.iterdir()
            if p.suffix in (".list", ".sources") and _FILE_NAME.match(p.name) and p.is_file()
        )
    return files


def read_sources(root: Path = Path("/")) -> list[Source]:
    """Every source entry of the host, in apt's order."""
    sources: list[Source] = []
    for path in source_files(root):
        if path.suffix == ".sources":
            sources += _read_deb822(path)
        else:
            sources += _read_one_line(path)
    return sources


def _read_one_line(path: Path) -> list[Source]:
    sources = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        options: dict[str, str] = {}
        rest = rest.strip()
        if rest.startswith("["):
            inside, _, rest = rest[1:].partition("]")
            for option in inside.split():
                key, _, value = option.partition("=")
                options[key.lower()] = value
        words = rest.split()
        if len(words) < 2:
            log.debug("%s:%d: cannot parse %r; ignored", path, number, raw)
            continue
        signed_by = options.get("signed-by", "")
        sources.append(
            Source(
                types=(kind,),
                uris=(words[0],),
                suites=(words[1],),
                components=tuple(words[2:]),
                signed_by=tuple(s for s in signed_by.split(",") if s),
                enabled=True,
                where=f"{path}:{number}",
            )
        )
    return sources


def _read_deb822(path: Path) -> list[Source]:
    sources = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, stanza in enumerate(deb822.Deb822.iter_paragraphs(f), 1):
            signed_by = stanza.get("Signed-By", "").strip()
            if "BEGIN PGP" in signed_by:
                keys: tuple[str, ...] = (signed_by,)  # an inline key, not a file name
            else:
                keys = tuple(k for k in re.split(r"[\s,]+", signed_by) if k)
            sources.append(
                Source(
                    types=tuple(stanza.get("Types", "").split()),
                    uris=tuple(stanza.get("URIs", "").split()),
                    suites=tuple(stanza.get("Suites", "").split()),
                    components=tuple(stanza.get("Components", "").split()),
                    signed_by=keys,
                    enabled=stanza.get("Enabled", "yes").strip().lower() != "no",
                    where=f"{path} (stanza {number})",
                )
            )
    return sources


def is_debian_mirror(uri: str, signed_by: tuple[str, ...] = ()) -> bool:
    """Does ``uri`` (with its Signed-By values) look like the Debian archive? See the top."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return False
    if not _DEBIAN_PATH.search(parsed.path.rstrip("/")):
        return False
    if not signed_by:
        return True
    return any(posixpath.basename(k).startswith("debian-archive-") for k in signed_by)


def default_mirror(root: Path = Path("/")) -> str:
    """URL of the first Debian archive mirror in the host's apt sources, without a final '/'."""
    for source in read_sources(root):
        if not source.enabled or "deb" not in source.types:
            continue
        for uri in source.uris:
            if is_debian_mirror(uri, source.signed_by):
                log.debug("Debian mirror %s from %s", uri, source.where)
                return uri.rstrip("/")
    raise ConfigError(
        f"no Debian archive mirror found in {root / 'etc/apt/sources.list'} "
        f"or {root / 'etc/apt/sources.list.d'}",
        hint="pass --mirror URL (the URI of a Debian mirror, ending in /debian)",
    )
