"""Parse KTAP / TAP test output (kselftest, KUnit) from a console into a tree of results.

The format is the kernel's Documentation/dev-tools/ktap.rst (KTAP version 1):

- a version line starts a set of results: ``KTAP version 1``, or ``TAP version 13`` /
  ``TAP version 14`` (accepted for compatibility, as the document asks);
- a plan line ``1..N`` says how many results follow;
- a result line ``ok N [- ]description [# DIRECTIVE reason]`` or ``not ok N ...``; the
  directives are SKIP, TODO, XFAIL, TIMEOUT and ERROR (case-insensitive), anything else
  after ``#`` is diagnostic data;
- diagnostic lines ``# ...``, and "unknown lines", which are tolerated and kept as
  diagnostics of the result that follows them;
- nested tests: a whole set of results, indented (KTAP says two spaces, KUnit prints four),
  optionally named by a ``# Subtest: name`` line, comes right before its parent's result;
- ``Bail out! reason`` ends a set of results early.

Two conventions found in the kernel's own tools are accepted as well:

- kselftest's runner (tools/testing/selftests/kselftest/runner.sh) prefixes each test's
  output with ``# ``, so a test that prints its own TAP nests it under ``# `` instead of
  under spaces: ``# TAP version 13`` opens such a nested set;
- KUnit results reach the serial console through printk, as ``[   12.345678] KTAP version 1``:
  printk lines are parsed as a stream of their own (the kernel log), apart from the
  container's output between which they are interleaved.

Stricter than TAP in one place, because a console carries other programs' output: a result
line must carry its number (KTAP requires it), so that a lone ``ok`` printed by a script is not
taken for a result. Output counts as KTAP from a version line on, or from an unindented plan
line that results follow (TAP 12 and bats print no version line); a top-level set ends with
its last planned result, the next version line, or the end of the input.

Diagnostics belong to the result line that follows them, as ktap.rst says ("diagnostic lines
regarding a test are directly before the test result line").

Structural problems become results of their own with status ``error``: every result the plan
announced that never came (after a bail out too), results numbered beyond the plan, and a
nested set whose parent result line never came; the diagnostics printed after the last
result (a crash message, say) go to the first of them. ``parse()`` never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import ClassVar

from b2c_builder.boot.console import strip_ansi


class Status(StrEnum):
    """The outcome of one test."""

    OK = "ok"
    NOT_OK = "not_ok"
    SKIP = "skip"  # the SKIP directive, on "ok" or "not ok"
    TODO = "todo"  # TODO or XFAIL: not expected to pass, so not a failure
    ERROR = "error"  # the ERROR directive on "not ok", or a result that never came


class Directive(StrEnum):
    """The directives of ktap.rst (TAP's SKIP and TODO plus the kernel's own)."""

    SKIP = "SKIP"
    TODO = "TODO"
    XFAIL = "XFAIL"
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"


@dataclass(frozen=True)
class TestResult:
    """One result line (or a result the plan announced that never came), with its subtests.

    ``reason`` is the text after ``#`` on the result line, without the directive word (the
    skip reason, ``exit=1``...). ``diagnostics`` are the diagnostic and unknown lines printed
    before the result line at its level, as printed minus their nesting prefix. ``line`` is
    the 1-based index of the result line in the parsed input, 0 for a synthesized result.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    name: str
    number: int
    status: Status
    directive: Directive | None = None
    reason: str = ""
    diagnostics: tuple[str, ...] = ()
    children: tuple[TestResult, ...] = ()
    line: int = 0

    def walk(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], TestResult]]:
        """This result then every descendant, depth first, each with its ancestors' names."""
        yield path, self
        for child in self.children:
            yield from child.walk((*path, self.name))


@dataclass(frozen=True)
class Document:
    """One top-level set of results: a version line (or a plan line), then its results."""

    version: str  # "KTAP version 1", "TAP version 13", or "" when it began at a plan line
    plan: int | None
    results: tuple[TestResult, ...]
    line: int  # 1-based index of its first line in the parsed input

    def walk(self) -> Iterator[tuple[tuple[str, ...], TestResult]]:
        """Every result of the document, depth first, each with its ancestors' names."""
        for result in self.results:
            yield from result.walk()


