"""The real Debian archive, from the mirror in the host's apt sources (marked: network)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from b2c_builder.build.debian import download, index, resolve, sources
from b2c_builder.build.debian.deb import extract_into, new_staging
from b2c_builder.build.rootfs import Kind, Origin
from b2c_builder.config import DEFAULT_KEYRING, Arch

WANTED = ["podman", "crun", "conmon", "busybox-static"]


@pytest.mark.network
def test_trixie_amd64_closure_and_busybox(tmp_path: Path) -> None:
    mirror = sources.default_mirror()
    cache = tmp_path / "cache"
    with download.make_session() as session:
        start = time.monotonic()
        archive = index.open_archive(
            session, mirror, "trixie", "amd64", keyring=DEFAULT_KEYRING, cache_dir=cache
        )
        print(
            f"InRelease + Packages.xz fetched, verified and indexed in "
            f"{time.monotonic() - start:.1f}s ({len(archive)} packages)"
        )
        assert len(archive) > 50_000
        assert archive.date > 1_754_000_000  # trixie was released in August 2025

        packages = resolve.closure(archive, WANTED)
        names = [p.name for p in packages]
        assert set(WANTED) <= set(names)
        assert {"libc6", "libseccomp2"} <= set(names)
        assert names == sorted(names)
        print(
            f"closure of {' '.join(WANTED)}: {len(packages)} packages, "
            f"{sum(p.size for p in packages) / 2**20:.1f} MiB of .debs"
        )

        busybox = archive["busybox-static"]
        deb = download.fetch(session, archive.url_for(busybox), busybox.sha256, busybox.size, cache)
    staging = new_staging(Arch.amd64)
    extract_into(staging, deb, Origin(busybox.name, busybox.version))
    entry = staging[staging.resolve("bin/busybox") or "bin/busybox"]
    assert entry.kind is Kind.FILE and entry.path == "usr/bin/busybox"
    assert entry.data[:4] == b"\x7fELF" and entry.mode & 0o111
    assert entry.origin == Origin("busybox-static", busybox.version)
