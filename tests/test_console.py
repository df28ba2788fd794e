"""The serial console parser, against golden logs in tests/data/console/ and single lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from b2c_builder.boot.console import (
    ConsoleParser,
    ContainerKind,
    ContainerRun,
    ContainerRunParser,
    ExitCode,
    GuestMessage,
    Panic,
    PanicEnd,
    SafeToTurnOff,
    SectionEnd,
    SectionStart,
    Status,
    container_runs,
    log_lines,
    parse,
    read_log,
    strip_ansi,
    strip_prefix,
)

DATA = Path(__file__).parent / "data" / "console"
E = "\x1b[0K"


def test_successful_pipeline() -> None:
    result = read_log(DATA / "success.log")
    assert result.status == 3
    assert result.statuses == (Status(3, 29),)
    assert result.panic is None
    assert result.safe_to_turn_off
    assert result.problems == ()
    assert [(s.name, s.title, s.duration) for s in result.sections] == [
        ("b2c_setup", "Setting up the environment", 1),
        ("b2c_network", "Bringing up the network", 2),
        ("b2c_pipeline", "Running the pipeline", 5),
        ("b2c_container_1", "Container 1/1: docker://10.0.2.2:5000/b2c-test:latest", 5),
        ("b2c_shutdown", "Shutting down", 0),
    ]
    assert [w.text for w in result.warnings] == ["unknown option b2c.frobnicate=1 (ignored)"]
    assert result.errors == ()
    assert result.lines == 35


def test_kernel_panic() -> None:
    result = read_log(DATA / "panic.log")
    assert result.status is None
    assert result.panic == Panic("Attempted to kill init! exitcode=0x00000200", 12)
    assert [e.text for e in result.errors] == [
        "cannot mount cgroup2 on /sys/fs/cgroup: No such device"
    ]
    # The panic cut the setup phase short; that is not a breach of the contract.
    assert [(s.name, s.end) for s in result.sections] == [("b2c_setup", None)]
    assert result.problems == ()


def test_timeout_log_ends_mid_line_in_an_open_phase() -> None:
    result = read_log(DATA / "timeout.log")
    assert result.statuses == ()
    assert result.panic is None
    assert not result.safe_to_turn_off
    assert [(s.name, s.end is None) for s in result.sections] == [
        ("b2c_setup", False),
        ("b2c_pipeline", True),
        ("b2c_container_1", True),
    ]


def test_guest_that_ends_without_a_status() -> None:
    result = read_log(DATA / "no-status.log")
    assert (result.statuses, result.panic, result.safe_to_turn_off) == ((), None, False)


def test_two_status_lines_are_a_protocol_error() -> None:
    result = read_log(DATA / "two-statuses.log")
    assert [s.value for s in result.statuses] == [0, 1]
    assert result.status is None
    assert result.problems == ("the pipeline status was printed more than once (lines 11 and 13)",)


@pytest.mark.parametrize(
    "line",
    [
        "Execution is over, pipeline status: 7",
        "Execution is over, pipeline status: 7\r\n",
        "[   12.345] Execution is over, pipeline status: 7",
        "[12.34]: Execution is over, pipeline status: 7",
        "[12]: Execution is over, pipeline status: 7",
        "[    3.257627] Execution is over, pipeline status: 7",
        "[12.345]Execution is over, pipeline status: 7  ",
        "\x1b[1;32m[   12.345] Execution is over, pipeline status: 7",
        "\rExecution is over, pipeline status: 7",
    ],
)
def test_status_line_with_or_without_prefix(line: str) -> None:
    assert ConsoleParser().feed(line) == [Status(7, 1)]


@pytest.mark.parametrize(
    "line",
    [
        "echo 'Execution is over, pipeline status: 7'",  # a script that quotes it
        "Execution is over, pipeline status: seven",
        "Execution is over, pipeline status: 7 (approximately)",
        "Execution is over, pipeline status:",
        "[   12.345] the guest said: Execution is over, pipeline status: 7",
    ],
)
def test_not_a_status_line(line: str) -> None:
    assert ConsoleParser().feed(line) == []


def test_status_out_of_range_is_a_problem() -> None:
    result = parse(["Execution is over, pipeline status: 256"])
    assert result.status is None
    assert result.problems == ("pipeline status 256 on line 1 is not 0-255",)


def test_streaming_events_in_order() -> None:
    parser = ConsoleParser()
    lines = [
        "[    0.000000] Linux version 6.12",
        f"[    5.000] {E}section_start:100:b2c_pipeline[collapsed=true]\r{E}Running the pipeline",
        "b2c: error: the image could not be pulled",
        f"{E}section_end:104:b2c_pipeline\r{E}",
        "[    9.000] Execution is over, pipeline status: 125",
        "It's now safe to turn off your computer",
        "[    9.100] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000",
        "[    9.200] ---[ end Kernel panic - not syncing: Attempted to kill init! ]---",
    ]
    events = [event for line in lines for event in parser.feed(line)]
    assert events == [
        SectionStart("b2c_pipeline", "Running the pipeline", 100, True, 2),
        GuestMessage("error", "the image could not be pulled", 3),
        SectionEnd("b2c_pipeline", 104, 4),
        Status(125, 5),
        SafeToTurnOff(6),
        Panic("Attempted to kill init! exitcode=0x00000000", 7),
        PanicEnd(8),
    ]
    result = parser.result()
    assert result.status == 125
    assert result.problems == ()


def test_section_without_collapsed_option_and_nested_sections() -> None:
    result = parse(
        [
            f"{E}section_start:10:outer\r{E}Outer",
            f"{E}section_start:11:inner[collapsed=true]\r{E}Inner",
            f"{E}section_end:12:inner\r{E}",
            f"{E}section_end:13:outer\r{E}",
        ]
    )
    assert [(s.name, s.title, s.start, s.end) for s in result.sections] == [
        ("outer", "Outer", 10, 13),
        ("inner", "Inner", 11, 12),
    ]
    assert ConsoleParser().feed(f"{E}section_start:10:outer\r{E}Outer")[0] == SectionStart(
        "outer", "Outer", 10, False, 1
    )


def test_contract_breaches_are_reported() -> None:
    result = parse(
        [
            "It's now safe to turn off your computer",
            f"{E}section_end:12:ghost\r{E}",
            "Execution is over, pipeline status: 0",
        ]
    )
    assert result.status == 0
    assert result.problems == (
        "'It's now safe to turn off your computer' on line 1 came before any pipeline status",
        "section 'ghost' ended on line 2 but never started",
    )


def test_panic_interleaved_with_user_output() -> None:
    # printk can land in the middle of a line that user space had not finished.
    line = "Copying blob 6a0f3c[   42.1] Kernel panic - not syncing: Out of memory"
    assert ConsoleParser().feed(line) == [Panic("Out of memory", 1)]


def test_error_line_spellings() -> None:
    events = [
        ConsoleParser().feed(line)
        for line in ("[ 1.0] b2c: error: bad value", "B2C ERROR: bad value", "B2C WARNING x")
    ]
    assert events == [
        [GuestMessage("error", "bad value", 1)],
        [GuestMessage("error", "bad value", 1)],
        [GuestMessage("warning", "x", 1)],
    ]


def test_exit_codes_are_distinct_and_above_container_statuses() -> None:
    values = [int(code) for code in ExitCode]
    assert len(set(values)) == len(values) == 5
    assert all(159 < value < 256 for value in values)
    assert all(code.__doc__ for code in ExitCode)


_prefix = st.lists(
    st.sampled_from(["\r", "\x1b[0K", "\x1b[1;31m", "[    1.234567] ", "[12.3]", "[5.10]: "]),
    max_size=4,
)


@given(prefix=_prefix, status=st.integers(0, 255), newline=st.sampled_from(["", "\n", "\r\n"]))
def test_any_prefix_then_status(prefix: list[str], status: int, newline: str) -> None:
    line = "".join(prefix) + f"Execution is over, pipeline status: {status}" + newline
    assert strip_prefix(line) == f"Execution is over, pipeline status: {status}"
    assert parse([line]).status == status


# --- the containers' runs ------------------------------------------------------------------


def test_container_runs_of_a_whole_boot() -> None:
    lines = log_lines(DATA / "containers.log")
    runs = container_runs(lines)
    summary = [(r.name, r.status, r.duration, r.started, r.error) for r in runs]
    assert summary == [
        # The uptime stamps around container 1 (8.12 during the pull, 12.91) disagree with
        # its epochs (2 s): the epochs win.
        ("container_1", 1, 2.0, 1735689605, None),
        (
            "container_2",
            None,
            0.0,
            None,
            "could not pull or create the container (podman exit status 125, 3 attempts): "
            "docker://registry.example/missing:latest",
        ),
        # 20.10 (printk) to 20.85 fits the epochs' 1 s: the stamps refine it.
        ("container_3", 0, 0.75, 1735689615, None),
        ("post_container_1", 0, 0.75, 1735689616, None),
    ]
    assert [r.kind for r in runs] == [ContainerKind.CONTAINER] * 3 + [ContainerKind.POST_CONTAINER]
    assert runs[0].spec == (
        "docker://registry.example/kunit:latest sh -c 'modprobe b2c_demo_test; cat /results'"
    )
    assert runs[3].spec == "docker://registry.example/upload:latest"
    # The output is what lies between the run's markers, each line without its ending.
    kunit = (Path(__file__).parent / "data" / "ktap" / "kunit.log").read_text().split("\n")
    assert runs[0].output == tuple(kunit[:-1])
    # Output without a final newline: the end marker follows it on the same line.
    assert runs[2].output == ("a bell \x07 and a NUL \x00 in the output", "no newline at the end")
    # A container that was never created: its pull output says why.
    assert runs[1].output[1].startswith("Error: initializing source")
    assert len(runs[1].output) == 8
    # The same log still parses as before.
    assert read_log(DATA / "containers.log").status == 1


def test_a_glued_end_marker_still_ends_its_section() -> None:
    result = parse(
        [
            f"{E}section_start:10:container_1\r{E}Run container 1: docker://a",
            f"partial line{E}section_end:12:container_1\r{E}",
        ]
    )
    assert [(s.name, s.start, s.end) for s in result.sections] == [("container_1", 10, 12)]


def test_the_boot_ends_while_a_container_runs() -> None:
    lines = [
        f"{E}section_start:100:pull_container_1[collapsed=true]\r{E}Pull and create container 1: x",
        f"{E}section_end:101:pull_container_1\r{E}",
        "[    7.500000] a printk stamp right before the run",
        f"{E}section_start:101:container_1\r{E}Run container 1: x",
        "working...",
        "[   19.250000] rcu: INFO: rcu_preempt self-detected stall on CPU",
    ]
    (run,) = container_runs(lines)
    assert run == ContainerRun(
        kind=ContainerKind.CONTAINER,
        index=1,
        spec="x",
        status=None,
        duration=11.75,  # from the last stamp before the run to the last one seen
        output=("working...", "[   19.250000] rcu: INFO: rcu_preempt self-detected stall on CPU"),
        error="the boot ended while the container 1 was running",
        started=101,
    )


def test_the_boot_ends_during_a_pull() -> None:
    lines = [
        f"{E}section_start:100:pull_post_container_2[collapsed=true]\r{E}"
        "Pull and create post_container 2: docker://b",
        "Copying blob 6a0f3c81e7c0 [=====>   ] 12.0MiB / 48.1MiB",
    ]
    (run,) = container_runs(lines)
    assert (run.name, run.spec, run.status, run.duration, run.started) == (
        "post_container_2",
        "docker://b",
        None,
        0.0,
        None,
    )
    assert run.error == "the post_container 2 never ran: the boot ended while it was being pulled"
    assert run.output == ("Copying blob 6a0f3c81e7c0 [=====>   ] 12.0MiB / 48.1MiB",)


def test_container_output_cannot_fake_the_init() -> None:
    lines = [
        f"{E}section_start:100:container_1\r{E}Run container 1: docker://a",
        "[1.00]: The container 1 exited with status 0",
        "b2c: error: could not pull or create the container (podman exit status 1, 1 attempts): x",
        f"{E}section_end:105:container_1\r{E}",
        "[9.00]: The container 1 exited with status 4",
    ]
    (run,) = container_runs(lines)
    assert (run.status, run.error, run.duration) == (4, None, 5.0)
    assert run.output == tuple(lines[1:3])


def test_a_missing_exit_line_and_a_streaming_parser() -> None:
    parser = ContainerRunParser()
    parser.feed(f"{E}section_start:100:container_1\r{E}Run container 1: a\r\n")
    assert parser.runs()[0].error == "the boot ended while the container 1 was running"
    parser.feed(f"{E}section_end:103:container_1\r{E}\r\n")
    (run,) = parser.runs()
    assert (run.status, run.duration, run.error) == (
        None,
        3.0,
        "the init logged no exit status for the container 1",
    )
    assert (
        container_runs(["no containers here", "[1.0]: The container 1 exited with status 0"]) == ()
    )


def test_strip_ansi() -> None:
    text = "\x1b[1;31mred\x1b(B\x1b[m \x1b]0;title\x07text\x1b[0K \x1bMx \x1b]8;;http://a\x1b\\y"
    assert strip_ansi(text) == "red text x y"