def parse(lines: Iterable[str]) -> tuple[Document, ...]:
    """Parse console lines (with or without their line endings) into KTAP documents.

    ANSI escape sequences are ignored and a carriage return inside a line keeps only what
    follows it (as a terminal shows it). Lines carrying a printk stamp are parsed as the
    kernel log, apart from the others; documents from both come back in input order.
    Output with no KTAP in it gives ``()``.
    """
    user, kernel = _Stream(), _Stream()
    for number, raw in enumerate(lines, start=1):
        text = _visible(raw)
        if match := _PRINTK_RE.match(text):
            kernel.feed(number, text[match.end() :])
        else:
            user.feed(number, text)
    return tuple(sorted([*user.finish(), *kernel.finish()], key=lambda d: d.line))


def walk(documents: Iterable[Document]) -> Iterator[tuple[tuple[str, ...], TestResult]]:
    """Every result of every document, depth first, each with its ancestors' names."""
    for document in documents:
        yield from document.walk()


# --- lines ---------------------------------------------------------------------------------

# printk's "[    5.042437] ", optionally followed by its caller id "[    T1] ".
_PRINTK_RE = re.compile(r"\[\s*\d+\.\d+\](?!:)(?:\[\s*[CT]\d+\])? ?")
# What nests a line: spaces and tabs (KTAP, KUnit) and "# " (kselftest's runner).
_PREFIX_RE = re.compile(r"(?:[ \t]|# )*")
_VERSION_RE = re.compile(r"(?P<version>(?:KTAP|TAP) version \d+)\s*")
_PLAN_RE = re.compile(r"1\.\.(?P<count>\d+)\s*(?:#.*)?")
_RESULT_RE = re.compile(r"(?P<result>ok|not ok)\s+(?P<number>\d+)(?=\s|#|$)(?P<rest>.*)")
_BAIL_RE = re.compile(r"Bail out!\s*(?P<reason>.*)")
_SUBTEST = "Subtest:"
# The comment of a result line starts at the first "#" that begins a word ("\#" does not).
_COMMENT_RE = re.compile(r"(?:^|(?<=\s))#")
_DIRECTIVE_RE = re.compile(
    r"(?P<word>skip\w*|todo\w*|xfail|timeout|error)(?![\w])[:\s]*(?P<reason>.*)", re.IGNORECASE
)


def _visible(raw: str) -> str:
    text = strip_ansi(raw).rstrip("\r\n")
    return text.rsplit("\r", 1)[-1]


def _directive(comment: str) -> tuple[Directive | None, str]:
    match = _DIRECTIVE_RE.fullmatch(comment)
    if match is None:
        return None, comment
    word = match["word"].upper()
    for directive in Directive:
        if word.startswith(directive.value):
            return directive, match["reason"].strip()
    return None, comment  # unreachable: the pattern only matches the five words


def _status(ok: bool, directive: Directive | None) -> Status:
    if directive is Directive.SKIP:
        return Status.SKIP
    if directive in (Directive.TODO, Directive.XFAIL):
        return Status.TODO
    if ok:
        return Status.OK
    return Status.ERROR if directive is Directive.ERROR else Status.NOT_OK


# --- the nesting state machine -------------------------------------------------------------


@dataclass
class _Closed:
    """A nested set of results that ended, waiting for its parent's result line."""

    name: str
    results: list[TestResult]
    leftover: list[tuple[int, str]]  # diagnostics after its last result


@dataclass
class _Group:
    """An open set of results: a document, or a nested set inside one."""

    prefix: str
    version: str
    line: int
    name: str = ""
    plan: int | None = None
    bail: str | None = None
    results: list[TestResult] = field(default_factory=list)
    pending: list[tuple[int, str]] = field(default_factory=list)  # (line, diagnostic)
    child: _Closed | None = None

    def next_number(self) -> int:
        return max((r.number for r in self.results), default=0) + 1


