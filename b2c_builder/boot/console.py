"""Parse the guest's serial console into a typed result: status, panic, phases, errors.

The console contract (issue 3) that the runtime prints and CI tools rely on:

- log lines may carry an uptime stamp, ``[12.34]: ...`` (printk's is ``[   12.345678] ...``);
- every phase is wrapped in GitLab collapsible-section markers::

      \\e[0Ksection_start:<epoch>:<name>[collapsed=true]\\r\\e[0K<title>
      \\e[0Ksection_end:<epoch>:<name>\\r\\e[0K

- ``Execution is over, pipeline status: N`` is printed exactly once;
- ``It's now safe to turn off your computer`` comes right before the final action;
- errors and warnings are lines starting with ``b2c: error:`` / ``b2c: warning:``;
- when ``b2c-builder run`` gave the guest a per-boot nonce (in the job initrd, read and
  deleted by the init before anything runs), each of those lines starts with
  ``[b2c:<nonce>] `` (``tag()``). Once a tagged line was seen, an untagged line that looks
  like one of them was printed by a container: it is ignored (``ConsoleResult.forged``), so
  that a container printing ``Execution is over, pipeline status: 0`` decides nothing.
  An init that never tags (an older image, a bare-metal console) is read as before.

``ConsoleParser.feed(line)`` returns the events a line carries, so that a runner can react
while the guest is still running; ``parse(lines)`` reads a whole log.

The pipeline's containers (init/pipeline.sh) each print, in order::

    section_start:<epoch>:pull_<kind>_<n>[collapsed=true]  Pull and create <kind> <n>: <spec>
    (podman's pull output)
    section_end:<epoch>:pull_<kind>_<n>
    section_start:<epoch>:<kind>_<n>                        Run <kind> <n>: <spec>
    (the container's output)
    section_end:<epoch>:<kind>_<n>
    [12.34]: The <kind> <n> exited with status <S>

with ``<kind>`` ``container`` or ``post_container``; a container that cannot be pulled ends
after its pull section with ``b2c: error: could not pull or create the container ...``.
``ContainerRunParser`` / ``container_runs(lines)`` turn that into one ``ContainerRun`` each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Exit codes of ``b2c-builder run`` other than the pipeline status the guest printed.

    They sit above what containers commonly return (0-125, podman's 125-127 and
    128+signal up to 159), so a CI job can tell a pipeline's verdict from a boot failure.
    """

    TIMEOUT = 250
    """The guest was still running when ``--timeout`` expired; QEMU was killed."""

    KERNEL_PANIC = 251
    """The kernel panicked before a pipeline status was printed."""

    NO_STATUS = 252
    """The guest ended (powered off, rebooted, reset) without printing a pipeline status."""

    QEMU_FAILED = 253
    """QEMU could not be started or exited with an error of its own."""

    PROTOCOL_ERROR = 254
    """The guest broke the console contract: several status lines, or a status above 255."""


STATUS_LINE = "Execution is over, pipeline status: "
SAFE_LINE = "It's now safe to turn off your computer"

# What may precede a message on a line: carriage returns, ANSI CSI sequences (colours,
# "erase line") and uptime stamps, the init's "[12.34]: " or printk's "[    3.257627] ".
_PREFIX_RE = re.compile(r"\A(?:\r|\x1b\[[0-9;?]*[A-Za-z]|\[\s*\d+(?:\.\d+)?\]:?\s?)+")
_STATUS_RE = re.compile(r"Execution is over, pipeline status: (-?\d+)\s*")
_SAFE_RE = re.compile(r"It's now safe to turn off your computer\s*")
_SECTION_RE = re.compile(
    r"section_(?P<kind>start|end):(?P<epoch>\d+):(?P<name>[^\s\[\r\x1b]+)"
    r"(?:\[(?P<options>[^\]]*)\])?\r?(?:\x1b\[0K)?(?P<title>.*)"
)
# A section marker always begins with "erase line"; output without a final newline can
# leave the marker that follows it in the middle of a console line.
_MARKER = "\x1b[0Ksection_"
_MESSAGE_RE = re.compile(r"(?:b2c: (?P<level>error|warning):|B2C (?P<LEVEL>ERROR|WARNING):?)\s*")
# Kernel messages can land in the middle of a user-space line: search, do not anchor.
_PANIC_RE = re.compile(r"Kernel panic - not syncing: ?(?P<reason>.*)")
_PANIC_END_RE = re.compile(r"---\[ end Kernel panic")


