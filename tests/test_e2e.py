"""End to end: build the release, boot it under QEMU (TCG), run a container from a local registry.

Every verdict comes from what the guest printed: the container's marker line and the pipeline
status that `b2c-builder run` turns into its exit code.
"""

from __future__ import annotations

import pytest

from tests.conftest import Release, b2c, require_tool

pytestmark = [pytest.mark.qemu, pytest.mark.network]


def boot(release: Release, append: str, *, timeout: int = 420) -> tuple[int, str]:
    require_tool("qemu-system-x86_64")
    proc = b2c(
        "run",
        "--kernel",
        str(release.kernel),
        "--initrd",
        str(release.image),
        "--initrd",
        str(release.modules),
        "--accel",
        "tcg",
        "--memory",
        "2G",
        "--timeout",
        str(timeout),
        "--append",
        append,
        timeout=timeout + 60,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("status", [3, 0])
def test_container_status_is_the_run_exit_code(
    release: Release, test_image: str, status: int
) -> None:
    # The marker is computed by the container's shell, so the init's log lines (which quote
    # the command line) can never satisfy the check.
    code, console = boot(
        release,
        f'b2c.container="--tls-verify=false {test_image} '
        f"sh -c 'echo B2C-E2E-$((6*7))-{status}; exit {status}'\"",
    )
    assert f"\nB2C-E2E-42-{status}" in console.replace("\r", ""), console[-4000:]
    assert f"Execution is over, pipeline status: {status}" in console
    assert code == status, console[-4000:]
