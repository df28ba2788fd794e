"""The JUnit XML report: read back, each testcase checked, validated against a JUnit schema.

No PyPI package installs a JUnit XSD (the ones checked ship none in their wheels; one carries
Jenkins' schema only among its own test files), so tests/data/junit/junit.xsd is ours,
written from GitLab's and Jenkins' documentation of what they read; ``xmlschema`` validates.
"""

from __future__ import annotations

import functools
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from b2c_builder.boot import junit
from b2c_builder.boot.console import ContainerKind, ContainerRun, container_runs, log_lines
from b2c_builder.errors import ReportError
from tests.shell import Shell

DATA = Path(__file__).parent / "data"
SPEC1 = "docker://registry.example/kunit:latest sh -c 'modprobe b2c_demo_test; cat /results'"
SPEC2 = "docker://registry.example/missing:latest"
SPEC3 = "-ti docker://registry.example/tools:latest printf 'no newline at the end'"

Row = tuple[str, str, str | None, str | None]


@functools.cache
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(DATA / "junit" / "junit.xsd")


def written(tmp_path: Path, runs: tuple[ContainerRun, ...]) -> ET.Element:
    """Write the report as ``--junit`` will, validate the file, and parse it back."""
    path = tmp_path / "report.xml"
    junit.write(path, runs)
    schema().validate(str(path))
    return ET.parse(path).getroot()


def rows(suite: ET.Element) -> list[Row]:
    """(classname, name, outcome element, its message) for every testcase of a suite."""
    found: list[Row] = []
    for case in suite.findall("testcase"):
        outcomes = [child for child in case if child.tag in ("failure", "error", "skipped")]
        assert len(outcomes) <= 1
        outcome = outcomes[0] if outcomes else None
        found.append(
            (
                case.get("classname", ""),
                case.get("name", ""),
                None if outcome is None else outcome.tag,
                None if outcome is None else outcome.get("message"),
            )
        )
    return found


def check_counts(suite: ET.Element) -> None:
    """The counts a suite declares are those of its testcases."""
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases))
    for attribute, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
        assert suite.get(attribute) == str(sum(1 for c in cases if c.find(tag) is not None))


def test_report_of_a_whole_boot(tmp_path: Path) -> None:
    runs = container_runs(log_lines(DATA / "console" / "containers.log"))
    root = written(tmp_path, runs)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        f"container 1: {SPEC1}",
        f"container 2: {SPEC2}",
        f"container 3: {SPEC3}",
        "post container 1: docker://registry.example/upload:latest",
    ]
    for suite in suites:
        check_counts(suite)
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "14",
        "5",
        "1",
        "4",
    )
    assert root.get("time") == "3.500"

    kunit, pull_failed, glued, post = suites
    assert rows(kunit) == [
        ("container_1", SPEC1, "failure", "the container 1 exited with status 1"),
        ("container_1", "b2c_demo", "failure", "not ok 1 b2c_demo"),
        ("container_1.b2c_demo", "demo_add", None, None),
        ("container_1.b2c_demo", "demo_sub", "failure", "not ok 2 demo_sub"),
        ("container_1.b2c_demo", "demo_hw", "skipped", "no such device"),
        ("container_1.b2c_demo", "demo_params", "failure", "not ok 4 demo_params"),
        ("container_1.b2c_demo.demo_params", "zero", None, None),
        ("container_1.b2c_demo.demo_params", "one", "failure", "not ok 2 one"),
        ("container_1.b2c_demo.demo_params", "two", "skipped", "not on this architecture"),
        ("container_1", "b2c_empty", "skipped", None),
        ("container_1.b2c_empty", "b2c_empty_case", "skipped", "nothing to test"),
    ]
    assert (kunit.get("time"), kunit.get("timestamp")) == ("2.000", "2025-01-01T00:00:05")
    properties = {p.get("name"): p.get("value") for p in kunit.iter("property")}
    assert properties == {"kind": "container", "index": "1", "spec": SPEC1, "exit_status": "1"}
    # A failed KTAP result carries its diagnostics; the container's failure, its output's end.
    demo_sub = kunit.find("testcase[@name='demo_sub']/failure")
    assert demo_sub is not None and demo_sub.text == (
        "# demo_sub: EXPECTATION FAILED at lib/b2c_demo_test.c:42\n"
        "Expected sub(3, 1) == 1, but\n"
        "    sub(3, 1) == 2 (0x2)"
    )
    container = kunit.find("testcase[@classname='container_1']/failure")
    assert container is not None and container.text is not None
    assert container.text.endswith("# Totals: pass:1 fail:3 skip:4 total:8\ndone, rc=1")
    # The whole output is the suite's system-out.
    out = kunit.find("system-out")
    assert out is not None and out.text is not None
    assert out.text.startswith("+ modprobe b2c_demo_test\nLoading the test module...\nKTAP")
    assert out.text.count("\n") == 32

    assert rows(pull_failed) == [
        (
            "container_2",
            SPEC2,
            "error",
            f"could not pull or create the container (podman exit status 125, 3 attempts): {SPEC2}",
        )
    ]
    assert pull_failed.get("timestamp") is None
    assert rows(glued) == [("container_3", SPEC3, None, None)]
    assert glued.get("time") == "0.750"
    assert rows(post) == [
        ("post_container_1", "docker://registry.example/upload:latest", None, None)
    ]


