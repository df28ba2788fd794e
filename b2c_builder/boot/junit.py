"""Write a JUnit XML report of a boot's containers and of the KTAP / TAP results they printed.

The format is JUnit XML as Jenkins' junit plugin and GitLab's unit test reports read it
(GitLab's "Unit test reports" page lists the elements and attributes it parses)::

    <testsuites name tests failures errors skipped time>
      <testsuite name tests failures errors skipped time [timestamp]>   one per container
        <properties><property name value/>...</properties>
        <testcase classname name [time]>                                 the container itself
          [<failure|error|skipped message [type]>text</...>]             at most one
          [<system-out>text</system-out>]
        </testcase>
        <testcase .../>                                                  one per KTAP result
        <system-out>the container's console output</system-out>
      </testsuite>
    </testsuites>

GitLab shows a testcase's ``classname`` as its suite, and the text of its failure or error
element as its output: a failed container's testcase carries the last ``FAILURE_TAIL``
lines of its output there, a failed KTAP result its diagnostics. The whole output is the
testsuite's system-out, which Jenkins shows. A KTAP result's classname is the container's
name followed by its ancestors' names, joined with dots:
``container_1.main_test.example_test_3``; a passing result's diagnostics are its system-out.

Text goes through ``xml_safe()``: ANSI escape sequences are removed and characters that
XML 1.0 cannot carry are written as ``\\xNN`` escapes, so the file always parses.
"""

from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from b2c_builder.boot import ktap
from b2c_builder.boot.console import ContainerRun, strip_ansi
from b2c_builder.errors import ReportError

FAILURE_TAIL = 50  # lines of a failed container's output repeated in its <failure> text


class Outcome(StrEnum):
    """What a testcase says, and the element it carries."""

    PASSED = "passed"  # no element
    FAILURE = "failure"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Case:
    """One ``<testcase>``. ``details`` is the text of its failure / error element."""

    classname: str
    name: str
    outcome: Outcome
    message: str = ""
    type: str = ""  # of the failure / error: "exit-status" (a container) or "ktap"
    details: str = ""
    stdout: str = ""
    time: float | None = None  # seconds; None: not measured (KTAP results)


def cases(run: ContainerRun) -> list[Case]:
    """The testcases of one container: itself first, then every KTAP result of its output
    (depth first, parents before their subtests), names made unique within the run."""
    found = [_container_case(run)]
    for path, result in ktap.walk(ktap.parse(run.output)):
        found.append(_result_case(".".join((run.name, *path)), result))
    return _unique(found)


def report(runs: Sequence[ContainerRun], *, name: str = "b2c-builder run") -> ET.Element:
    """The ``<testsuites>`` element for ``runs``, in order: one ``<testsuite>`` each."""
    root = ET.Element("testsuites", name=xml_safe(name))
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for run in runs:
        suite = _suite(run)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _seconds(sum(run.duration for run in runs)))
    ET.indent(root)
    return root


def tostring(runs: Sequence[ContainerRun], *, name: str = "b2c-builder run") -> bytes:
    """The report as a UTF-8 XML document."""
    data: bytes = ET.tostring(report(runs, name=name), encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def write(path: Path, runs: Sequence[ContainerRun], *, name: str = "b2c-builder run") -> None:
    """Write the report to ``path`` atomically (a temporary file renamed over it), with the
    mode a new file gets under the umask (0644 under 022), not the temporary file's 0600.

    Raises ``ReportError`` when the file cannot be written.
    """
    data = tostring(runs, name=name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), 0o666 & ~umask)
        os.replace(handle.name, path)
    except OSError as exc:
        raise ReportError(
            f"cannot write the JUnit report {path}: {exc.strerror or exc}",
            hint="give --junit a file in a folder that exists and that you can write to",
        ) from exc


