"""The option table, the kernel-rules reference parser, the linter and the README table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from b2c_builder.guest import options
from b2c_builder.guest.options import (
    OPTIONS,
    Invalid,
    Problem,
    ValueKind,
    lint_cmdline,
    lookup,
    markdown_table,
    parse_cmdline,
    split_words,
    update_readme,
    validate,
)
from b2c_builder.resources import data_path

REPO = Path(__file__).resolve().parent.parent


def test_names_aliases_and_variables_are_unique() -> None:
    names = [name for opt in OPTIONS for name in opt.names]
    assert len(names) == len(set(names))
    variables = [opt.var for opt in OPTIONS]
    assert len(variables) == len(set(variables))
    assert all(re.fullmatch(r"B2C_[A-Z_]+", v) for v in variables)


def test_issue_option_set_is_complete() -> None:
    wanted = {
        "b2c.container": ("b2c.run",),
        "b2c.post_container": ("b2c.run_post",),
        "b2c.service": ("b2c.run_service",),
        "b2c.insmods": ("b2c.modules",),
    }
    for name, aliases in wanted.items():
        opt = lookup(name)
        assert opt is not None and opt.aliases == aliases and opt.repeatable
        assert all(lookup(alias) is opt for alias in aliases)
    for name in (
        "b2c.pipefail",
        "b2c.cache_device",
        "b2c.swap",
        "b2c.filesystem",
        "b2c.volume",
        "b2c.extra_args_url",
        "b2c.iface",
        "ip",
        "b2c.ntp_peer",
        "b2c.hostname",
        "b2c.poweroff_delay",
        "b2c.shutdown_cmd",
        "b2c.reboot_cmd",
        "b2c.proxy",
    ):
        assert lookup(name) is not None, name


def test_every_kind_has_a_shell_validator() -> None:
    text = (data_path("init") / "cmdline.sh").read_text()
    for kind in ValueKind:
        if kind is not ValueKind.unsupported:
            assert f"\nb2c_valid_{kind}() {{" in text, kind


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o.name)
def test_defaults_are_valid(opt: options.Option) -> None:
    if opt.kind in (ValueKind.unsupported, ValueKind.flag) or opt.default == "":
        return
    assert validate(opt.kind, opt.default) == []


# --- the kernel's rules --------------------------------------------------------------------

KERNEL_CASES = [
    ("", []),
    ("   \t\n", []),
    ("a", [("a", None)]),
    ("a=", [("a", "")]),
    ("a=b c=d", [("a", "b"), ("c", "d")]),
    ('a="b c"', [("a", "b c")]),
    ('"a=b c"', [("a", "b c")]),
    ('"flag"', [("flag", None)]),
    ('a="b c" d', [("a", "b c"), ("d", None)]),
    ('a=x"b c"y', [("a", 'x"b c"y')]),  # interior quotes are kept
    ('a="unterminated value', [("a", "unterminated value")]),
    ('a=""', [("a", "")]),
    ('a="', [("a", "")]),
    ('""', [("", None)]),
    ('"', [("", None)]),
    ("=a=b", [("=a", "b")]),  # an '=' in first position does not split
    ("=x", [("=x", None)]),
    ("a==b", [("a", "=b")]),
    ('"a="b c""', [("a", "b"), ('c""', None)]),
    ("a=b\tc=d\ne", [("a", "b"), ("c", "d"), ("e", None)]),
    ("a=b\xa0c", [("a", "b"), ("c", None)]),  # the kernel's isspace() includes 0xA0
    ('a="x\ny"', [("a", "x\ny")]),
]


@pytest.mark.parametrize(("line", "expected"), KERNEL_CASES)
def test_parse_cmdline_follows_the_kernel(
    line: str, expected: list[tuple[str, str | None]]
) -> None:
    assert parse_cmdline(line) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("docker://img", ["docker://img"]),
        ("  -ti  docker://img  sh ", ["-ti", "docker://img", "sh"]),
        ("sh -c 'echo $(id); exit 3'", ["sh", "-c", "echo $(id); exit 3"]),
        ('-e "A=b c" x', ["-e", "A=b c", "x"]),
        ('--env="A B"C \'D\'"E"', ["--env=A BC", "DE"]),
        ("a '' b", ["a", "", "b"]),
        ("'it\"s'", ['it"s']),
        ("back\\slash", ["back\\slash"]),
        ("`id` ; $HOME", ["`id`", ";", "$HOME"]),
    ],
)
def test_split_words(text: str, words: list[str]) -> None:
    assert split_words(text) == words


@pytest.mark.parametrize("text", ["'open", 'a "b', "a 'b\" c"])
def test_split_words_refuses_unbalanced_quotes(text: str) -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        split_words(text)


# --- values and the linter ----------------------------------------------------------------


def test_validate_reports_the_problem() -> None:
    with pytest.raises(Invalid, match="whole number of seconds"):
        validate(ValueKind.seconds, "abc")
    with pytest.raises(Invalid, match="needs a value"):
        validate(ValueKind.url, None)
    assert validate(ValueKind.volume, "v,mirror=gw/bucket") == [
        "v: mirror (S3 mirroring) is not supported, ignored"
    ]
    assert options.size_bytes("4G") == 4 << 30
    assert options.size_bytes("512MiB") == 512 << 20


def test_lint_cmdline_errors_and_warnings() -> None:
    problems = lint_cmdline(
        "console=ttyS0 b2c.poweroff_delay=abc b2c.frobnicate b2c.keymap=fr "
        'b2c.container="docker://a \'unbalanced" b2c.cache_device=nfsroot '
        "b2c.volume=v,filesystem=nowhere b2c.swap=1G"
    )
    assert (
        Problem("error", "b2c.poweroff_delay", "must be a whole number of seconds, not 'abc'")
        in problems
    )
    assert Problem("warning", "b2c.frobnicate", "unknown option (ignored)") in problems
    assert any(p.option == "b2c.keymap" and p.severity == "warning" for p in problems)
    assert any(p.option == "b2c.container" and "unbalanced" in p.message for p in problems)
    assert Problem("error", "b2c.cache_device", "no b2c.filesystem is named 'nfsroot'") in problems
    assert Problem("error", "b2c.volume", "no b2c.filesystem is named 'nowhere'") in problems
    assert str(problems[0]).startswith("error: b2c.poweroff_delay: ")


def test_lint_clean_line() -> None:
    line = (
        'b2c.container="-ti --tls-verify=false docker://10.42.0.1:8002/x:latest check" '
        "b2c.ntp_peer=auto b2c.pipefail b2c.cache_device=auto b2c.swap=8G "
        "b2c.filesystem=share,type=9p,src=share,opts=trans=virtio|version=9p2000.L "
        "b2c.volume=job,filesystem=share,expiration=pipeline_end "
        "b2c.iface=eth0,address=10.0.0.2/24,gateway=10.0.0.1,nameserver=10.0.0.1,route=10.1.0.0/16:10.0.0.254"
    )
    assert lint_cmdline(line) == []


def test_lint_judges_ip_only_where_init_applies_it() -> None:
    """/init applies ip= when it connects (init/network.sh), unless b2c.iface takes precedence
    or there is no network; the lint follows (test_init_network checks the same words) and
    warns that such an ip= is not applied."""
    error = Problem("error", "ip", "'bogus' is not an IPv4 address")
    assert lint_cmdline("ip=bogus") == [error]
    # Not judged there, but said to be left alone.
    assert lint_cmdline("ip=bogus b2c.iface=eth0,dhcp") == [
        Problem("warning", "ip", "not applied by /init: b2c.iface configures the network")
    ]
    assert lint_cmdline("ip=bogus b2c.network=none") == [
        Problem("warning", "ip", "not applied by /init: b2c.network=none")
    ]
    assert lint_cmdline("ip=off") == lint_cmdline("ip") == lint_cmdline("ip=dhcp") == []


def test_run_s_job_is_linted_apart_from_the_command_line() -> None:
    """/init parses the job after the command line, on its own (init/job.sh): a quote left
    open in --append swallows none of the job's options, and the options of both still
    meet in the cross-checks."""
    job = ['b2c.container="-ti docker://r/i:1"', "b2c.device_drivers=none"]
    assert lint_cmdline('quiet b2c.hostname="foo', job=job) == [
        Problem(
            "error",
            "cmdline",
            "a double quote at byte 19 is never closed: the kernel ends that value with the "
            "line (with anything a boot loader appends after it); close the quote",
        )
    ]
    assert lint_cmdline("b2c.cache_device=share", job=["b2c.filesystem=share,src=x,type=9p"]) == []
    assert lint_cmdline("b2c.cache_device=share", job=["b2c.pipefail"]) == [
        Problem("error", "b2c.cache_device", "no b2c.filesystem is named 'share'")
    ]


def test_lint_extra_args_refuses_early_options() -> None:
    problems = lint_cmdline("b2c.iface=eth0,dhcp b2c.container=docker://x", source="extra")
    assert problems == [Problem("warning", "b2c.iface", "comes too late in the extra command line")]


def test_main_lint_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert options.main(["--lint", "b2c.pipefail"]) == 0
    assert options.main(["--lint", "b2c.swap=lots"]) == 1
    assert "error: b2c.swap:" in capsys.readouterr().out


# --- the README reference -----------------------------------------------------------------


def test_markdown_table_lists_every_option() -> None:
    table = markdown_table()
    rows = table.splitlines()[2:]
    assert len(rows) == len(OPTIONS)
    for opt, row in zip(OPTIONS, rows, strict=True):
        assert row.startswith(f"| `{opt.name}")
        assert row.count(" | ") == 5  # no unescaped '|' inside a cell


def test_readme_option_reference_is_up_to_date() -> None:
    text = (REPO / "README.md").read_text()
    assert options.readme_section(text) == markdown_table(), (
        "README.md's option reference is stale: "
        "run python -m b2c_builder.guest.options --write-readme"
    )


def test_update_readme_replaces_only_the_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{options.README_START}\nold\n{options.README_END}\ntail\n")
    assert options.main(["--write-readme", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\n") and text.endswith(f"{options.README_END}\ntail\n")
    assert options.readme_section(text) == markdown_table()
    assert update_readme(text) == text
    with pytest.raises(ValueError, match="options:start"):
        update_readme("no markers")
