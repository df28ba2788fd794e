"""The KTAP / TAP parser, against golden outputs in tests/data/ktap/ and single lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from b2c_builder.boot.ktap import Directive, Document, Status, TestResult, parse, walk

DATA = Path(__file__).parent / "data" / "ktap"
OK, NOT_OK, SKIP, TODO, ERROR = (Status.OK, Status.NOT_OK, Status.SKIP, Status.TODO, Status.ERROR)

Row = tuple[str, int, str, Status, Directive | None, str]


def lines_of(name: str) -> list[str]:
    return (DATA / name).read_text(encoding="utf-8").split("\n")


def tree(documents: tuple[Document, ...]) -> list[Row]:
    """(parent path, number, name, status, directive, reason) for every result, depth first."""
    return [
        ("/".join(path), r.number, r.name, r.status, r.directive, r.reason)
        for path, r in walk(documents)
    ]


def only(documents: tuple[Document, ...], name: str) -> TestResult:
    (found,) = [r for _, r in walk(documents) if r.name == name]
    return found


def test_kunit_nesting_at_two_levels_with_printk_and_unknown_lines() -> None:
    documents = parse(lines_of("kunit.log"))
    assert [(d.version, d.plan, d.line) for d in documents] == [("KTAP version 1", 2, 3)]
    assert tree(documents) == [
        ("", 1, "b2c_demo", NOT_OK, None, ""),
        ("b2c_demo", 1, "demo_add", OK, None, ""),
        ("b2c_demo", 2, "demo_sub", NOT_OK, None, ""),
        ("b2c_demo", 3, "demo_hw", SKIP, Directive.SKIP, "no such device"),
        ("b2c_demo", 4, "demo_params", NOT_OK, None, ""),
        ("b2c_demo/demo_params", 1, "zero", OK, None, ""),
        ("b2c_demo/demo_params", 2, "one", NOT_OK, None, ""),
        ("b2c_demo/demo_params", 3, "two", SKIP, Directive.SKIP, "not on this architecture"),
        ("", 2, "b2c_empty", SKIP, Directive.SKIP, ""),
        ("b2c_empty", 1, "b2c_empty_case", SKIP, Directive.SKIP, "nothing to test"),
    ]
    # Diagnostic and unknown lines go to the result that follows them, minus the nesting
    # indentation; the printk line among them belongs to the kernel log, not to the test.
    assert only(documents, "demo_sub").diagnostics == (
        "# demo_sub: EXPECTATION FAILED at lib/b2c_demo_test.c:42",
        "Expected sub(3, 1) == 1, but",
        "    sub(3, 1) == 2 (0x2)",
    )
    assert only(documents, "demo_params").diagnostics == (
        "# demo_params: pass:1 fail:1 skip:1 total:3",
    )
    assert only(documents, "b2c_demo").line == 26
    assert only(documents, "b2c_empty").line == 31


def test_kselftest_runner_output_nests_under_hash_prefixes() -> None:
    documents = parse(lines_of("kselftest.log"))
    assert [(d.version, d.plan) for d in documents] == [("TAP version 13", 4)]
    hid = "selftests: hid: hid_bpf"
    assert tree(documents) == [
        ("", 1, hid, NOT_OK, None, "exit=1"),
        (hid, 1, "hid_bpf.create_device", OK, None, ""),
        (hid, 2, "hid_bpf.raw_event", NOT_OK, None, ""),
        (hid, 3, "hid_bpf.no_uhid", SKIP, Directive.SKIP, "/dev/uhid is missing"),
        ("", 2, "selftests: hid: hid-core.sh", SKIP, Directive.SKIP, ""),
        ("", 3, "selftests: hid: hid-tablet.sh", OK, None, ""),
        ("", 4, "selftests: hid: hid-slow.sh", NOT_OK, Directive.TIMEOUT, "45 seconds"),
    ]
    assert only(documents, "hid_bpf.raw_event").diagnostics == (
        "#  RUN           hid_bpf.raw_event ...",
        "# hid_bpf.c:123:raw_event:Expected 0 (0) == err (-22)",
        "#          FAIL  hid_bpf.raw_event",
    )
    # The runner's header lines, then what the nested test printed after its last result.
    assert only(documents, hid).diagnostics == (
        "# timeout set to 45",
        "# selftests: hid: hid_bpf",
        "# FAILED: 1 / 3 tests passed.",
        "# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0",
    )
    # ANSI escape sequences are not part of the text.
    assert only(documents, "selftests: hid: hid-tablet.sh").diagnostics[-1] == "# printing in bold"


def test_missing_results_against_the_plan_are_errors() -> None:
    documents = parse(lines_of("plan-mismatch.log"))
    assert tree(documents) == [
        ("", 1, "first", OK, None, ""),
        ("", 2, "second", NOT_OK, None, ""),
        ("", 3, "third", TODO, Directive.TODO, "not implemented yet"),
        ("", 4, "test 4", ERROR, None, "no result line for test 4 of the plan 1..5"),
        ("", 5, "test 5", ERROR, None, "no result line for test 5 of the plan 1..5"),
    ]
    assert only(documents, "second").diagnostics == ("# second failed: expected 4, got 5",)
    # What was printed after the last result likely says why the others never came.
    assert only(documents, "test 4").diagnostics == ("Segmentation fault (core dumped)",)
    assert only(documents, "test 4").line == 0


def test_two_space_ktap_nesting_as_in_the_specification() -> None:
    text = """\