# Characters XML 1.0 allows (its "Char" production), less the carriage return, which
# parsers would turn into a newline anyway.
_NOT_XML_RE = re.compile("[^\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """``text`` without ANSI escape sequences, ``\\r\\n`` and ``\\r`` made ``\\n``, and every
    other character XML 1.0 cannot carry (controls, surrogates, U+FFFE/FFFF) written as a
    ``\\xNN`` / ``\\uNNNN`` escape."""
    text = strip_ansi(text).replace("\r\n", "\n").replace("\r", "\n")
    return _NOT_XML_RE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# --- building ------------------------------------------------------------------------------


def _container_case(run: ContainerRun) -> Case:
    label = f"{run.kind} {run.index}"
    tail = "\n".join(run.output[-FAILURE_TAIL:])
    name = _spec(run) or label
    if run.status == 0:
        return Case(run.name, name, Outcome.PASSED, time=run.duration)
    if run.status is not None:
        message = f"the {label} exited with status {run.status}"
        outcome = Outcome.FAILURE
    else:
        message = run.error or f"the {label} has no exit status"
        outcome = Outcome.ERROR
    return Case(
        run.name,
        name,
        outcome,
        message=message,
        type="exit-status",
        details=tail,
        time=run.duration,
    )


def _result_line(result: ktap.TestResult) -> str:
    ok = "ok" if result.status in (ktap.Status.OK, ktap.Status.SKIP, ktap.Status.TODO) else "not ok"
    comment = " ".join(part for part in (result.directive or "", result.reason) if part)
    return f"{ok} {result.number} {result.name}" + (f" # {comment}" if comment else "")


def _result_case(classname: str, result: ktap.TestResult) -> Case:
    diagnostics = "\n".join(result.diagnostics)
    name = result.name
    match result.status:
        case ktap.Status.OK:
            return Case(classname, name, Outcome.PASSED, stdout=diagnostics)
        case ktap.Status.SKIP:
            return Case(classname, name, Outcome.SKIPPED, result.reason, stdout=diagnostics)
        case ktap.Status.TODO:
            message = f"{result.directive}: {result.reason}".removesuffix(": ")
            return Case(classname, name, Outcome.SKIPPED, message, stdout=diagnostics)
        case ktap.Status.NOT_OK:
            message = _result_line(result)
            return Case(classname, name, Outcome.FAILURE, message, "ktap", details=diagnostics)
        case ktap.Status.ERROR:
            message = _result_line(result) if result.line else result.reason
            return Case(classname, name, Outcome.ERROR, message, "ktap", details=diagnostics)


def _unique(found: list[Case]) -> list[Case]:
    """GitLab keeps only the first of several testcases with one name: number the others."""
    seen: dict[tuple[str, str], int] = {}
    unique = []
    for case in found:
        key = (case.classname, case.name)
        seen[key] = seen.get(key, 0) + 1
        unique.append(replace(case, name=f"{case.name} ({seen[key]})") if seen[key] > 1 else case)
    return unique


def _suite(run: ContainerRun) -> ET.Element:
    found = cases(run)
    label = f"{run.kind.replace('_', ' ')} {run.index}"
    count = {outcome: sum(1 for c in found if c.outcome is outcome) for outcome in Outcome}
    suite = ET.Element(
        "testsuite",
        name=xml_safe(f"{label}: {spec}" if (spec := _spec(run)) else label),
        tests=str(len(found)),
        failures=str(count[Outcome.FAILURE]),
        errors=str(count[Outcome.ERROR]),
        skipped=str(count[Outcome.SKIPPED]),
        time=_seconds(run.duration),
    )
    if run.started:
        stamp = datetime.fromtimestamp(run.started, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        suite.set("timestamp", stamp)
    properties = ET.SubElement(suite, "properties")
    for key, value in _properties(run):
        ET.SubElement(properties, "property", name=key, value=xml_safe(value))
    for case in found:
        suite.append(_testcase(case))
    if run.output:
        ET.SubElement(suite, "system-out").text = xml_safe("\n".join(run.output))
    return suite


def _spec(run: ContainerRun) -> str:
    """The spec as it will read in the report ("" if nothing of it is visible)."""
    return xml_safe(run.spec).strip()


def _properties(run: ContainerRun) -> Iterator[tuple[str, str]]:
    yield "kind", str(run.kind)
    yield "index", str(run.index)
    yield "spec", run.spec
    if run.status is not None:
        yield "exit_status", str(run.status)


def _testcase(case: Case) -> ET.Element:
    element = ET.Element("testcase", classname=xml_safe(case.classname), name=xml_safe(case.name))
    if case.time is not None:
        element.set("time", _seconds(case.time))
    if case.outcome is not Outcome.PASSED:
        outcome = ET.SubElement(element, str(case.outcome))
        if case.message or case.outcome is not Outcome.SKIPPED:
            outcome.set("message", xml_safe(case.message))
        if case.type:
            outcome.set("type", case.type)
        if case.details:
            outcome.text = xml_safe(case.details)
    if case.stdout:
        ET.SubElement(element, "system-out").text = xml_safe(case.stdout)
    return element


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"