# Escape sequences (ECMA-48 / ECMA-35): CSI (colours, "erase line"), OSC (titles, links),
# character set designations ("ESC ( B", as tput sgr0 prints) and the other two-byte ones.
_ANSI_RE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]+[0-~]|[@-Z\\-_])"
)


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (CSI, OSC, character sets, two-byte escapes)."""
    return _ANSI_RE.sub("", text)


def tag(nonce: str) -> str:
    """The prefix of the init's contract lines for ``nonce`` (init/common.sh B2C_TAG)."""
    return f"[b2c:{nonce}] "


def strip_prefix(line: str) -> str:
    """The message part of a console line: no newline, leading CR, ANSI codes or stamps."""
    return _PREFIX_RE.sub("", line.rstrip("\r\n"), count=1)


def _section_marker(raw: str) -> tuple[str, re.Match[str]] | None:
    """The section marker a line carries and the output before it (usually ""), if any."""
    if match := _SECTION_RE.match(strip_prefix(raw)):
        return "", match
    position = raw.find(_MARKER, 1)
    if position > 0 and (match := _SECTION_RE.match(strip_prefix(raw[position:]))):
        return raw[:position], match
    return None


@dataclass(frozen=True)
class Status:
    """``Execution is over, pipeline status: N``."""

    value: int
    line: int


@dataclass(frozen=True)
class Panic:
    """``Kernel panic - not syncing: <reason>``."""

    reason: str
    line: int


@dataclass(frozen=True)
class PanicEnd:
    """``---[ end Kernel panic ...``: the kernel has finished printing its panic report."""

    line: int


@dataclass(frozen=True)
class SectionStart:
    name: str
    title: str
    epoch: int
    collapsed: bool
    line: int


@dataclass(frozen=True)
class SectionEnd:
    name: str
    epoch: int
    line: int


@dataclass(frozen=True)
class SafeToTurnOff:
    """``It's now safe to turn off your computer``: the final action comes next."""

    line: int


@dataclass(frozen=True)
class GuestMessage:
    """A ``b2c: error:`` or ``b2c: warning:`` line printed by the init."""

    level: str  # "error" or "warning"
    text: str
    line: int


Event = Status | Panic | PanicEnd | SectionStart | SectionEnd | SafeToTurnOff | GuestMessage


@dataclass(frozen=True)
class Section:
    """One phase of the boot, as delimited by its section markers."""

    name: str
    title: str
    start: int  # epoch seconds printed by the guest
    end: int | None  # None: the section never ended (timeout, panic, or a missing marker)
    line: int  # console line of its start marker

    @property
    def duration(self) -> int | None:
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True)
class ConsoleResult:
    """Everything the console said that matters to a caller."""

    statuses: tuple[Status, ...] = ()
    panic: Panic | None = None
    sections: tuple[Section, ...] = ()
    safe_to_turn_off: bool = False
    errors: tuple[GuestMessage, ...] = ()
    warnings: tuple[GuestMessage, ...] = ()
    problems: tuple[str, ...] = ()  # breaches of the console contract
    lines: int = 0
    # Lines that looked like the init's contract lines without the boot's tag (ignored).
    forged: tuple[int, ...] = ()

    @property
    def status(self) -> int | None:
        """The pipeline status, when it was printed exactly once and is a valid exit code."""
        if len(self.statuses) == 1 and 0 <= self.statuses[0].value <= 255:
            return self.statuses[0].value
        return None


