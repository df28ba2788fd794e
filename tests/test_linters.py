"""The linters are tests: ruff, mypy --strict and shellcheck stay clean (CI runs them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
