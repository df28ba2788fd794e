"""Downloads: one requests session with retries and timeouts, a cache keyed by SHA-256.

A file enters the cache only once its size and SHA-256 match what the signed index says:
it is written to a temporary file next to its final place and renamed atomically. A cache
entry is hashed again every time it is used, so a truncated or corrupted entry is noticed
and fetched again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from b2c_builder.digest import file_sha256
from b2c_builder.errors import FetchError, MissingError, VerifyError
from b2c_builder.log import log, progress

TIMEOUT = (5.0, 30.0)  # (connect, read) seconds, for every request
RETRIES = 3
BACKOFF = 0.25  # seconds; urllib3 sleeps 0, 0.5, 1.0 between the retries
CHUNK = 1 << 16
USER_AGENT = "b2c-builder"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def make_session() -> requests.Session:
    """The one HTTP session of a build: RETRIES on connection errors and 5xx, bounded waits."""
    retry = Retry(
        total=RETRIES,
        connect=RETRIES,
        read=RETRIES,
        status=RETRIES,
        backoff_factor=BACKOFF,
        backoff_max=5.0,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=False,  # a mirror must not make us wait for an hour
        raise_on_status=False,  # give us the last response so the error names its status
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


@contextlib.contextmanager
def _get(session: requests.Session, url: str) -> Iterator[requests.Response]:
    """A streaming GET whose failures are FetchErrors naming the URL."""
    try:
        response = session.get(url, stream=True, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise FetchError(
            f"cannot download {url}: {_reason(exc)}",
            hint="check the network and the mirror (--mirror URL)",
        ) from exc
    with response:
        if response.status_code == 404:
            raise MissingError(
                f"cannot download {url}: HTTP 404 {response.reason}",
                hint="check --mirror, --suite and --arch",
            )
        if response.status_code != 200:
            raise FetchError(
                f"cannot download {url}: HTTP {response.status_code} {response.reason}",
                hint="the mirror may be overloaded; try again or pass another --mirror",
            )
        try:
            yield response
        except requests.RequestException as exc:  # raised while reading the body
            raise FetchError(
                f"download of {url} was interrupted: {_reason(exc)}",
                hint="check the network and the mirror (--mirror URL), then retry",
            ) from exc


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, without the wall of wrappers."""
    while exc.__context__ is not None and not str(exc):
        exc = exc.__context__
    text = str(exc)
    for marker in ("Caused by ", "Failed to establish a new connection: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.rstrip(")'\"") or type(exc).__name__


def get(session: requests.Session, url: str, *, max_size: int = 64 << 20) -> bytes:
    """The bytes at ``url`` (small, uncached files such as InRelease)."""
    with _get(session, url) as response:
        data = bytearray()
        for chunk in response.iter_content(CHUNK):
            data += chunk
            if len(data) > max_size:
                raise FetchError(f"{url} is larger than {max_size} bytes; refusing it")
        return bytes(data)


def cache_path(cache_dir: Path, sha256: str) -> Path:
    return cache_dir / "by-sha256" / sha256[:2] / sha256


def cached(cache_dir: Path, sha256: str, size: int) -> Path | None:
    """The cache entry for ``sha256`` if it is intact; a damaged entry is removed."""
    path = cache_path(cache_dir, sha256)
    try:
        actual_size = path.stat().st_size
    except FileNotFoundError:
        return None
    if actual_size == size and file_sha256(path) == sha256:
        return path
    log.warning("cache entry %s is damaged (truncated or corrupted); fetching it again", path)
    path.unlink(missing_ok=True)
    return None


def fetch(
    session: requests.Session,
    url: str,
    sha256: str,
    size: int,
    cache_dir: Path,
    *,
    what: str | None = None,
) -> Path:
    """Path of the cached file with this ``sha256`` and ``size``, downloading it if needed.

    ``what`` names the file in messages (e.g. "main/binary-amd64/Packages.xz"); any size
    or hash mismatch is a VerifyError and nothing is written to the cache.
    """
    sha256 = sha256.lower()
    if not _SHA256.fullmatch(sha256):
        raise VerifyError(f"{what or url}: {sha256!r} is not a SHA-256 digest")
    hit = cached(cache_dir, sha256, size)
    if hit is not None:
        log.debug("cache hit for %s: %s", url, hit)
        return hit
    name = what or url.rsplit("/", 1)[-1]
    final = cache_path(cache_dir, sha256)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _get(session, url) as response:
            digest, written = _copy(response, out, size, name, url)
        if written != size:
            raise VerifyError(
                f"{name}: size mismatch for {url}: expected {size} bytes, got {written}",
                hint="the mirror served a truncated or tampered file; "
                "retry, or pass another --mirror",
            )
        if digest != sha256:
            raise VerifyError(
                f"{name}: SHA256 mismatch for {url}: expected {sha256}, got {digest}",
                hint="the mirror served a corrupted or tampered file; "
                "retry, or pass another --mirror",
            )
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("fetched %s (%d bytes) into %s", url, size, final)
    return final


def store(cache_dir: Path, sha256: str, data: bytes, *, what: str) -> Path:
    """Put ``data`` into the cache under ``sha256``, after checking that it hashes to it."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256.lower():
        raise VerifyError(
            f"{what}: SHA256 mismatch: expected {sha256}, got {digest}",
            hint="the mirror served a corrupted or tampered file; pass another --mirror",
        )
    final = cache_path(cache_dir, digest)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp_name, final)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return final


def _copy(
    response: requests.Response, out: BinaryIO, size: int, name: str, url: str
) -> tuple[str, int]:
    """Stream the body into ``out``, hashing it; stop as soon as it exceeds ``size``."""
    digest = hashlib.sha256()
    written = 0
    bar = progress(size, name)
    with bar if bar is not None else contextlib.nullcontext():
        for chunk in response.iter_content(CHUNK):
            written += len(chunk)
            if written > size:
                raise VerifyError(
                    f"{name}: {url} is larger than the {size} bytes the index announces",
                    hint="the mirror served a tampered file; use another --mirror",
                )
            digest.update(chunk)
            out.write(chunk)
            if bar is not None:
                bar.update(bar.task_ids[0], advance=len(chunk))
    return digest.hexdigest(), written
