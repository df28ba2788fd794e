"""The only subprocess wrapper: argument lists, never a shell; failures name what to install."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from b2c_builder.config import ARCHES
from b2c_builder.errors import ToolError
from b2c_builder.log import log

# Which Debian package provides each host tool we call: used in "install X" hints.
PROVIDERS: dict[str, str] = {
    "gpgv": "gpgv",
    **{facts.qemu_binary: facts.qemu_package for facts in ARCHES.values()},
    "cpio": "cpio",
    "bsdtar": "libarchive-tools",
    "skopeo": "skopeo",
    "docker-registry": "docker-registry",
    "shellcheck": "shellcheck",
    "unzstd": "zstd",
    "mkfs.ext4": "e2fsprogs",
    "depmod": "kmod",
    "modprobe": "kmod",
    "busybox": "busybox-static",
    "xorriso": "xorriso",
    "mformat": "mtools",
    "mmd": "mtools",
    "mcopy": "mtools",
    "patch": "patch",
    "pkg-config": "pkgconf",
    "x86_64-linux-gnu-gcc": "gcc",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "riscv64-linux-gnu-gcc": "gcc-riscv64-linux-gnu",
    "powerpc64le-linux-gnu-gcc": "gcc-powerpc64le-linux-gnu",
    "s390x-linux-gnu-gcc": "gcc-s390x-linux-gnu",
    "nice": "coreutils",
}


def which(tool: str, *, reason: str) -> str:
    """Absolute path of ``tool`` or a ToolError saying what to install and why it is needed."""
    path = shutil.which(tool)
    if path is None:
        package = PROVIDERS.get(tool, tool)
        raise ToolError(
            f"Could not find '{tool}', which is required to {reason}",
            hint=f"install it: apt-get install {package}",
        )
    return path


def run(
    cmd: Sequence[str],
    *,
    reason: str,
    input: bytes | None = None,
    timeout: float | None = 600,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` (a list), capturing output. Raises ToolError on a missing tool or failure.

    ``env`` replaces the whole environment (None: inherit ours); ``cwd`` is the directory.
    """
    argv = [which(cmd[0], reason=reason), *cmd[1:]]
    log.debug("$ %s%s", f"(cd {shlex.quote(str(cwd))}) " if cwd else "", shlex.join(cmd))
    try:
        proc = subprocess.run(  # noqa: S603 - an argument list, never a shell
            argv,
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"'{cmd[0]}' took longer than {timeout}s to {reason}") from exc
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode(errors="backslashreplace").strip()
        raise ToolError(
            f"'{shlex.join(cmd)}' failed with exit code {proc.returncode} "
            f"while trying to {reason}: {stderr}"
        )
    return proc