def test_text_xml_cannot_carry_is_escaped_and_escape_sequences_removed(tmp_path: Path) -> None:
    run = ContainerRun(
        ContainerKind.CONTAINER,
        1,
        "docker://x \x1b[1mbold\x1b[0m \x01",
        3,
        1.5,
        ("a bell \x07, a NUL \x00, \ufffe and \ud800", "\x1b[31mred\x1b[0m\r", "tab\tok é ✓"),
    )
    root = written(tmp_path, (run,))
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("name") == "container 1: docker://x bold \\x01"
    out = suite.find("system-out")
    assert out is not None
    assert out.text == "a bell \\x07, a NUL \\x00, \\ufffe and \\ud800\nred\ntab\tok é ✓"


def test_a_container_without_ktap_is_one_testcase(tmp_path: Path) -> None:
    runs = (
        ContainerRun(ContainerKind.CONTAINER, 1, "docker://a", 0, 12.3456, ("hello",), None, 1),
        ContainerRun(ContainerKind.CONTAINER, 2, "\x1b[0m ", None, 0.0, ()),
    )
    suites = written(tmp_path, runs).findall("testsuite")
    assert [rows(s) for s in suites] == [
        [("container_1", "docker://a", None, None)],
        [("container_2", "container 2", "error", "the container 2 has no exit status")],
    ]
    assert [s.get("time") for s in suites] == ["12.346", "0.000"]
    assert suites[0].get("timestamp") == "1970-01-01T00:00:01"
    assert suites[1].find("system-out") is None


def test_todo_error_and_duplicate_names(tmp_path: Path) -> None:
    output = (
        "KTAP version 1",
        "1..5",
        "ok 1 same",
        "ok 2 same",
        "not ok 3 flaky # XFAIL known bug",
        "# the device vanished",
        "not ok 4 probe # ERROR no device",
        "ok 5 quiet # TODO",
    )
    run = ContainerRun(ContainerKind.POST_CONTAINER, 2, "docker://t", 0, 1.0, output)
    (suite,) = written(tmp_path, (run,)).findall("testsuite")
    check_counts(suite)
    assert rows(suite) == [
        ("post_container_2", "docker://t", None, None),
        ("post_container_2", "same", None, None),
        ("post_container_2", "same (2)", None, None),
        ("post_container_2", "flaky", "skipped", "XFAIL: known bug"),
        ("post_container_2", "probe", "error", "not ok 4 probe # ERROR no device"),
        ("post_container_2", "quiet", "skipped", "TODO"),
    ]
    error = suite.find("testcase[@name='probe']/error")
    assert error is not None and error.text == "# the device vanished"


def test_missing_results_are_errors_in_the_report(tmp_path: Path) -> None:
    output = tuple((DATA / "ktap" / "plan-mismatch.log").read_text().split("\n"))
    run = ContainerRun(ContainerKind.CONTAINER, 1, "docker://t", 139, 0.2, output)
    (suite,) = written(tmp_path, (run,)).findall("testsuite")
    assert rows(suite)[-2:] == [
        ("container_1", "test 4", "error", "no result line for test 4 of the plan 1..5"),
        ("container_1", "test 5", "error", "no result line for test 5 of the plan 1..5"),
    ]
    crash = suite.find("testcase[@name='test 4']/error")
    assert crash is not None and crash.text == "Segmentation fault (core dumped)"
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("2", "2", "1")


_ktap_lines = st.sampled_from(
    ["KTAP version 1", "1..3", "ok 1 a", "not ok 2 b # SKIP", "  ok 1 c", "# d", "Bail out!"]
)


