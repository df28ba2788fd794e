"""Shared fixtures: one real release build per session, a real registry, a pushed test image."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from b2c_builder.config import Arch
from tests.kernel import DebianKernel, fetch_debian_kernel
from tests.oci import busybox_layer, make_layout
from tests.registry import Registry, start_registry

ROOT = Path(__file__).resolve().parent.parent
# In CI (B2C_REQUIRE_ALL=1) a missing tool or privilege is a failure, never a skip.
REQUIRE_ALL = os.environ.get("B2C_REQUIRE_ALL") == "1"


def require(condition: bool, missing: str) -> None:
    """The one place that decides skip-or-fail when a test lacks a tool, a privilege or a file.

    ``missing`` says what is missing and how to get it. With B2C_REQUIRE_ALL=1 (CI, where
    `make test` installed everything) the test fails; elsewhere it is skipped. Tests never
    call pytest.skip themselves (tests/test_linters.py checks it).
    """
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{missing} (B2C_REQUIRE_ALL=1: missing means failed)")
    pytest.skip(missing)


def require_tool(name: str) -> str:
    """Absolute path of the host tool ``name``; skip or fail (see require) if it is absent."""
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (make deps-test installs it)")
    assert path is not None
    return path


def require_root(why: str) -> None:
    """Skip or fail (see require) unless the tests run as root; ``why`` names the need."""
    require(os.geteuid() == 0, f"needs root: {why}")


def b2c(*args: str, timeout: float = 1800, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "b2c_builder", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        cwd=ROOT,
    )


@dataclass(frozen=True)
class Release:
    output: Path
    image: Path
    modules: Path
    kernel: Path
    manifest: Path
    cache: Path


# The suite a test falls back to for an architecture whose packages in the default suite the
# mirror only partly serves (HTTP 404 for some current .debs: seen for trixie's ppc64el and
# s390x), so that the architecture is still built and booted on such a mirror.
FALLBACK_SUITE = "bookworm"


def mirror_lacks(stderr: str) -> list[str]:
    """The lines of a build's stderr that say the mirror answered 404 for a file."""
    return [line for line in stderr.splitlines() if "HTTP 404" in line]


def build_release(output: Path, cache: Path, *extra: str, arch: str = "amd64") -> Release:
    def build(*suite: str) -> subprocess.CompletedProcess[str]:
        return b2c(
            "build",
            "--arch",
            arch,
            "--output",
            str(output),
            "--cache-dir",
            str(cache),
            "--kernel-package",
            Arch(arch).facts.kernel_package,
            *extra,
            *suite,
        )

    proc = build()
    if mirror_lacks(proc.stderr) and "--suite" not in extra:
        proc = build("--suite", FALLBACK_SUITE)
    # A mirror that lacks even those is a missing prerequisite, not a failure of the build:
    # skipped on a laptop, failed in CI.
    missing = mirror_lacks(proc.stderr)
    require(not missing, f"the mirror does not serve every package: {missing[:1]}")
    assert proc.returncode == 0, proc.stderr
    (image,) = _outputs(output, f"initramfs.linux_{arch}.cpio*")
    (modules,) = _outputs(output, f"modules-*.linux_{arch}.cpio*")
    (kernel,) = _outputs(output, f"linux-*.linux_{arch}")
    return Release(
        output, image, modules, kernel, output / f"initramfs.linux_{arch}.manifest.json", cache
    )


def _outputs(output: Path, pattern: str) -> list[Path]:
    return [p for p in output.glob(pattern) if p.suffix != ".sha256"]


def shared_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "b2c-builder"


# Extra `build` options for the session's release, e.g. B2C_RELEASE_ARGS="--podman trimmed"
# to run the QEMU tests against another variant of the image.
RELEASE_ARGS = shlex.split(os.environ.get("B2C_RELEASE_ARGS", ""))


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """The default release (trixie, amd64, Debian kernel + modules), built once per session
    (with $B2C_RELEASE_ARGS added to the build options)."""
    return build_release(tmp_path_factory.mktemp("release"), shared_cache(), *RELEASE_ARGS)


@pytest.fixture(scope="session")
def debian_kernel() -> DebianKernel:
    """Debian's amd64 kernel and modules, fetched once through our own verified client."""
    return fetch_debian_kernel(shared_cache())


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_tool("docker-registry")
    require_tool("skopeo")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def test_image(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox image pushed to the registry; returns its reference as the guest sees it."""
    busybox = Path(require_tool("busybox")).resolve()
    layout = make_layout(
        tmp_path_factory.mktemp("oci") / "layout", busybox_layer(busybox), cmd=["/bin/sh"]
    )
    registry.push(layout, "b2c-test")
    return f"docker://{registry.guest_host}/b2c-test:latest"
