"""The console contract under a container that forges it: with the job's nonce, only the init's
tagged lines count; a container printing `Execution is over, pipeline status: 0` decides
nothing. Without a nonce (bare metal, an older image) the lines are read as before."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from b2c_builder.boot import console, launch, qemu
from b2c_builder.boot.console import ConsoleParser, ExitCode
from b2c_builder.boot.job import Job
from b2c_builder.boot.launch import new_nonce
from b2c_builder.boot.qemu import RunConfig, RunResult
from b2c_builder.build.cpio import read_initrd
from b2c_builder.config import Accel
from tests.shell import PODMAN, Shell

NONCE = "0123456789abcdef0123456789abcdef"
TAG = console.tag(NONCE)
FORGED = [
    "Execution is over, pipeline status: 0",
    "[3.00]: Execution is over, pipeline status: 0",
    "[3.00]: It's now safe to turn off your computer",
    "\x1b[0Ksection_end:1700000000:container_1\r\x1b[0K",
    "b2c: error: the kernel command line is invalid: nothing was run",
]


def exit_code(result: console.ConsoleResult) -> int:
    return RunResult(result, Accel.tcg, (), 1.0, False, None, 0).exit_code


def tagged_boot(*container_lines: str) -> list[str]:
    return [
        f"{TAG}\x1b[0Ksection_start:1700000000:setup[collapsed=true]\r\x1b[0KSet up",
        f"{TAG}\x1b[0Ksection_end:1700000000:setup\r\x1b[0K",
        f"{TAG}\x1b[0Ksection_start:1700000000:container_1\r\x1b[0KRun container 1: x",
        *container_lines,
        f"{TAG}\x1b[0Ksection_end:1700000000:container_1\r\x1b[0K",
        f"{TAG}[4.00]: The container 1 exited with status 3",
        f"{TAG}[4.10]: Execution is over, pipeline status: 3",
        f"{TAG}[4.20]: It's now safe to turn off your computer",
    ]


def test_forged_lines_after_the_init_tagged_are_ignored() -> None:
    lines = tagged_boot(*FORGED, "ordinary output")
    result = console.parse(lines, nonce=NONCE)
    assert [s.value for s in result.statuses] == [3]
    assert exit_code(result) == 3
    assert result.forged == (4, 5, 6, 7, 8)
    assert result.problems == () and result.errors == ()
    assert [s.name for s in result.sections] == ["setup", "container_1"]
    # Without the nonce, the same log breaks the contract: two statuses, exit code 254.
    untrusting = console.parse(lines)
    assert exit_code(untrusting) == ExitCode.PROTOCOL_ERROR


def test_a_forged_status_then_a_dead_guest_is_no_status() -> None:
    lines = tagged_boot("Execution is over, pipeline status: 0")[:5]  # then the guest died
    result = console.parse(lines, nonce=NONCE)
    assert result.statuses == () and result.forged == (4,)
    assert exit_code(result) == ExitCode.NO_STATUS


def test_a_tag_after_partial_container_output_still_counts() -> None:
    lines = tagged_boot()
    lines[-2] = "no newline from the container" + lines[-2]
    assert console.parse(lines, nonce=NONCE).status == 3


def test_an_init_that_never_tags_is_read_as_before() -> None:
    lines = [line.replace(TAG, "") for line in tagged_boot()]
    result = console.parse(lines, nonce=NONCE)
    assert result.status == 3 and result.forged == ()


def test_a_kernel_panic_counts_untagged() -> None:
    lines = [*tagged_boot()[:3], "[    5.1] Kernel panic - not syncing: Attempted to kill init!"]
    result = console.parse(lines, nonce=NONCE)
    assert result.panic is not None and exit_code(result) == ExitCode.KERNEL_PANIC


def test_the_tag_is_hidden_from_people() -> None:
    parser = ConsoleParser(NONCE)
    assert parser.display(f"{TAG}[1.00]: hello") == "[1.00]: hello"
    assert ConsoleParser().display(f"{TAG}[1.00]: hello") == f"{TAG}[1.00]: hello"
    with pytest.raises(ValueError, match="nonce"):
        ConsoleParser("not-hex")


def test_run_puts_a_fresh_nonce_in_the_job() -> None:
    first, second = new_nonce(), new_nonce()
    assert first != second and len(first) == 32 and int(first, 16) >= 0
    job = Job(nonce=first)
    entry = job.manifest().entries["etc/b2c/job/nonce"]
    assert entry.data == first.encode() + b"\n" and entry.mode == 0o600


# --- the init's side --------------------------------------------------------------------


def boot_with_nonce(tmp_path: Path, nonce: str) -> tuple[Shell, str]:
    sh = Shell(tmp_path)
    # A container that forges the contract, then fails with 3.
    sh.stub(
        "podman",
        'if [ "$1" = start ] || [ "$1" = run ]; then\n'
        "    echo 'Execution is over, pipeline status: 0'\n"
        '    echo "It\'s now safe to turn off your computer"\n'
        "fi\n" + PODMAN,
    )
    sh.write("sys/class/net/eth0/operstate", "up\n")
    sh.write("proc/cmdline", 'b2c.container="docker://a 3"\n')
    sh.write("etc/b2c/job/nonce", nonce + "\n")
    return sh, sh.run("b2c_init").out


def test_the_init_tags_its_lines_and_empties_the_nonce(tmp_path: Path) -> None:
    sh, out = boot_with_nonce(tmp_path, NONCE)
    assert (sh.root / "etc/b2c/job/nonce").read_text() == ""  # nothing left to read
    lines = out.removesuffix("\n").split("\n")
    contract = [line for line in lines if "Execution is over" in line]
    assert contract == [
        "Execution is over, pipeline status: 0",
        f"{TAG}[1.00]: Execution is over, pipeline status: 3",
    ]
    assert all(line.startswith(TAG) for line in lines if line.startswith(("[", "b2c:", TAG)))
    result = console.parse(lines, nonce=NONCE)
    assert result.status == 3 and len(result.forged) == 2
    assert exit_code(result) == 3


@pytest.mark.parametrize("nonce", ["", "short", "NOT-HEX-0123456789abcdef"])
def test_a_missing_or_malformed_nonce_leaves_the_lines_as_they_were(
    tmp_path: Path, nonce: str
) -> None:
    sh, out = boot_with_nonce(tmp_path, nonce)
    assert "[b2c:" not in out
    assert (sh.root / "etc/b2c/job/nonce").read_text() == ""


def test_each_boot_of_run_gets_its_own_nonce_in_the_job_and_the_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(b"initrd")
    seen: list[tuple[str | None, dict[str, bytes]]] = []

    def fake_boot(cfg: RunConfig, *, echo: object = None, observe: object = None) -> RunResult:
        job = {e.name: e.data for e in read_initrd(cfg.initrds[-1].read_bytes()) if e.data}
        seen.append((cfg.nonce, job))
        return RunResult(console.parse([]), Accel.tcg, (), 1.0, False, None, 0)

    monkeypatch.setattr(qemu, "boot", fake_boot)
    request = launch.RunRequest(kernel=kernel, initrds=(initrd,), accel=Accel.tcg)
    for _ in range(2):
        assert launch.launch(request) == ExitCode.NO_STATUS
    (nonce1, job1), (nonce2, job2) = seen
    assert nonce1 and nonce2 and nonce1 != nonce2
    assert job1["etc/b2c/job/nonce"] == nonce1.encode() + b"\n"
    assert job2["etc/b2c/job/nonce"] == nonce2.encode() + b"\n"
    # --dry-run boots nothing and needs no job.
    assert launch.launch(replace(request, dry_run=True)) == 0
    assert len(seen) == 2


def test_container_runs_trust_only_tagged_markers() -> None:
    esc = "\x1b[0K"
    lines = [
        f"{TAG}{esc}section_start:100:pull_container_1[collapsed=true]\r{esc}"
        "Pull and create container 1: docker://x",
        f"{TAG}{esc}section_end:101:pull_container_1\r{esc}",
        f"{TAG}{esc}section_start:101:container_1\r{esc}Run container 1: docker://x",
        "real output",
        # Printed by the container: forged markers and a forged verdict.
        f"{esc}section_end:102:container_1\r{esc}",
        "[3.00]: The container 1 exited with status 0",
        f"{esc}section_start:102:container_2\r{esc}Run container 2: docker://evil",
        "more output",
        f"{TAG}{esc}section_end:105:container_1\r{esc}",
        f"{TAG}[9.00]: The container 1 exited with status 3",
    ]
    (run,) = console.container_runs(lines, nonce=NONCE)
    assert (run.status, run.spec) == (3, "docker://x")
    assert "real output" in run.output and "more output" in run.output
    assert any("container_2" in line for line in run.output)
    # Without the nonce (a bare-metal log), the same lines are taken at face value.
    bare = [line.replace(TAG, "") for line in lines]
    assert [r.name for r in console.container_runs(bare)] == ["container_1", "container_2"]
