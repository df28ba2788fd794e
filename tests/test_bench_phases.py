"""bench/phases.py: which console lines end which phase, the bench's argument checks and its
boot order (the bench itself boots QEMU and is run by `make bench`, not by pytest)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.__main__ import _round_order
from bench.phases import events
from tests.conftest import ROOT

MARKER = "B2C-BENCH-42"


def test_first_output_is_the_markers_line_even_with_a_kernel_message_on_it() -> None:
    # Seen on the floor: printk wrote "tsc: Refined ..." between the marker and its newline.
    lines = [
        (1.0, "[    0.000000] Command line: console=ttyS0 sh -c 'echo B2C-BENCH-$((6*7))'"),
        (2.0, "[2.10]: Pull and create container 1: sh -c 'echo B2C-BENCH-42'"),
        (2.5, "B2C-BENCH-421"),
        (3.0, "B2C-BENCH-42[    2.277223] tsc: Refined TSC clocksource calibration: 2596.129 MHz"),
        (3.5, "B2C-BENCH-42"),
    ]
    assert events(lines, MARKER, 4.0)["first_output"].host == 3.0


def test_a_line_that_only_contains_the_marker_is_not_the_first_output() -> None:
    lines = [(1.0, "echo B2C-BENCH-42"), (2.0, "B2C-BENCH-42 and more"), (3.0, "B2C-BENCH-42")]
    assert events(lines, MARKER, 4.0)["first_output"].host == 3.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--machine", "pc"], "--machine 'pc' cannot boot amd64 guests"),
        (["--runs", "0"], "--runs must be at least 1, not 0"),
    ],
)
def test_bad_bench_arguments_fail_before_building(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "work dir" not in proc.stdout


def test_each_release_variant_follows_the_floor_in_turn_and_takes_each_place() -> None:
    names = ["floor", "registry", "local", "cache disk", "cache disk, kept"]
    assert _round_order(names, 0) == names  # the warm-up round
    measured = [_round_order(names, i) for i in range(1, len(names))]
    assert all(order[0] == "floor" and sorted(order) == sorted(names) for order in measured)
    for place in range(1, len(names)):
        assert sorted(order[place] for order in measured) == sorted(names[1:])
    # More rounds than release variants start the rotation over.
    assert _round_order(names, len(names)) == names
    assert _round_order(["floor"], 3) == ["floor"]