@dataclass
class _Stream:
    """Parses one stream of lines; ``_stack[0]`` is the open document, if any."""

    _stack: list[_Group] = field(default_factory=list)
    _documents: list[Document] = field(default_factory=list)

    def feed(self, number: int, text: str) -> None:
        if not text.strip():
            return
        prefix = _PREFIX_RE.match(text)
        assert prefix is not None  # the pattern matches the empty string
        indent, rest = prefix.group(), text[prefix.end() :]
        if not self._structural(number, indent, rest):
            self._diagnostic(number, text)

    def _structural(self, number: int, indent: str, rest: str) -> bool:
        """Handle a version, subtest, plan, result or bail-out line; False for the others."""
        if match := _VERSION_RE.fullmatch(rest):
            self._version(number, indent, match["version"])
            return True
        if indent.endswith("# ") and rest.startswith(_SUBTEST) and self._stack:
            self._subtest(number, indent[:-2], rest[len(_SUBTEST) :].strip())
            return True
        if match := _PLAN_RE.fullmatch(rest):
            return self._plan(number, indent, match)
        if match := _RESULT_RE.fullmatch(rest):
            return self._result(number, indent, match)
        if match := _BAIL_RE.fullmatch(rest):
            return self._bail(indent, match["reason"])
        return False

    def finish(self) -> list[Document]:
        while self._stack:
            self._pop()
        return self._documents

    # -- where a line belongs

    def _exact(self, indent: str) -> int | None:
        """The innermost open group whose prefix is exactly ``indent``."""
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index].prefix == indent:
                return index
        return None

    def _enclosing(self, indent: str) -> int | None:
        """The innermost open group whose prefix starts ``indent``."""
        for index in range(len(self._stack) - 1, -1, -1):
            if indent.startswith(self._stack[index].prefix):
                return index
        return None

    def _deeper_spaces(self, indent: str) -> bool:
        """A line indented with spaces only, more than the innermost group: KTAP nesting
        whose version line is missing."""
        inner = self._stack[-1].prefix
        extra = indent[len(inner) :]
        return indent.startswith(inner) and bool(extra) and not extra.strip()

    def _close_to(self, index: int) -> None:
        """Close every group nested deeper than ``self._stack[index]``."""
        while len(self._stack) > index + 1:
            self._pop()

    # -- line kinds

    def _version(self, number: int, indent: str, version: str) -> None:
        index = self._enclosing(indent)
        if index is None or (index == 0 and self._stack[0].prefix == indent):
            self.finish()  # a new top-level document
        else:
            self._close_to(index)
            inner = self._stack[-1]
            if inner.prefix == indent:
                if _fresh(inner):  # "# Subtest: name" came first and opened it
                    inner.version = version
                    return
                self._pop()  # a sibling of a nested set whose parent result never came
        self._stack.append(_Group(indent, version, number))

    def _subtest(self, number: int, indent: str, name: str) -> None:
        inner = self._stack[-1]
        unnamed = not inner.results and inner.child is None and not inner.name
        if len(self._stack) > 1 and inner.prefix == indent and unnamed:
            inner.name = name  # KUnit: "KTAP version 1" then "# Subtest: name"
            return
        index = self._enclosing(indent)
        if index is None or (index == 0 and self._stack[0].prefix == indent):
            self._diagnostic(number, f"{indent}# {_SUBTEST} {name}")
            return
        # TAP 14 / older KUnit: "# Subtest: name" opens the nested set by itself.
        self._version(number, indent, "")
        self._stack[-1].name = name

    def _plan(self, number: int, indent: str, match: re.Match[str]) -> bool:
        count = int(match["count"])
        if not self._stack:
            if indent.strip():
                return False
            self._stack.append(_Group(indent, "", number))  # TAP 12: no version line
        index = self._exact(indent)
        if index is None:
            if not self._deeper_spaces(indent):
                return False
            self._stack.append(_Group(indent, "", number))
            index = len(self._stack) - 1
        group = self._stack[index]
        if group.plan is not None:
            return False  # a second plan: not ours to interpret
        self._close_to(index)
        group.plan = count
        self._maybe_complete()
        return True

    def _result(self, number: int, indent: str, match: re.Match[str]) -> bool:
        if not self._stack:
            return False
        index = self._exact(indent)
        if index is None:
            if not self._deeper_spaces(indent):
                return False
            self._stack.append(_Group(indent, "", number))
            index = len(self._stack) - 1
        self._close_to(index)
        group = self._stack[index]
        rest = match["rest"]
        found = _COMMENT_RE.search(rest)
        description = rest[: found.start()] if found else rest
        comment = rest[found.end() :].strip() if found else ""
        description = description.strip().replace("\\#", "#")
        if description == "-" or description.startswith("- "):
            description = description[1:].strip()
        directive, reason = _directive(comment)
        child, group.child = group.child, None
        diagnostics = group.pending + (child.leftover if child else [])
        group.pending = []
        test_number = int(match["number"])
        name = description or (child.name if child and child.name else f"test {test_number}")
        group.results.append(
            TestResult(
                name=name,
                number=test_number,
                status=_status(match["result"] == "ok", directive),
                directive=directive,
                reason=reason,
                diagnostics=tuple(text for _, text in sorted(diagnostics)),
                children=tuple(child.results) if child else (),
                line=number,
            )
        )
        self._maybe_complete()
        return True

    def _bail(self, indent: str, reason: str) -> bool:
        index = self._enclosing(indent)
        if index is None:
            return False
        for group in self._stack[index:]:
            group.bail = reason
        if index:
            self._close_to(index - 1)  # the nested set still awaits its parent's result
        else:
            self.finish()
        return True

    def _diagnostic(self, number: int, text: str) -> None:
        if not self._stack:
            return  # outside KTAP
        index = self._enclosing(text)
        group = self._stack[index if index is not None else 0]
        content = text[len(group.prefix) :] if text.startswith(group.prefix) else text.strip()
        group.pending.append((number, content.rstrip()))

    # -- closing

    def _maybe_complete(self) -> None:
        """A top-level document ends with its last planned result."""
        if len(self._stack) == 1:
            top = self._stack[0]
            if top.plan is not None and len(top.results) >= top.plan:
                self._pop()

    def _pop(self) -> None:
        group = self._stack.pop()
        results = group.results
        if group.child is not None:
            results.append(_orphan(group.child, group.next_number()))
        errors = _plan_errors(group)
        if errors and group.pending:  # what came last likely says why the rest is missing
            lines = tuple(text for _, text in group.pending)
            errors[0] = replace(errors[0], diagnostics=lines)
            group.pending = []
        results.extend(errors)
        if self._stack:
            parent = self._stack[-1]
            if parent.child is not None:
                parent.results.append(_orphan(parent.child, parent.next_number()))
            parent.child = _Closed(group.name, results, group.pending)
        elif group.version or any(result.line for result in results):
            self._documents.append(Document(group.version, group.plan, tuple(results), group.line))
        # else: a lone "1..N" line with no result after it was not TAP after all


