"""InRelease signature, Release hashes and Packages parsing against a local signed mirror."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from b2c_builder.build.debian import download, index
from b2c_builder.build.debian.deb import extract_into, new_staging
from b2c_builder.build.debian.resolve import closure
from b2c_builder.build.rootfs import Origin
from b2c_builder.config import Arch
from b2c_builder.errors import ConfigError, FetchError, VerifyError
from tests.localmirror import DEFAULT_DATE, FakePackage, GpgKey, LocalMirror, capture_log

PACKAGES = [
    FakePackage(
        "hello",
        depends="libhello (>= 1.0), mail-transport-agent",
        files={"usr/bin/hello": b"#!/bin/sh\necho hello\n"},
    ),
    FakePackage("libhello", "1.2-3", files={"lib/x86_64-linux-gnu/libhello.so.1": b"\x7fELF"}),
    FakePackage("tiny-mta", provides="mail-transport-agent", files={"usr/sbin/mta": b"mta"}),
]


@pytest.fixture(scope="module")
def key() -> Iterator[GpgKey]:
    with GpgKey() as k:
        yield k


@pytest.fixture
def mirror(tmp_path: Path, key: GpgKey) -> Iterator[LocalMirror]:
    with LocalMirror(tmp_path, PACKAGES, key=key) as m:
        yield m


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with download.make_session() as s:
        yield s


def open_mirror(
    session: requests.Session,
    mirror: LocalMirror,
    cache: Path,
    *,
    keyring: Path | None = None,
    verify_signature: bool = True,
) -> index.Archive:
    return index.open_archive(
        session,
        mirror.url,
        mirror.suite,
        mirror.arch,
        keyring=keyring or mirror.keyring,
        cache_dir=cache,
        verify_signature=verify_signature,
    )


def test_happy_path_end_to_end(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    archive = open_mirror(session, mirror, cache)
    assert len(archive) == 3 and archive.date == DEFAULT_DATE
    hello = archive["hello"]
    assert hello.sha256 == hashlib.sha256(mirror.deb_path("hello").read_bytes()).hexdigest()
    assert [p.name for p in archive.providers("mail-transport-agent")] == ["tiny-mta"]
    packages = closure(archive, ["hello"])
    assert [p.name for p in packages] == ["hello", "libhello", "tiny-mta"]
    staging = new_staging(Arch.amd64)
    for package in packages:
        path = download.fetch(
            session, archive.url_for(package), package.sha256, package.size, cache
        )
        extract_into(staging, path, Origin(package.name, package.version))
    assert staging.read("usr/lib/x86_64-linux-gnu/libhello.so.1") == b"\x7fELF"
    assert staging["usr/bin/hello"].origin == Origin("hello", "1.0-1")


def test_packages_index_is_cached_by_hash(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    open_mirror(session, mirror, cache)
    open_mirror(session, mirror, cache)
    assert sum(r.endswith("Packages.xz") for r in mirror.requests) == 1
    assert sum(r.endswith("/InRelease") for r in mirror.requests) == 2  # always fresh
    # the uncompressed Packages is cached under the hash the signed Release gives it
    text = mirror.packages_path.read_bytes()
    plain = download.cache_path(cache, hashlib.sha256(text).hexdigest())
    assert plain.read_bytes() == text
    plain.write_bytes(b"Package: evil\nVersion: 1\n")  # a damaged cache entry
    archive = open_mirror(session, mirror, cache)
    assert "evil" not in archive and "hello" in archive
    assert plain.read_bytes() == text


def test_tampered_inrelease(mirror: LocalMirror, session: requests.Session, tmp_path: Path) -> None:
    mirror.tamper_inrelease()
    with pytest.raises(VerifyError) as err:
        open_mirror(session, mirror, tmp_path / "cache")
    assert f"{mirror.url}/dists/trixie/InRelease" in err.value.message
    assert "BAD signature" in err.value.message


def test_unsigned_inrelease(mirror: LocalMirror, session: requests.Session, tmp_path: Path) -> None:
    shutil.copy(mirror.dists / "Release", mirror.inrelease)
    with pytest.raises(VerifyError, match="InRelease"):
        open_mirror(session, mirror, tmp_path / "cache")


def test_unsigned_text_around_the_signature_is_ignored(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    signed = mirror.inrelease.read_bytes()
    evil = b"Codename: trixie\nDate: Mon, 01 Jan 2024 00:00:00 UTC\n"
    mirror.inrelease.write_bytes(evil + b"\n" + signed + evil)
    archive = open_mirror(session, mirror, tmp_path / "cache")
    assert archive.date == DEFAULT_DATE


def test_wrong_keyring(mirror: LocalMirror, session: requests.Session, tmp_path: Path) -> None:
    with GpgKey("someone else") as other, pytest.raises(VerifyError) as err:
        open_mirror(session, mirror, tmp_path / "cache", keyring=other.keyring)
    assert "InRelease" in err.value.message
    assert err.value.hint is not None and "--keyring" in err.value.hint


def test_missing_keyring(mirror: LocalMirror, session: requests.Session, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        open_mirror(session, mirror, tmp_path / "cache", keyring=tmp_path / "nope.gpg")


def test_tampered_packages(mirror: LocalMirror, session: requests.Session, tmp_path: Path) -> None:
    mirror.tamper_packages()
    with pytest.raises(VerifyError) as err:
        open_mirror(session, mirror, tmp_path / "cache")
    assert "main/binary-amd64/Packages.xz" in err.value.message
    assert not list((tmp_path / "cache").rglob("*.xz")), "nothing unverified is cached"
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_tampered_deb(mirror: LocalMirror, session: requests.Session, tmp_path: Path) -> None:
    archive = open_mirror(session, mirror, tmp_path / "cache")
    mirror.tamper_deb("libhello")
    pkg = archive["libhello"]
    with pytest.raises(VerifyError) as err:
        download.fetch(session, archive.url_for(pkg), pkg.sha256, pkg.size, tmp_path / "cache")
    assert "libhello_1.2-3_amd64.deb" in err.value.message and "SHA256" in err.value.message
    assert not download.cache_path(tmp_path / "cache", pkg.sha256).exists()


def test_opt_out_warns_loudly(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    mirror.tamper_inrelease()
    with capture_log(logging.WARNING) as messages:
        archive = open_mirror(session, mirror, tmp_path / "cache", verify_signature=False)
    assert "hello" in archive
    assert any("NOT verifying" in m and "InRelease" in m for m in messages)


def test_opt_out_still_checks_packages_hash(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    mirror.tamper_packages()
    with pytest.raises(VerifyError, match=r"Packages\.xz"):
        open_mirror(session, mirror, tmp_path / "cache", verify_signature=False)


def test_release_of_another_suite_is_refused(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    """A validly signed Release replayed under another suite's name."""
    shutil.copytree(mirror.dists, mirror.root / "dists/bookworm")
    with pytest.raises(VerifyError, match="not 'bookworm'"):
        index.open_archive(
            session,
            mirror.url,
            "bookworm",
            "amd64",
            keyring=mirror.keyring,
            cache_dir=tmp_path / "cache",
        )


