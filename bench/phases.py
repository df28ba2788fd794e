"""Phases of a boot, read from its console lines and the host's clock.

Each console line is recorded with the host's time since QEMU started (``qemu.RunResult
.started``): a serial console is unbuffered, so that is when the guest wrote it, with
sub-second resolution for every line (the init's GitLab section markers carry whole-second
epochs only). Where the line also carries the guest's own stamp (printk's ``[   1.234567]``,
the init's ``[1.23]:``), it is kept beside, as the guest's uptime.

The phases, in boot order (a phase ends at its event):

    qemu start -> kernel -> unpacked -> init -> modules -> network -> clock -> cache
    -> pull (pull and create) -> first_output -> container_exit -> poweroff -> qemu_exit
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from b2c_builder.boot.console import strip_prefix

PHASES: tuple[str, ...] = (
    "kernel",
    "unpacked",
    "init",
    "modules",
    "network",
    "clock",
    "cache",
    "pull",
    "first_output",
    "container_exit",
    "poweroff",
    "qemu_exit",
)
DESCRIPTIONS = {
    "kernel": "kernel starts (first console line)",
    "unpacked": "initramfs unpacked (Freeing initrd memory)",
    "init": "/init runs",
    "modules": "kernel modules loaded",
    "network": "network up",
    "clock": "clock set",
    "cache": "cache set up",
    "pull": "image pulled and container created",
    "first_output": "container's first output",
    "container_exit": "container exited",
    "poweroff": "power-off (reboot: Power down)",
    "qemu_exit": "QEMU exits",
}

_SECTION_END = re.compile(r"section_end:\d+:(?P<name>[^\s\r\x1b]+)")
_STAMP = re.compile(r"^\[\s*(?P<t>\d+\.\d+)\]")


@dataclass(frozen=True)
class Event:
    """When a phase ended: host seconds since QEMU's start, and the guest's uptime stamp."""

    host: float
    guest: float | None


def _matchers(marker: str) -> dict[str, Callable[[str], bool]]:
    def section(name: str) -> Callable[[str], bool]:
        return lambda line: (m := _SECTION_END.search(line)) is not None and m["name"] == name

    return {
        "kernel": lambda line: True,
        "unpacked": lambda line: "Freeing initrd memory" in line,
        "init": lambda line: "Run /init as init process" in line,
        "modules": section("modules"),
        "network": section("network"),
        "clock": section("clock"),
        "cache": section("cache"),
        "pull": section("pull_container_1"),
        "first_output": lambda line: _is_marker_line(strip_prefix(line), marker),
        "container_exit": lambda line: "The container 1 exited with status" in line,
        "poweroff": lambda line: "reboot: Power down" in line or "reboot: Restarting" in line,
    }


def _is_marker_line(line: str, marker: str) -> bool:
    """``line`` is the marker's own line: the marker alone, or the marker followed by a kernel
    message that the console wrote before the marker's newline ("B2C-BENCH-42[    2.27] tsc:
    ..."; printk does not wait for a user's line to end). Lines that only contain the marker
    do not count: the kernel echoes its command line, which may quote the marker's recipe, and
    the init's own log lines quote the container's command."""
    text = line.strip()
    rest = text.removeprefix(marker)
    return text.startswith(marker) and (not rest or _STAMP.match(rest) is not None)


def events(lines: Sequence[tuple[float, str]], marker: str, qemu_exit: float) -> dict[str, Event]:
    """The first occurrence of each phase's event in ``lines`` ((host seconds, line) pairs).

    ``marker`` is the line the container (or the floor's /init) prints first; phases whose
    event never appears (the floor has no modules or network) are left out.
    """
    found: dict[str, Event] = {}
    matchers = _matchers(marker)
    for host, line in lines:
        for phase, matches in matchers.items():
            if phase not in found and matches(line):
                stamp = _STAMP.match(line.lstrip("\r"))
                found[phase] = Event(host, float(stamp["t"]) if stamp else None)
    found["qemu_exit"] = Event(qemu_exit, None)
    return found


@dataclass(frozen=True)
class Spread:
    """min / median / max of one figure over several runs (seconds, or a ratio)."""

    low: float
    median: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(min(values), statistics.median(values), max(values))

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"


def spreads(runs: Sequence[dict[str, Event]]) -> dict[str, Spread]:
    """Per phase, the spread of its host time over ``runs`` (only phases every run has)."""
    return {
        phase: Spread.of([run[phase].host for run in runs])
        for phase in PHASES
        if runs and all(phase in run for run in runs)
    }