@dataclass
class ConsoleParser:
    """Streaming parser: ``feed()`` each console line, read ``result()`` at any time.

    ``nonce``: the per-boot nonce ``b2c-builder run`` gave the guest (None: trust every line,
    as on a bare-metal console). Must be lower-case hexadecimal, 16 digits or more.
    """

    nonce: str | None = None
    _line: int = 0
    _tagged: bool = False
    _forged: list[int] = field(default_factory=list)
    _statuses: list[Status] = field(default_factory=list)
    _panic: Panic | None = None
    _open: list[SectionStart] = field(default_factory=list)
    _sections: list[Section] = field(default_factory=list)
    _safe: SafeToTurnOff | None = None
    _messages: list[GuestMessage] = field(default_factory=list)
    _problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.nonce is not None and not re.fullmatch(r"[0-9a-f]{16,}", self.nonce):
            raise ValueError(f"a console nonce is 16+ lower-case hex digits, not {self.nonce!r}")

    def feed(self, line: str) -> list[Event]:
        """Parse one line (with or without its newline); return the events it carries."""
        self._line += 1
        event = self._trusted(line)
        if event is not None:
            self._record(event)
            return [event]
        return []

    def display(self, line: str) -> str:
        """``line`` as a person should see it: without the boot's tag."""
        if self.nonce is None:
            return line
        return line.replace(tag(self.nonce), "", 1)

    def _trusted(self, raw: str) -> Event | None:
        """The event of ``raw``, if the init printed it (see the module's docstring)."""
        if self.nonce is None:
            return self._classify(raw) or self._kernel(raw)
        prefix = tag(self.nonce)
        at = raw.find(prefix)
        if at >= 0:
            self._tagged = True
            return self._classify(raw[at + len(prefix) :])
        if kernel := self._kernel(raw):
            return kernel
        if self._tagged:
            if self._classify(raw) is not None:
                self._forged.append(self._line)
            return None
        return self._classify(raw)

    def _kernel(self, raw: str) -> Event | None:
        """A kernel panic's first or last line (the kernel never tags)."""
        if _PANIC_END_RE.search(raw):  # it repeats the panic message: test it first
            return PanicEnd(self._line)
        if match := _PANIC_RE.search(raw):
            return Panic(match["reason"].strip(), self._line)
        return None

    def _classify(self, raw: str) -> Event | None:
        n = self._line
        text = strip_prefix(raw)
        if match := _STATUS_RE.fullmatch(text):
            return Status(int(match.group(1)), n)
        if _SAFE_RE.fullmatch(text):
            return SafeToTurnOff(n)
        if marker := _section_marker(raw):
            match = marker[1]
            epoch, name = int(match["epoch"]), match["name"]
            if match["kind"] == "end":
                return SectionEnd(name, epoch, n)
            options = match["options"] or ""
            collapsed = "collapsed=true" in options.split(",")
            return SectionStart(name, match["title"].strip(), epoch, collapsed, n)
        if match := _MESSAGE_RE.match(text):
            level = (match["level"] or match["LEVEL"]).lower()
            return GuestMessage(level, text[match.end() :].strip(), n)
        return None

    def _record(self, event: Event) -> None:
        match event:
            case Status():
                self._statuses.append(event)
                if len(self._statuses) == 2:
                    first = self._statuses[0].line
                    self._problems.append(
                        f"the pipeline status was printed more than once "
                        f"(lines {first} and {event.line})"
                    )
                if not 0 <= event.value <= 255:
                    self._problems.append(
                        f"pipeline status {event.value} on line {event.line} is not 0-255"
                    )
            case Panic():
                if self._panic is None:
                    self._panic = event
            case SectionStart():
                self._open.append(event)
            case SectionEnd():
                self._close(event)
            case SafeToTurnOff():
                if self._safe is None:
                    self._safe = event
                    if not self._statuses:
                        self._problems.append(
                            f"'{SAFE_LINE}' on line {event.line} came before any pipeline status"
                        )
            case GuestMessage():
                self._messages.append(event)
            case PanicEnd():
                pass

    def _close(self, end: SectionEnd) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            start = self._open[index]
            if start.name == end.name:
                del self._open[index]
                self._sections.append(
                    Section(start.name, start.title, start.epoch, end.epoch, start.line)
                )
                return
        self._problems.append(f"section '{end.name}' ended on line {end.line} but never started")

    def result(self) -> ConsoleResult:
        """The result so far; sections still open are listed with ``end=None``."""
        unfinished = [Section(s.name, s.title, s.epoch, None, s.line) for s in self._open]
        sections = sorted([*self._sections, *unfinished], key=lambda s: s.line)
        return ConsoleResult(
            statuses=tuple(self._statuses),
            panic=self._panic,
            sections=tuple(sections),
            safe_to_turn_off=self._safe is not None,
            errors=tuple(m for m in self._messages if m.level == "error"),
            warnings=tuple(m for m in self._messages if m.level == "warning"),
            problems=tuple(self._problems),
            lines=self._line,
            forged=tuple(self._forged),
        )


def parse(lines: Iterable[str], *, nonce: str | None = None) -> ConsoleResult:
    """Parse a whole serial log, given as lines split on ``\n`` only (``nonce``: see
    ConsoleParser).

    Not ``str.splitlines()``: it also splits on the ``\r`` inside section markers.
    """
    parser = ConsoleParser(nonce)
    for line in lines:
        parser.feed(line)
    return parser.result()