def test_unknown_suite_is_a_fetch_error(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    with pytest.raises(FetchError) as err:
        index.open_archive(
            session,
            mirror.url,
            "sid",
            "amd64",
            keyring=mirror.keyring,
            cache_dir=tmp_path / "cache",
        )
    assert f"{mirror.url}/dists/sid/InRelease" in err.value.message and "404" in err.value.message


def test_unknown_architecture(
    mirror: LocalMirror, session: requests.Session, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="no architecture arm64"):
        index.open_archive(
            session,
            mirror.url,
            "trixie",
            "arm64",
            keyring=mirror.keyring,
            cache_dir=tmp_path / "cache",
        )


def test_acquire_by_hash(tmp_path: Path, key: GpgKey, session: requests.Session) -> None:
    extra = {"Acquire-By-Hash": "yes"}
    with LocalMirror(tmp_path, PACKAGES[:1], key=key, extra_release_fields=extra) as mirror:
        xz = mirror.packages_path.with_suffix(".xz")
        by_hash = xz.parent / "by-hash/SHA256" / hashlib.sha256(xz.read_bytes()).hexdigest()
        by_hash.parent.mkdir(parents=True)
        shutil.move(xz, by_hash)  # only the by-hash name exists now
        archive = open_mirror(session, mirror, tmp_path / "cache")
        assert "hello" in archive
        assert any("/by-hash/SHA256/" in r for r in mirror.requests)


def test_release_parsing() -> None:
    text = (
        "Origin: Debian\nSuite: stable\nCodename: trixie\n"
        "Date: Sat, 09 Aug 2025 00:00:00 UTC\nValid-Until: Sat, 16 Aug 2025 00:00:00 UTC\n"
        "Architectures: all amd64 arm64\nComponents: main contrib\nAcquire-By-Hash: yes\n"
        "SHA256:\n"
        " " + "ab" * 32 + "  1234 main/binary-amd64/Packages.xz\n"
        " " + "cd" * 32 + " 99999 main/binary-amd64/Packages\n"
    )
    release = index.parse_release(text, source="test")
    assert release.date == DEFAULT_DATE and release.valid_until == DEFAULT_DATE + 7 * 86400
    assert release.acquire_by_hash and release.architectures == ("all", "amd64", "arm64")
    ref = release.files["main/binary-amd64/Packages.xz"]
    assert (ref.sha256, ref.size) == ("ab" * 32, 1234)
