"""The SHA-256 keyed download cache, and bounded failures on dead or silent mirrors."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from b2c_builder.build.debian import download
from b2c_builder.errors import FetchError, MissingError, VerifyError
from tests.localmirror import FakePackage, GpgKey, LocalMirror

DATA = b"0123456789abcdef" * 5000
PAYLOAD = FakePackage("payload", files={"usr/share/payload": DATA})


@pytest.fixture(scope="module")
def key() -> Iterator[GpgKey]:
    with GpgKey() as k:
        yield k


@pytest.fixture
def mirror(tmp_path: Path, key: GpgKey) -> Iterator[LocalMirror]:
    with LocalMirror(tmp_path, [PAYLOAD], key=key) as m:
        yield m


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with download.make_session() as s:
        yield s


def deb_ref(mirror: LocalMirror) -> tuple[str, str, int, bytes]:
    data = mirror.deb_path("payload").read_bytes()
    url = f"{mirror.url}/{PAYLOAD.filename}"
    return url, hashlib.sha256(data).hexdigest(), len(data), data


def deb_requests(mirror: LocalMirror) -> int:
    return sum(r.endswith(".deb") for r in mirror.requests)


def test_fetch_then_cache_hit(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    url, sha, size, data = deb_ref(mirror)
    cache = tmp_path / "cache"
    path = download.fetch(session, url, sha, size, cache)
    assert path == cache / "by-sha256" / sha[:2] / sha
    assert path.read_bytes() == data
    assert download.fetch(session, url, sha, size, cache) == path
    assert deb_requests(mirror) == 1
    assert [p.name for p in path.parent.iterdir()] == [sha], "no temporary files left"


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "extend"])
def test_damaged_cache_entry_is_fetched_again(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path, damage: str
) -> None:
    url, sha, size, data = deb_ref(mirror)
    cache = tmp_path / "cache"
    path = download.fetch(session, url, sha, size, cache)
    damaged = bytearray(data)
    if damage == "corrupt":
        damaged[size // 3] ^= 0x01  # same size, one bit differs
    elif damage == "truncate":
        damaged = damaged[: size - 100]
    else:
        damaged += b"\0"
    path.write_bytes(bytes(damaged))
    assert download.fetch(session, url, sha, size, cache).read_bytes() == data
    assert deb_requests(mirror) == 2


def test_hash_mismatch_caches_nothing(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    url, _, size, _ = deb_ref(mirror)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(VerifyError) as err:
        download.fetch(session, url, wrong, size, tmp_path / "cache", what="payload.deb")
    assert "payload.deb" in err.value.message and url in err.value.message
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_size_mismatch(mirror: LocalMirror, session: requests.Session, tmp_path: Path) -> None:
    url, sha, size, _ = deb_ref(mirror)
    with pytest.raises(VerifyError, match="larger than"):
        download.fetch(session, url, sha, size - 1, tmp_path / "cache")
    with pytest.raises(VerifyError, match="size mismatch"):
        download.fetch(session, url, sha, size + 1, tmp_path / "cache")


def test_http_404_names_the_url(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    """A 404 is a MissingError (a release tells the architectures a mirror lacks by it)."""
    url = f"{mirror.url}/pool/main/n/nope/nope_1_amd64.deb"
    with pytest.raises(MissingError) as err:
        download.fetch(session, url, "0" * 64, 1, tmp_path / "cache")
    assert url in err.value.message and "HTTP 404" in err.value.message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_unreachable_mirror_fails_fast(session: requests.Session, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/debian/pool/main/x/x/x_1_amd64.deb"
    start = time.monotonic()
    with pytest.raises(FetchError) as err:
        download.fetch(session, url, "0" * 64, 1, tmp_path / "cache")
    elapsed = time.monotonic() - start
    assert url in err.value.message and "refused" in err.value.message
    assert elapsed < 5, f"took {elapsed:.1f}s"


def test_silent_mirror_times_out(
    session: requests.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts connections and never answers: read timeout, retries, error."""
    monkeypatch.setattr(download, "TIMEOUT", (1.0, 0.5))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/debian/dists/trixie/InRelease"
    start = time.monotonic()
    try:
        with pytest.raises(FetchError) as err:
            download.get(session, url)
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()
    elapsed = time.monotonic() - start
    assert url in err.value.message and "timed out" in err.value.message
    assert len(accepted) == 1 + download.RETRIES, "each retry opens a new connection"
    assert elapsed < 10, f"took {elapsed:.1f}s"