def log_lines(path: Path) -> list[str]:
    """The lines of a serial log file as ``b2c-builder run --serial-log`` writes it (raw
    bytes, decoded with backslash escapes), split on ``\n`` only."""
    lines = path.read_bytes().decode(errors="backslashreplace").split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline ending the last line does not start another
    return lines


def read_log(path: Path, *, nonce: str | None = None) -> ConsoleResult:
    """Parse a serial log file as ``b2c-builder run --serial-log`` writes it (raw bytes)."""
    return parse(log_lines(path), nonce=nonce)


# --- the pipeline's containers -------------------------------------------------------------


class ContainerKind(StrEnum):
    """The lists of containers the init runs, as named in its section markers."""

    CONTAINER = "container"  # b2c.container: the pipeline
    POST_CONTAINER = "post_container"  # b2c.post_container: after the pipeline, always


@dataclass(frozen=True)
class ContainerRun:
    """One container of the pipeline as the serial console showed it.

    ``status`` is the exit status the init logged, ``None`` when there is none: the container
    could not be pulled or created, or the boot ended while it ran (``error`` says which).
    ``duration`` is the time it ran, in seconds (0.0 when it never ran). ``output`` is its
    console output, each line as printed minus its line ending (ANSI codes, kernel messages
    and all); for a container that never ran, the output of its pull instead. ``started``
    is the epoch (seconds, the guest's clock) at which it started to run, if it did.
    """

    kind: ContainerKind
    index: int  # 1-based, within its kind
    spec: str  # the b2c.container value, as the init printed it
    status: int | None
    duration: float
    output: tuple[str, ...]
    error: str | None = None
    started: int | None = None

    @property
    def name(self) -> str:
        """``container_1``, ``post_container_2``: the init's name for it."""
        return f"{self.kind}_{self.index}"


_RUN_SECTION_RE = re.compile(r"(?P<pull>pull_)?(?P<kind>post_container|container)_(?P<index>\d+)")
_RUN_TITLE_RE = re.compile(
    r"(?:Pull and create|Run) (?:post_container|container) \d+: (?P<spec>.*)"
)
_EXITED_RE = re.compile(
    r"The (?P<kind>post_container|container) (?P<index>\d+) exited with status (?P<status>\d+)\s*"
)
_PULL_ERROR = "could not pull or create the container"
# An uptime stamp opening a line: the init's "[12.34]: " or printk's "[   12.345678] ".
_STAMP_RE = re.compile(r"(?:\r|\x1b\[[0-9;?]*[A-Za-z])*\[\s*(?P<uptime>\d+(?:\.\d+)?)\]")


@dataclass
class _Run:
    kind: ContainerKind
    index: int
    spec: str
    pulling: bool = False
    running: bool = False
    pull_output: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    start_epoch: int | None = None
    end_epoch: int | None = None
    start_uptime: float | None = None
    end_uptime: float | None = None
    status: int | None = None
    error: str | None = None