@settings(max_examples=50, deadline=None)
@given(
    spec=st.text() | st.sampled_from(["", " ", "\x1b[0m", "\x1b[1m\x00"]),
    status=st.none() | st.integers(0, 255),
    output=st.lists(st.text() | _ktap_lines, max_size=12),
)
def test_any_text_gives_a_valid_report(spec: str, status: int | None, output: list[str]) -> None:
    run = ContainerRun(ContainerKind.CONTAINER, 1, spec, status, 0.5, tuple(output))
    data = junit.tostring((run,))
    schema().validate(data.decode())
    (suite,) = ET.fromstring(data).findall("testsuite")
    check_counts(suite)


def test_an_unwritable_report_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError) as caught:
        junit.write(tmp_path / "missing" / "report.xml", ())
    assert "cannot write the JUnit report" in str(caught.value)
    assert caught.value.hint is not None and "--junit" in caught.value.hint
    junit.write(tmp_path / "empty.xml", ())
    root = ET.parse(tmp_path / "empty.xml").getroot()
    assert (root.tag, root.get("tests"), list(root)) == ("testsuites", "0", [])
    assert list(tmp_path.iterdir()) == [tmp_path / "empty.xml"]  # no temporary file left


@pytest.mark.parametrize(
    "case",
    [
        '<testcase classname="c" name="n"><failure/><skipped/></testcase>',
        '<testcase classname="c" name="n"><system-out/><failure/></testcase>',
        '<testcase name="n"/>',
        '<testcase classname="c" name=""/>',
        '<testcase classname="c" name="n" time="-1"/>',
        '<testcase classname="c" name="n"><unknown/></testcase>',
    ],
)
def test_the_schema_rejects_what_readers_would_misread(case: str) -> None:
    good = '<testsuites><testsuite name="s" tests="1"><testcase classname="c" name="n"/>'
    assert schema().is_valid(good + "</testsuite></testsuites>")
    bad = f'<testsuites><testsuite name="s" tests="1">{case}</testsuite></testsuites>'
    assert not schema().is_valid(bad)


# A podman that pulls anything but docker://unreachable; docker://ktap prints nested KTAP.
KTAP_PODMAN = r"""
local last
for last in "$@"; do :; done
case $1 in
    create)
        if [ "$last" = docker://unreachable ]; then
            echo "Error: initializing source" >&2
            return 125
        fi
        echo "id-$last"
        ;;
    start)
        case $last in
            id-docker://ktap)
                printf 'KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: suite\n'
                printf '    1..2\n    ok 1 a\n    # b: FAIL\n    not ok 2 b\n'
                printf 'not ok 1 suite\nok 2 c # SKIP no device\n'
                return 1
                ;;
        esac
        echo "nothing to report"
        ;;
    container)
        [ "$2" = inspect ] && echo false
        ;;
    volume)
        [ "$2" != exists ] || return 1
        ;;
esac
return 0
"""


def test_report_from_the_inits_own_console_output(tmp_path: Path) -> None:
    """The init's pipeline (under busybox, podman stubbed) prints what the parser reads."""
    sh = Shell(tmp_path)
    sh.stub("podman", KTAP_PODMAN)
    sh.write(
        "line",
        "b2c.container=docker://ktap b2c.container=docker://unreachable "
        "b2c.post_container=docker://quiet",
    )
    result = sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline || exit 99\n'
        "B2C_PIPELINE_STATUS=0 B2C_PIPELINE_SHUTDOWN_MODE=default\n"
        "b2c_run_pipeline\n"
    )
    assert result.status == 0, result.err
    runs = container_runs(result.lines)
    assert [(r.name, r.spec, r.status) for r in runs] == [
        ("container_1", "docker://ktap", 1),
        ("container_2", "docker://unreachable", None),
        ("post_container_1", "docker://quiet", 0),
    ]
    assert runs[2].output == ("nothing to report",)
    suites = written(tmp_path, runs).findall("testsuite")
    assert [rows(s) for s in suites] == [
        [
            ("container_1", "docker://ktap", "failure", "the container 1 exited with status 1"),
            ("container_1", "suite", "failure", "not ok 1 suite"),
            ("container_1.suite", "a", None, None),
            ("container_1.suite", "b", "failure", "not ok 2 b"),
            ("container_1", "c", "skipped", "no device"),
        ],
        [
            (
                "container_2",
                "docker://unreachable",
                "error",
                "could not pull or create the container (podman create failed (exit status "
                "125, not retried: the error is not transient): Error: initializing source): "
                "docker://unreachable",
            )
        ],
        [("post_container_1", "docker://quiet", None, None)],
    ]


def test_the_report_gets_the_umask_mode(tmp_path: Path) -> None:
    """Another user (a CI runner) reads it: 0644 under umask 022, not a temporary file's 0600."""
    old = os.umask(0o022)
    try:
        junit.write(tmp_path / "r.xml", ())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.xml").stat().st_mode) == 0o644
