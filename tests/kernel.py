"""Debian's kernel for the tests, fetched through b2c_builder's own verified Debian client.

Never through the host's apt: the InRelease signature, the Packages hash and the .deb hash
are checked exactly as a build checks them, the suite is the build's default (not whatever
the host runs), and the .deb lands in the same SHA-256-keyed cache that the release build
uses, so a test session downloads the kernel once. The kernel image and its
lib/modules/<release> tree are written out once per package version, under
``<cache>/test-kernels/<package>_<version>/``, for the host tools (QEMU, depmod, modprobe)
that need files.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from b2c_builder.build import kmod
from b2c_builder.build.debian import deb, download, index, resolve, sources
from b2c_builder.build.rootfs import Kind, Origin
from b2c_builder.config import DEFAULT_KEYRING, DEFAULT_SUITE, Arch

ARCH = Arch.amd64


@dataclass(frozen=True)
class DebianKernel:
    """One Debian kernel package, unpacked for the tests."""

    package: str  # e.g. linux-image-6.12.57+deb13-amd64
    version: str  # the Debian package version
    release: str  # the kernel release, `uname -r` in its guests
    vmlinuz: Path
    modules: Path  # its lib/modules/<release> tree


@contextmanager
def kernel_archive(
    arch: Arch, suite: str, cache: Path
) -> Iterator[tuple[requests.Session, index.Archive, index.Package]]:
    """A session, ``suite``'s verified archive for ``arch`` (indexes cached in ``cache``) and
    the linux-image package that the arch's kernel metapackage (ArchFacts.kernel_package)
    depends on. Raises FetchError (HTTP 404 from a partial mirror)."""
    with download.make_session() as session:
        archive = index.open_archive(
            session,
            sources.default_mirror(),
            suite,
            arch,
            keyring=DEFAULT_KEYRING,
            cache_dir=cache,
        )
        meta = arch.facts.kernel_package
        packages = [p for p in resolve.closure(archive, [meta]) if p.name != meta]
        (image,) = [p for p in packages if p.name.startswith("linux-image-")]
        yield session, archive, image


def fetch_debian_kernel(cache: Path) -> DebianKernel:
    """Resolve, download (verified, cached in ``cache``) and unpack Debian's amd64 kernel."""
    with kernel_archive(ARCH, DEFAULT_SUITE, cache) as (session, archive, image):
        dest = cache / "test-kernels" / f"{image.name}_{image.version}"
        if not (dest / ".complete").exists():
            path = download.fetch(session, archive.url_for(image), image.sha256, image.size, cache)
            _unpack(path, Origin(image.name, image.version), dest)
    (modules,) = (dest / "lib/modules").iterdir()
    (vmlinuz,) = (dest / "boot").glob("vmlinuz-*")
    return DebianKernel(image.name, image.version, modules.name, vmlinuz, modules)


def _unpack(path: Path, origin: Origin, dest: Path) -> None:
    """Write the kernel image and the modules tree of the .deb at ``path`` into ``dest``."""
    staging = deb.new_staging(ARCH)
    deb.extract_into(staging, path, origin)
    tree = kmod.ModuleTree.from_manifest(staging, ARCH)
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "boot").mkdir(parents=True)
    (partial / "boot" / f"vmlinuz-{tree.version}").write_bytes(tree.kernel_image())
    prefix = tree.base + "/"
    for entry in staging:
        if not entry.path.startswith(prefix):
            continue
        target = partial / "lib/modules" / tree.version / entry.path[len(prefix) :]
        if entry.kind is Kind.DIR:
            target.mkdir(parents=True, exist_ok=True)
        elif entry.kind is Kind.FILE:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(entry.data)
        elif entry.kind is Kind.SYMLINK:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(entry.target, target)
    (partial / ".complete").touch()
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