KTAP version 1
1..2
  KTAP version 1
  1..2
    KTAP version 1
    1..1
    ok 1 inner_a
  not ok 1 middle_a
  ok 2 middle_b # SKIP missing firmware
not ok 1 top_a
ok 2 top_b
"""
    assert tree(parse(text.split("\n"))) == [
        ("", 1, "top_a", NOT_OK, None, ""),
        ("top_a", 1, "middle_a", NOT_OK, None, ""),
        ("top_a/middle_a", 1, "inner_a", OK, None, ""),
        ("top_a", 2, "middle_b", SKIP, Directive.SKIP, "missing firmware"),
        ("", 2, "top_b", OK, None, ""),
    ]


def test_output_without_ktap_gives_nothing() -> None:
    assert parse([]) == ()
    assert parse(["hello", "ok", "ok 1 looks like a result", "not ok", "# a comment"]) == ()
    assert parse(["[    1.000000] ok 1 from the kernel"]) == ()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ok 1 - name", ("name", 1, OK, None, "")),
        ("ok 1 name # SKIP the reason", ("name", 1, SKIP, Directive.SKIP, "the reason")),
        ("not ok 1 name # SKIP", ("name", 1, SKIP, Directive.SKIP, "")),
        ("ok 1 name # skipped: no network", ("name", 1, SKIP, Directive.SKIP, "no network")),
        ("not ok 1 n # TIMEOUT 30 seconds", ("n", 1, NOT_OK, Directive.TIMEOUT, "30 seconds")),
        ("not ok 1 n # ERROR no memory", ("n", 1, ERROR, Directive.ERROR, "no memory")),
        ("ok 1 n # XFAIL known bug", ("n", 1, TODO, Directive.XFAIL, "known bug")),
        ("not ok 1 n # TODO later", ("n", 1, TODO, Directive.TODO, "later")),
        ("ok 1 check return code # rcode=0", ("check return code", 1, OK, None, "rcode=0")),
        ("not ok 1 errors # errors found", ("errors", 1, NOT_OK, None, "errors found")),
        ("ok 1 test#1 works", ("test#1 works", 1, OK, None, "")),
        ("ok 1 a \\# b", ("a # b", 1, OK, None, "")),
        ("ok 1 # SKIP", ("test 1", 1, SKIP, Directive.SKIP, "")),
        ("ok 1", ("test 1", 1, OK, None, "")),
        ("not ok 1 spaces   around  ", ("spaces   around", 1, NOT_OK, None, "")),
    ],
)
def test_result_lines(line: str, expected: tuple[str, int, Status, Directive | None, str]) -> None:
    (document,) = parse(["KTAP version 1", line])
    (result,) = document.results
    assert (result.name, result.number, result.status, result.directive, result.reason) == expected


def test_a_result_line_needs_its_number() -> None:
    (document,) = parse(["TAP version 13", "ok", "not ok - name", "ok 1 real"])
    assert [r.name for r in document.results] == ["real"]
    assert document.results[0].diagnostics == ("ok", "not ok - name")


def test_tap12_starts_at_a_plan_line_and_results_before_any_header_are_ignored() -> None:
    documents = parse(["ok 1 stray", "1..2", "ok 1 a", "not ok 2 b"])
    assert [(d.version, d.plan, d.line) for d in documents] == [("", 2, 2)]
    assert tree(documents) == [("", 1, "a", OK, None, ""), ("", 2, "b", NOT_OK, None, "")]


def test_a_lone_plan_line_without_results_is_not_tap() -> None:
    assert parse(["1..3", "counting 1..3", "done"]) == ()
    (document,) = parse(["TAP version 13", "1..0 # SKIP nothing to run"])
    assert (document.plan, document.results) == (0, ())


def test_a_document_ends_with_its_last_planned_result() -> None:
    documents = parse(["KTAP version 1", "1..1", "ok 1 a", "ok 2 stray", "not ok 3 stray"])
    assert tree(documents) == [("", 1, "a", OK, None, "")]


def test_a_trailing_plan_and_a_document_without_plan() -> None:
    documents = parse(["TAP version 13", "ok 1 a", "ok 2 b", "1..2", "TAP version 14", "ok 1 c"])
    assert [(d.version, d.plan) for d in documents] == [
        ("TAP version 13", 2),
        ("TAP version 14", None),
    ]
    assert [r.name for _, r in walk(documents)] == ["a", "b", "c"]


def test_several_top_level_documents_as_make_run_tests_prints_them() -> None:
    text = ["TAP version 13", "1..1", "ok 1 selftests: a: t", "TAP version 13", "1..2"]
    text += ["not ok 1 selftests: b: t # exit=2", "ok 2 selftests: b: u"]
    documents = parse(text)
    assert [(d.line, d.plan, len(d.results)) for d in documents] == [(1, 1, 1), (4, 2, 2)]


def test_bail_out_turns_the_rest_of_the_plan_into_errors() -> None:
    documents = parse(["KTAP version 1", "1..3", "ok 1 a", "Bail out! no device", "ok 2 b"])
    assert tree(documents) == [
        ("", 1, "a", OK, None, ""),
        ("", 2, "test 2", ERROR, None, "Bail out! no device"),
        ("", 3, "test 3", ERROR, None, "Bail out! no device"),
    ]


def test_a_nested_bail_out_ends_the_nested_set_only() -> None:
    text = ["TAP version 13", "1..2", "# TAP version 13", "# 1..2", "# ok 1 x", "# Bail out!"]
    text += ["not ok 1 selftests: a: t # exit=1", "ok 2 selftests: a: u"]
    assert tree(parse(text)) == [
        ("", 1, "selftests: a: t", NOT_OK, None, "exit=1"),
        ("selftests: a: t", 1, "x", OK, None, ""),
        ("selftests: a: t", 2, "test 2", ERROR, None, "Bail out!"),
        ("", 2, "selftests: a: u", OK, None, ""),
    ]


def test_a_bail_out_without_a_plan_is_one_error() -> None:
    assert tree(parse(["TAP version 14", "ok 1 a", "Bail out! disk full"])) == [
        ("", 1, "a", OK, None, ""),
        ("", 2, "Bail out!", ERROR, None, "Bail out! disk full"),
    ]


def test_results_beyond_a_nested_plan_are_an_error() -> None:
    text = ["KTAP version 1", "1..1", "  KTAP version 1", "  1..1", "  ok 1 a", "  ok 2 b"]
    text += ["ok 1 parent"]
    assert tree(parse(text)) == [
        ("", 1, "parent", OK, None, ""),
        ("parent", 1, "a", OK, None, ""),
        ("parent", 2, "b", OK, None, ""),
        ("parent", 0, "plan 1..1", ERROR, None, "results beyond the plan 1..1: 2"),
    ]


def test_nested_results_whose_parent_never_came() -> None:
    # The test crashed in its second subtest: the output just stops.
    text = ["KTAP version 1", "1..2", "    KTAP version 1", "    # Subtest: suite"]
    text += ["    1..2", "    ok 1 a", "    # a kernel oops here"]
    assert tree(parse(text)) == [
        (
            "",
            1,
            "suite",
            ERROR,
            None,
            "these subtests ended without a result line for their parent test",
        ),
        ("suite", 1, "a", OK, None, ""),
        ("suite", 2, "test 2", ERROR, None, "no result line for test 2 of the plan 1..2"),
        ("", 2, "test 2", ERROR, None, "no result line for test 2 of the plan 1..2"),
    ]
    assert only(parse(text), "suite").children[1].diagnostics == ("# a kernel oops here",)


def test_subtest_header_alone_opens_a_nested_set_and_names_its_parent() -> None:
    # TAP 14 and KUnit before KTAP: "# Subtest: name" instead of a nested version line,
    # and a parent result line without a description.
    text = ["TAP version 14", "1..1", "    # Subtest: named", "    1..1", "    ok 1 a", "ok 1"]
    assert tree(parse(text)) == [("", 1, "named", OK, None, ""), ("named", 1, "a", OK, None, "")]


def test_kunit_through_printk_is_parsed_apart_from_the_container_output() -> None:
    kunit = [line for line in lines_of("kunit.log") if line and not line.startswith("[")]
    mixed: list[str] = []
    user = ["TAP version 13", "1..2", "ok 1 user_a", "not ok 2 user_b"]
    for index, line in enumerate(kunit):
        mixed.append(f"[   {20 + index:3d}.{index:06d}] {line}")
        if index < len(user):
            mixed.append(user[index])
    documents = parse(mixed)
    assert [(d.version, d.line) for d in documents] == [
        ("TAP version 13", 2),
        ("KTAP version 1", 5),
    ]
    assert [r.name for r in documents[0].results] == ["user_a", "user_b"]
    assert tree(documents[1:]) == tree(parse(lines_of("kunit.log")))


def test_console_line_endings_escapes_and_carriage_returns() -> None:
    text = [
        "\x1b[1mKTAP version 1\x1b[0m\r\n",
        "1..2\r",
        "progress 10%\rprogress 100%\rok 1 after a progress bar\r\n",
        "\x1b[31mnot ok 2 red\x1b[0m # SKIP colours\r\n",
    ]
    assert tree(parse(text)) == [
        ("", 1, "after a progress bar", OK, None, ""),
        ("", 2, "red", SKIP, Directive.SKIP, "colours"),
    ]


def test_diagnostics_come_before_their_result() -> None:
    (document,) = parse(["KTAP version 1", "# about a", "ok 1 a", "# about b", "not ok 2 b"])
    assert [r.diagnostics for r in document.results] == [("# about a",), ("# about b",)]


_fragments = st.sampled_from(
    [
        "KTAP version 1",
        "TAP version 13",
        "1..2",
        "1..0",
        "ok 1 a",
        "not ok 2 b # SKIP",
        "ok 3 c # TODO",
        "# Subtest: s",
        "# diag",
        "Bail out! x",
        "[   1.000000] ok 1 k",
        "garbage",
        "",
    ]
)
_indents = st.sampled_from(["", "  ", "    ", "# ", "# # ", "\t"])


@given(st.lists(st.tuples(_indents, _fragments), max_size=40))
def test_any_mix_of_ktap_lines_parses(pairs: list[tuple[str, str]]) -> None:
    documents = parse([indent + fragment for indent, fragment in pairs])
    for path, result in walk(documents):
        # Every result is either a line of the input or a synthesized error.
        assert result.line > 0 or result.status is Status.ERROR
        if result.line:
            assert pairs[result.line - 1][1].startswith(("ok", "not ok"))
        assert len(path) <= len(pairs)


@given(st.lists(st.text(), max_size=20))
def test_any_text_parses(text: list[str]) -> None:
    for _, result in walk(parse(text)):
        assert result.name
