"""bench/phases.py: which console lines end which phase, the bench's argument checks and its
boot order (the bench itself boots QEMU and is run by `make bench`, not by pytest)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.__main__ import _round_order
from bench.compare import Variant, VariantError, overlay_initrd, parse_variant, williams_orders
from bench.phases import events
from tests.conftest import ROOT, Release

MARKER = "B2C-BENCH-42"


def _run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` from the project's root, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip


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
    proc = _run_module("bench", *args)
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


# --- bench/compare.py: interleaved comparisons ----------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7])
def test_every_variant_follows_every_other_equally_often_in_the_design(count: int) -> None:
    orders = williams_orders(count)
    assert len(orders) == (count if count % 2 == 0 else 2 * count)
    # A Latin square: each row boots every variant once, each place holds each one equally.
    assert all(sorted(row) == list(range(count)) for row in orders)
    for place in range(count):
        column = [row[place] for row in orders]
        assert {column.count(v) for v in range(count)} == {len(orders) // count}
    follows = Counter(pair for row in orders for pair in itertools.pairwise(row))
    pairs = [(a, b) for a in range(count) for b in range(count) if a != b]
    assert {follows[pair] for pair in pairs} <= {1 if count % 2 == 0 else 2}
    assert sum(follows.values()) == len(orders) * (count - 1)


def test_a_plain_rotation_is_what_the_design_avoids() -> None:
    # Rotating [A, B, C] boots B right after A in two rounds of three and never A after B:
    # the confound that once made a CPU model look 0.2 s faster (its boots followed the
    # floor's). The design boots each after each other equally often.
    rotations = [[(v + i) % 3 for v in range(3)] for i in range(3)]
    rotated = Counter(pair for row in rotations for pair in itertools.pairwise(row))
    assert rotated[(0, 1)] == 2 and rotated[(1, 0)] == 0
    design = Counter(pair for row in williams_orders(3) for pair in itertools.pairwise(row))
    assert design[(0, 1)] == design[(1, 0)] == 2


def test_variants_parse_from_a_name_and_shell_quoted_options(tmp_path: Path) -> None:
    (tmp_path / "rel").mkdir()
    (tmp_path / "ov").mkdir()
    (tmp_path / "img.cpio").write_bytes(b"070701")
    assert parse_variant("base") == Variant("base")
    assert parse_variant("floor=--floor --append 'quiet loglevel=3'") == Variant(
        "floor", floor=True, append="quiet loglevel=3"
    )
    full = parse_variant(
        f"new.2=--releases {tmp_path}/rel --image {tmp_path}/img.cpio --overlay {tmp_path}/ov "
        "--qemu-arg=-cpu --qemu-arg max,avx=off"
    )
    assert full == Variant(
        "new.2",
        releases=tmp_path / "rel",
        image=tmp_path / "img.cpio",
        overlay=tmp_path / "ov",
        qemu_args=("-cpu", "max,avx=off"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("=--floor", "the name before '=' must be"),
        ("a b=--floor", "the name before '=' must be"),
        ("x=--cpu max", "unrecognized arguments: --cpu max"),
        (
            "t=--append trace_event=sched:sched_switch trace_buf_size=32M quiet --floor",
            "unrecognized arguments: trace_buf_size=32M quiet (--append takes one word: quote "
            'several as --append "trace_event=sched:sched_switch trace_buf_size=32M quiet")',
        ),
        ("x=--append", "expected one argument"),
        ("x=--append 'quiet", "No closing quotation"),
        ("x=--releases /nonexistent", "--releases /nonexistent is not a folder"),
        ("x=--image /nonexistent.cpio", "--image /nonexistent.cpio is not a file"),
        ("x=--floor --overlay /tmp", "--floor boots the busybox-only floor"),
    ],
)
def test_a_bad_variant_is_named_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(VariantError, match=re.escape(message)):
        parse_variant(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "b", "a=--floor"], "two variants are named 'a': give each its own name"),
        (["q=--append", "quiet"], "quote the whole variant as one word: 'q=--append \"WORD"),
        (["--releases", "/", "a"], "/ is not a release folder (no kernel for amd64 in"),
        (["--json", "/nonexistent/runs.json", "a"], "the folder /nonexistent does not exist"),
        (["a=--bogus"], "variant 'a': unrecognized arguments: --bogus"),
        (["--runs", "0", "a"], "--runs must be at least 1, not 0"),
        (["--releases", "/nonexistent", "a"], "--releases /nonexistent is not a folder"),
        (["--console", "/dev/null/logs", "a"], "--console /dev/null/logs: Not a directory"),
        ([], "the following arguments are required: VARIANT"),
    ],
)
def test_bad_compare_arguments_fail_before_building(args: list[str], message: str) -> None:
    proc = _run_module("bench.compare", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout


def test_an_overlay_folder_becomes_a_cpio_the_kernel_unpacks_over_the_image(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ov"
    (folder / "usr/local/bin").mkdir(parents=True)
    (folder / "usr/local/bin/tool").write_text("#!/bin/sh\necho hi\n")
    (folder / "usr/local/bin/tool").chmod(0o755)
    (folder / "init.d").symlink_to("usr/local/bin")
    out = overlay_initrd(folder, tmp_path / "ov.cpio")
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], stdin=out.open("rb"), capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    assert re.search(r"^-rwxr-xr-x .* usr/local/bin/tool$", listing, re.M), listing
    assert re.search(r"^lrwxrwxrwx .* init\.d -> usr/local/bin$", listing, re.M), listing
    assert re.search(r"^drwxr-xr-x .* usr/local$", listing, re.M), listing


@pytest.mark.qemu
def test_compare_boots_each_variant_and_prints_the_phase_table(
    release: Release, tmp_path: Path
) -> None:
    # Two variants, two counted rounds (plus the warm-up): the floor, and the release with an
    # /init option; the table has both columns, the deltas and the floor ratio; --console
    # keeps each boot's console, timed as the phases are.
    out, logs = tmp_path / "runs.json", tmp_path / "logs" / "compare"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--runs", "2", "--releases",
         str(release.output), "--json", str(out), "--console", str(logs), "fl=--floor",
         "b2c=--append b2c.pipefail"],
        capture_output=True, text=True, timeout=900, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert "2 boots each, interleaved in a balanced order" in table
    assert re.search(r"^\| phase \| fl \| b2c \|$", table, re.M), table
    assert re.search(r"^\| /init runs \| [\d.]+ \([\d.]+-[\d.]+\) \| [\d.]+ ", table, re.M)
    assert re.search(r"^\| image pulled and container created \|  \| [\d.]+ ", table, re.M)
    assert re.search(
        r"^\| \*\*first output - fl's\*\* \| \+0\.00 s \| \+\d\.\d\d s \|$", table, re.M
    )
    ratio = re.search(r"^\| \*\*first output / fl's\*\* \| 1\.00x \| (\d+\.\d\d)x \|$", table, re.M)
    assert ratio is not None and float(ratio.group(1)) > 1.0, table
    boots = json.loads(out.read_text())
    assert [len(boots["fl"]), len(boots["b2c"])] == [2, 2]
    assert all("pull" in boot for boot in boots["b2c"]) and "pull" not in boots["fl"][0]
    assert proc.stderr.count("warm-up") == 2 and proc.stderr.count("run 2:") == 2
    assert sorted(p.name for p in logs.iterdir()) == [
        f"{name}.{label}.log" for name in ("b2c", "fl") for label in ("run-1", "run-2", "warm-up")
    ]
    for name in ("b2c", "fl"):
        for n, boot in enumerate(boots[name], 1):
            console = (logs / f"{name}.run-{n}.log").read_text().splitlines()
            marked = [line for line in console if line[8:].strip().startswith(MARKER)]
            assert marked and marked[0].startswith(f"{boot['first_output']['host']:7.3f} ")
    assert "b2c.pipefail" in (logs / "b2c.warm-up.log").read_text()
