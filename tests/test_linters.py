"""The linters are tests: ruff, mypy --strict and shellcheck stay clean (CI runs them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from b2c_builder.config import ARCHES
from tests import conftest
from tests.conftest import ROOT, require_tool


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_check() -> None:
    proc = _run(sys.executable, "-m", "ruff", "check", "b2c_builder", "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format() -> None:
    proc = _run(sys.executable, "-m", "ruff", "format", "--check", "b2c_builder", "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict() -> None:
    proc = _run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_init_sources() -> None:
    require_tool("shellcheck")
    scripts = sorted(str(p) for p in Path(ROOT, "init").iterdir() if p.is_file())
    assert scripts
    proc = _run("shellcheck", *scripts)
    assert proc.returncode == 0, proc.stdout + proc.stderr


_RAW_SKIP = re.compile(r"pytest\.skip\s*\(")


def test_tests_skip_only_through_the_require_helper() -> None:
    """A raw pytest.skip ignores B2C_REQUIRE_ALL, so CI would pass without running the test:
    missing tools and privileges go through tests.conftest.require (skip here, fail in CI)."""
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        if path.name != "conftest.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _RAW_SKIP.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize("require_all", [False, True])
def test_require_skips_on_a_laptop_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, require_all: bool
) -> None:
    monkeypatch.setattr(conftest, "REQUIRE_ALL", require_all)
    conftest.require(True, "never reported")  # present: nothing happens
    expected = pytest.fail.Exception if require_all else pytest.skip.Exception
    with pytest.raises(expected, match="no-such-tool-b2c is not installed"):
        conftest.require_tool("no-such-tool-b2c")


# Every host tool the tests run -> the Debian package that brings it: one of the Makefile's
# BUILD_DEBS/TEST_DEBS, or a package that every Debian system has (Essential or required).
TEST_TOOLS = {
    "bsdtar": "libarchive-tools",
    "busybox": "busybox-static",
    "chattr": "e2fsprogs",
    "chronyd": "chrony",
    "chroot": "coreutils",
    "cp": "coreutils",
    "cpio": "cpio",
    "depmod": "kmod",
    "docker-registry": "docker-registry",
    "dpkg": "dpkg",
    "dpkg-deb": "dpkg",
    "env": "coreutils",
    "find": "findutils",
    "gcc": "gcc",
    "gpg": "gpg",
    "gpg-agent": "gpg-agent",
    "gpgconf": "gpg",  # a Depends of gpg
    "debugfs": "e2fsprogs",
    "gpgv": "gpgv",
    "patch": "patch",
    "pkg-config": "pkgconf",
    "x86_64-linux-gnu-gcc": "gcc",
    "grub-mknetdir": "grub-common",
    "grub-script-check": "grub-common",
    "mtype": "mtools",
    "xorriso": "xorriso",
    "ldd": "libc-bin",
    "mkfs.ext4": "e2fsprogs",
    "modprobe": "kmod",
    "objcopy": "binutils",
    "qemu-img": "qemu-utils",
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-system-riscv64": "qemu-system-misc",
    "qemu-system-ppc64": "qemu-system-ppc",
    "qemu-system-s390x": "qemu-system-misc",
    "qemu-system-x86_64": "qemu-system-x86",
    "sha256sum": "coreutils",
    "shellcheck": "shellcheck",
    "skopeo": "skopeo",
    "tar": "tar",
    "truncate": "coreutils",
    "unshare": "util-linux",
    "xz": "xz-utils",
    "zstd": "zstd",
}
EVERY_DEBIAN = {"coreutils", "dpkg", "findutils", "libc-bin", "tar", "util-linux"}
# A tool named as the first word of an argument list, or asked for by require_tool.
_TOOL_USE = re.compile(
    r'(?:require_tool\(|(?:run|Popen)\(\s*\[|lambda \w+: \[)\s*"([a-z][\w.+-]*)"'
)


def _make_list(name: str) -> set[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{name} :=")]
    words = line.split(":=", 1)[1].split()
    return {w for w in words if not w.startswith("$(")}


def test_every_host_tool_of_the_tests_is_installed_by_make() -> None:
    """A fresh machine has only what `make deps-test` installs: every tool a test runs must
    come from TEST_DEBS (or be on every Debian system), never from what a machine happened
    to have."""
    used = {
        tool
        for path in sorted((ROOT / "tests").glob("*.py"))
        for tool in _TOOL_USE.findall(path.read_text())
        if path.name != "test_linters.py"
    }
    unknown = sorted(used - set(TEST_TOOLS))
    assert unknown == [], "add them to TEST_TOOLS (and their package to TEST_DEBS)"
    installed = _make_list("BUILD_DEBS") | _make_list("TEST_DEBS") | EVERY_DEBIAN
    assert {tool: pkg for tool, pkg in TEST_TOOLS.items() if pkg not in installed} == {}
    assert "qemu-system-x86_64" in used and "gpg" in used, "the scan finds the tools"
    # Tests that boot every architecture ask for its emulator by the table's name for it.
    emulators = {facts.qemu_binary for facts in ARCHES.values()}
    assert sorted(emulators - set(TEST_TOOLS)) == [], "map each qemu_binary in TEST_TOOLS"


def test_standalone_init_scripts_never_glob() -> None:
    """init/ scripts run on their own (a shebang: the udhcpc event script, the crun wrapper)
    get values from outside (a DHCP lease, podman's arguments): `set -f` comes before the
    first expansion. The libraries get it from common.sh, the first one /init inlines."""
    checked = []
    for path in sorted((ROOT / "init").iterdir()):
        lines = path.read_text().splitlines()
        if not lines or not lines[0].startswith("#!"):
            continue
        code = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        first_expansion = next((i for i, ln in enumerate(code) if "$" in ln), None)
        if first_expansion is not None:
            assert "set -f" in code[:first_expansion], path.name
            checked.append(path.name)
    assert {"udhcpc.script", "crun-no-pivot"} <= set(checked)
