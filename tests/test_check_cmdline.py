"""`b2c-builder check-cmdline`: the option table's linter, for lab admins' boot entries."""

from __future__ import annotations

from tests.conftest import b2c


def test_clean_line_exits_zero() -> None:
    proc = b2c("check-cmdline", "b2c.container=\"docker://r/img:1 sh -c 'exit 0'\" b2c.pipefail")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_malformed_value_is_an_error_and_unknown_option_a_warning() -> None:
    proc = b2c("check-cmdline", "b2c.poweroff_delay=abc b2c.no_such_option=1 quiet")
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert any(line.startswith("error: b2c.poweroff_delay") for line in lines), lines
    assert any(line.startswith("warning: b2c.no_such_option") for line in lines), lines
    assert "Traceback" not in proc.stderr
