"""The arm64 release boots under qemu-system-aarch64 (TCG) and runs an arm64 container.

The test image's busybox comes from Debian's arm64 busybox-static package, fetched and
verified with the project's own archive client.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from b2c_builder.build.debian import deb, download, index, sources
from b2c_builder.build.rootfs import Origin
from b2c_builder.config import DEFAULT_KEYRING, Arch
from tests.conftest import (
    RELEASE_ARGS,
    ROOT,
    Release,
    build_release,
    require_tool,
    shared_cache,
)
from tests.oci import busybox_layer, make_layout
from tests.registry import Registry

pytestmark = [pytest.mark.qemu, pytest.mark.network]


@pytest.fixture(scope="module")
def arm64_release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    return build_release(
        tmp_path_factory.mktemp("arm64"), shared_cache(), *RELEASE_ARGS, arch="arm64"
    )


@pytest.fixture(scope="module")
def arm64_image(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    session = download.make_session()
    archive = index.open_archive(
        session,
        sources.default_mirror(),
        "trixie",
        Arch.arm64,
        keyring=DEFAULT_KEYRING,
        cache_dir=shared_cache(),
    )
    package = archive["busybox-static"]
    path = download.fetch(
        session, archive.url_for(package), package.sha256, package.size, shared_cache()
    )
    staging = deb.new_staging(Arch.arm64)
    deb.extract_into(staging, path, Origin(package.name, package.version))
    work = tmp_path_factory.mktemp("arm64-oci")
    busybox = work / "busybox"
    busybox.write_bytes(staging.read("usr/bin/busybox"))
    layout = make_layout(work / "layout", busybox_layer(busybox), cmd=["/bin/sh"], arch="arm64")
    registry.push(layout, "b2c-test-arm64")
    return f"docker://{registry.guest_host}/b2c-test-arm64:latest"


def test_arm64_container_status_is_the_run_exit_code(
    arm64_release: Release, arm64_image: str
) -> None:
    require_tool("qemu-system-aarch64")
    append = (
        f'b2c.container="--tls-verify=false {arm64_image} '
        "sh -c 'echo B2C-ARM64-$((6*7)) $(uname -m); exit 3'\""
    )
    proc = subprocess.run(
        [
            sys.executable, "-m", "b2c_builder", "run",
            "--arch", "arm64",
            "--accel", "tcg",
            "--kernel", str(arm64_release.kernel),
            "--initrd", str(arm64_release.image),
            "--initrd", str(arm64_release.modules),
            "--timeout", "600",
            "--append", append,
        ],
        capture_output=True, text=True, timeout=700, cwd=ROOT,
    )  # fmt: skip
    console = (proc.stdout + proc.stderr).replace("\r", "")
    assert "\nB2C-ARM64-42 aarch64" in console, console[-4000:]
    assert "Execution is over, pipeline status: 3" in console, console[-4000:]
    assert proc.returncode == 3, console[-4000:]


def test_arm64_image_is_arm64(arm64_release: Release) -> None:
    manifest = arm64_release.manifest.read_text()
    assert "/usr/lib/aarch64-linux-gnu/libc.so.6" in manifest
    assert "/usr/lib/ld-linux-aarch64.so.1" in manifest
    assert arm64_release.image.stat().st_size < 20 * 2**20