@dataclass
class ContainerRunParser:
    """Streaming extraction of the containers' runs: ``feed()`` each console line (split on
    ``\\n`` only), read ``runs()`` at any time. See the module docstring for the markers.

    With the boot's ``nonce`` (see ``ConsoleParser``), once a tagged line was seen, untagged
    lines are only ever output: a container printing section markers or "The container N
    exited with status S" cannot add, end or judge a run.
    """

    nonce: str | None = None
    _runs: list[_Run] = field(default_factory=list)
    _uptime: float | None = None  # the last uptime stamp seen
    _tagged: bool = False

    def feed(self, line: str) -> None:
        """Take one console line (raw, with the boot's tag), with or without its ending."""
        raw = line.rstrip("\r\n")
        if self.nonce is not None:
            prefix = tag(self.nonce)
            at = raw.find(prefix)
            if at >= 0:
                self._tagged = True
                raw = raw[:at] + raw[at + len(prefix) :]
            elif self._tagged:
                self._untrusted_output(raw)
                return
        if stamp := _STAMP_RE.match(raw):
            self._uptime = float(stamp["uptime"])
        marker = _section_marker(raw)
        if marker is not None:
            before, match = marker
            if name := _RUN_SECTION_RE.fullmatch(match["name"]):
                if before:
                    self._output(before)
                self._section(match, name)
                return
        self._output(raw)

    def _current(self) -> _Run | None:
        return self._runs[-1] if self._runs else None

    def _find(self, kind: str, index: int) -> _Run | None:
        for run in reversed(self._runs):
            if run.kind == kind and run.index == index:
                return run
        return None

    def _section(self, match: re.Match[str], name: re.Match[str]) -> None:
        kind, index = ContainerKind(name["kind"]), int(name["index"])
        epoch = int(match["epoch"])
        title = match["title"].strip()
        spec = spec_match["spec"] if (spec_match := _RUN_TITLE_RE.fullmatch(title)) else title
        run = self._find(kind, index)
        if match["kind"] == "start":
            current = self._current()
            if current is not None:  # a marker went missing: never leave two runs open
                current.pulling = current.running = False
            if name["pull"] or run is None or run.start_epoch is not None:
                run = _Run(kind, index, spec)
                self._runs.append(run)
            if name["pull"]:
                run.pulling = True
            else:
                run.running, run.start_epoch, run.start_uptime = True, epoch, self._uptime
                run.spec = run.spec or spec
        elif run is not None:
            if name["pull"]:
                run.pulling = False
            elif run.running:
                run.running, run.end_epoch = False, epoch

    def _untrusted_output(self, raw: str) -> None:
        run = self._current()
        if run is not None and run.running:
            run.output.append(raw)
        elif run is not None and run.pulling:
            run.pull_output.append(raw)

    def _output(self, raw: str) -> None:
        run = self._current()
        if run is not None and run.running:
            run.output.append(raw)
            return
        if run is not None and run.pulling:
            run.pull_output.append(raw)
            return
        text = strip_prefix(raw)  # a line of the init's own
        if exited := _EXITED_RE.fullmatch(text):
            found = self._find(exited["kind"], int(exited["index"]))
            if found is not None and found.status is None:
                found.status = int(exited["status"])
                found.end_uptime = self._uptime
        elif (message := _MESSAGE_RE.match(text)) and run is not None:
            content = text[message.end() :].strip()
            level = (message["level"] or message["LEVEL"]).lower()
            pull_failed = level == "error" and content.startswith(_PULL_ERROR)
            if pull_failed and run.start_epoch is None and run.error is None:
                run.error = content

    def runs(self) -> tuple[ContainerRun, ...]:
        """The runs seen so far, in the order they started to be pulled."""
        return tuple(self._finish(run) for run in self._runs)

    def _finish(self, run: _Run) -> ContainerRun:
        error = run.error
        name = f"{run.kind} {run.index}"
        if run.status is None and error is None:
            if run.start_epoch is None:
                error = f"the {name} never ran: the boot ended while it was being pulled"
            elif run.end_epoch is None:
                error = f"the boot ended while the {name} was running"
            else:
                error = f"the init logged no exit status for the {name}"
        return ContainerRun(
            kind=run.kind,
            index=run.index,
            spec=run.spec,
            status=run.status,
            duration=self._duration(run),
            output=tuple(run.output if run.start_epoch is not None else run.pull_output),
            error=None if run.status is not None else error,
            started=run.start_epoch,
        )

    def _duration(self, run: _Run) -> float:
        """From the epochs of its markers (whole seconds), or from the uptime stamps around
        them when those agree with the epochs to within their one-second resolution."""
        if run.start_epoch is None:
            return 0.0
        if run.end_epoch is None:  # still running when the log ends
            if run.start_uptime is not None and self._uptime is not None:
                return max(0.0, round(self._uptime - run.start_uptime, 3))
            return 0.0
        seconds = float(run.end_epoch - run.start_epoch)
        if run.start_uptime is not None and run.end_uptime is not None:
            stamped = run.end_uptime - run.start_uptime
            if abs(stamped - seconds) < 1.0:
                return max(0.0, round(stamped, 3))
        return max(0.0, seconds)


def container_runs(lines: Iterable[str], *, nonce: str | None = None) -> tuple[ContainerRun, ...]:
    """The containers a serial log shows (``ContainerRunParser`` over every line), in order.
    ``nonce``: the boot's console nonce, when the lines are raw (tags not stripped).

    Containers the pipeline never reached (``b2c.pipefail``, a failed service) do not
    appear: the console says nothing about them.
    """
    parser = ContainerRunParser(nonce)
    for line in lines:
        parser.feed(line)
    return parser.runs()
