"""The linters are tests: ruff, mypy --strict and shellcheck stay clean (CI runs them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