def _fresh(group: _Group) -> bool:
    """Nothing but its header lines seen yet."""
    return not group.results and group.plan is None and group.child is None


def _orphan(closed: _Closed, number: int) -> TestResult:
    return TestResult(
        name=closed.name or "subtests",
        number=number,
        status=Status.ERROR,
        reason="these subtests ended without a result line for their parent test",
        diagnostics=tuple(text for _, text in closed.leftover),
        children=tuple(closed.results),
    )


def _plan_errors(group: _Group) -> list[TestResult]:
    if group.plan is None:
        if group.bail is None:
            return []
        return [
            TestResult(
                name="Bail out!",
                number=group.next_number(),
                status=Status.ERROR,
                reason=f"Bail out! {group.bail}".strip(),
            )
        ]
    seen = {result.number for result in group.results}
    errors = [
        TestResult(
            name=f"test {number}",
            number=number,
            status=Status.ERROR,
            reason=(
                f"Bail out! {group.bail}".strip()
                if group.bail is not None
                else f"no result line for test {number} of the plan 1..{group.plan}"
            ),
        )
        for number in range(1, group.plan + 1)
        if number not in seen
    ]
    beyond = sorted(n for n in seen if n > group.plan)
    if beyond:
        errors.append(
            TestResult(
                name=f"plan 1..{group.plan}",
                number=0,
                status=Status.ERROR,
                reason=f"results beyond the plan 1..{group.plan}: {', '.join(map(str, beyond))}",
            )
        )
    return errors
