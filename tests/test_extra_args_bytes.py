"""A b2c.extra_args_url document's bytes: a UTF-8 byte-order mark is dropped, CR is white space,
and any byte the parser cannot place is an error, never a silent drop; /init and
`b2c-builder check-extra-args` agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from b2c_builder.guest.options import lint_extra_args
from tests.conftest import b2c
from tests.shell import Result, Shell

BOM = b"\xef\xbb\xbf"
PARTS = (b"b2c.container=\"docker://r/a sh -c 'exit 0'\"", b"b2c.hostname=dut", b"b2c.pipefail")
GOOD = b" ".join(PARTS)


def extra_args(sh: Shell, data: bytes) -> Result:
    sh.write("doc", data)
    sh.stub(
        "wget",
        """\
        local out
        while [ $# -gt 0 ]; do [ "$1" = -O ] && out=$2; shift; done
        cat "$B2C_ROOT/doc" >"$out"
        """,
    )
    return sh.run(
        "b2c_parse_cmdline 'b2c.extra_args_url=http://h/x' cmdline\n"
        'b2c_extra_args; echo "rc=$?"\n'
        'printf "c=[%s] h=[%s] p=[%s]\\n" "$B2C_CONTAINER" "$B2C_HOSTNAME" "$B2C_PIPEFAIL"'
    )


@pytest.mark.parametrize(
    "data",
    [
        BOM + b"\r\n".join(PARTS) + b"\r\n",  # Windows: BOM and CRLF
        b"\r".join(PARTS) + b"\r",  # CR alone
        BOM + b"\t" + GOOD + b"\n\n",
    ],
    ids=["bom-crlf", "cr", "bom-tab"],
)
def test_bom_and_cr_lose_nothing(tmp_path: Path, data: bytes) -> None:
    result = extra_args(Shell(tmp_path), data)
    assert result.errors() == [] and result.warnings() == []
    assert "rc=0" in result.lines
    assert result.lines[-2:] == ["c=[docker://r/a sh -c 'exit 0'", "] h=[dut] p=[1]"]
    assert lint_extra_args(data) == []


BAD = {
    "bom-inside": (
        GOOD + b" " + BOM + b"b2c.poweroff_delay=3",
        f"the extra command line holds a byte-order mark (ef bb bf) at byte {len(GOOD) + 2}, "
        "not at its start",
    ),
    "nul": (GOOD + b"\0 b2c.poweroff_delay=3", "the extra command line holds a NUL byte"),
    "escape": (
        b"b2c.hostname=dut\x1b[0m b2c.pipefail",
        "the extra command line holds a control character (byte 1b) at byte 17: only "
        "printable text and white space can be placed",
    ),
    "nbsp": (
        # UTF-8's non-breaking space: its second byte is the kernel's white space, its first
        # is left alone in front of the option.
        b"b2c.hostname=dut \xc2\xa0b2c.pipefail",
        "the extra command line holds 'bytes c2', which is not a b2c option",
    ),
    "stray-word": (
        b"quiet " + GOOD,
        "the extra command line holds 'quiet', which is not a b2c option",
    ),
}


@pytest.mark.parametrize(("data", "error"), BAD.values(), ids=BAD.keys())
def test_a_byte_nothing_can_place_is_an_error(tmp_path: Path, data: bytes, error: str) -> None:
    result = extra_args(Shell(tmp_path), data)
    assert result.errors()[0] == f"b2c: error: {error}"
    assert "rc=2" in result.lines
    assert any(p.severity == "error" for p in lint_extra_args(data))


def test_stray_bytes_before_an_option_on_the_kernel_command_line_are_warned(
    tmp_path: Path,
) -> None:
    sh = Shell(tmp_path)
    sh.write("line", BOM + b"b2c.pipefail quiet b2c.hostname=dut")
    result = sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline; echo "rc=$?"\n'
        'echo "p=[$B2C_PIPEFAIL] h=[$B2C_HOSTNAME]"'
    )
    assert result.warnings() == [
        "b2c: warning: 'bytes ef bb bf 62 32 63 2e 70 69 70 65 66 61 69 6c' is not a b2c "
        "option: stray bytes before its name? (ignored)"
    ]
    assert result.lines[-2:] == ["rc=0", "p=[0] h=[dut]"]


def test_check_extra_args_command(tmp_path: Path) -> None:
    good = tmp_path / "good.cmdline"
    good.write_bytes(BOM + b"\r\n".join(PARTS) + b"\r\n")
    proc = b2c("check-extra-args", str(good))
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
    bad = tmp_path / "bad.cmdline"
    bad.write_bytes(b"quiet b2c.iface=eth0,dhcp " + GOOD)
    proc = b2c("check-extra-args", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.splitlines() == [
        "error: extra: 'quiet' is not a b2c option",
        "warning: b2c.iface: comes too late in the extra command line",
    ]
    # A document that cannot be read is an input error, 2 as for kconfig --check and diff.
    missing = tmp_path / "missing"
    proc = b2c("check-extra-args", str(missing))
    assert proc.returncode == 2, proc.stderr
    assert f"cannot read {missing}: No such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_lint_extra_args_reports_late_options_once_the_bytes_are_fine() -> None:
    problems = lint_extra_args(BOM + b"b2c.iface=eth0,dhcp\r\nb2c.pipefail\r\n")
    assert [(p.severity, p.option) for p in problems] == [("warning", "b2c.iface")]
