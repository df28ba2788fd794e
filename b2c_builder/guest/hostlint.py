"""The host's reading of a kernel command line, before a command acts on it.

``options.lint_cmdline`` says what /init would say about a line (the parity tests hold it
to the shell's words). A command on the host can stop a mistake before anything boots, so
check-cmdline, bootcfg, iso, run, check-extra-args and build's --default-cmdline read the
line through ``check_cmdline``, which is stricter:

- an unknown ``b2c.*`` option is an error (/init warns and ignores it), with the closest
  known name (``did you mean b2c.container?``);
- a value close to one of its option's keywords gets that keyword as a suggestion
  (``b2c.cache_device=autoo``: an error, as no b2c.filesystem is named so, with ``auto``);
- words without '=' right after a b2c option's unquoted value get a warning: the kernel
  hands them to /init as arguments (or keeps them, as quiet or ro), never to the option;
- a value in single quotes gets an error saying that the kernel groups words only inside
  double quotes, with the double-quoted form;
- an option that takes one value, given several different ones, gets a note naming the
  one /init keeps (the last);
- a line that names no container warns that the boot runs none.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence

from b2c_builder.errors import ConfigError
from b2c_builder.guest.options import (
    OPTIONS,
    UNKNOWN_OPTION,
    Option,
    Problem,
    ValueKind,
    kernel_params,
    lint_cmdline,
    lint_extra_args,
    lookup,
    parse_cmdline,
)

_B2C_NAMES = tuple(name for opt in OPTIONS for name in opt.names if name.startswith("b2c."))
_CONTAINERS = ("b2c.container", "b2c.post_container", "b2c.service")


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice ``word`` most likely misspells (difflib's ratio, at least 0.75), else None."""
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return matches[0] if matches else None


def _meant(name: str) -> str | None:
    """The known b2c option name an unknown ``name`` most likely misspells, else None."""
    short = {n.removeprefix("b2c."): n for n in _B2C_NAMES}
    match = closest(name.removeprefix("b2c."), list(short))
    return short[match] if match else None


def _option_meant(name: str) -> Option | None:
    """The option ``name`` names or, for an unknown b2c name, the one it most likely
    misspells; None for neither."""
    option = lookup(name)
    if option is None and name.startswith("b2c.") and (meant := _meant(name)) is not None:
        option = lookup(meant)
    return option


def _unknown(name: str) -> Problem:
    meant = _meant(name)
    advice = f"did you mean {meant}?" if meant else "the README's option table lists them"
    return Problem("error", name, f"unknown option (/init would ignore it); {advice}")


def _keyword_problems(
    params: list[tuple[str, str | None]], problems: list[Problem]
) -> list[Problem]:
    """``problems`` with a suggestion added to an option's error when its value is close to
    a keyword of that option, or a warning when such a value is valid (read as a name); not
    when it names a b2c.filesystem of the line."""
    out = list(problems)
    filesystems = {v.split(",")[0] for n, v in params if n == "b2c.filesystem" and v}
    for name, value in params:
        option = lookup(name)
        if option is None or value is None or value in (*option.kind.keywords, *filesystems):
            continue
        if (keyword := closest(value, option.kind.keywords)) is None:
            continue
        errors = [i for i, p in enumerate(out) if p.option == name and p.severity == "error"]
        for i in errors:
            out[i] = Problem("error", name, f"{out[i].message}; did you mean {keyword}?")
        if not errors:
            out.append(
                Problem(
                    "warning",
                    name,
                    f"{value!r} is read as a name, not as the keyword {keyword}: "
                    f"did you mean {name}={keyword}?",
                )
            )
    return out


# The kernel's own flags that often follow a b2c option: after a value that cannot hold a
# space (b2c.cache_device=auto quiet) they are what they look like.
# Kernel parameters without a value that a command line commonly holds: the kernel keeps
# them (Documentation/admin-guide/kernel-parameters.txt), so they never reach /init.
_KERNEL_FLAGS = frozenset(
    {
        "quiet", "ro", "rw", "debug", "splash", "nosplash", "single", "nomodeset", "noapic",
        "nosmp", "nolapic", "nokaslr", "nosmt", "nopti", "noefi", "nowatchdog",
        "ignore_loglevel", "initcall_debug", "norandmaps",
    }
)  # fmt: skip
_AFTER_VALUE = "after its unquoted value"


def _single_quoted(cmdline: str, problems: list[Problem]) -> list[Problem]:
    """``problems`` with the error of a value the user single-quoted
    (``b2c.container='docker://r/j:1 sh'``: an unbalanced ' in 'docker://r/j:1) saying why,
    with the double-quoted form; that value's words-after warning goes (the error says it)."""
    out = list(problems)
    drop: set[int] = set()
    params = kernel_params(cmdline)
    for k, param in enumerate(params):
        raw = cmdline[param.start : param.end]
        if not (param.value or "").startswith("'") or '"' in raw or param.value == "'":
            continue
        rest = [p for p in params[k + 1 :] if p.value is None]
        end = next((p.end for p in rest if p.name.endswith("'")), param.end)
        inner = cmdline[param.start + len(param.name) + 2 : end].removesuffix("'")
        why = (
            f"the kernel groups words only inside double quotes, so the value ended at the "
            f'first space: write {param.name}="{inner}"'
        )
        for i, problem in enumerate(out):
            if problem.option != param.name:
                continue
            if problem.severity == "error" and "unbalanced ' quote" in problem.message:
                out[i] = Problem("error", param.name, f"{problem.message}; {why}")
            elif _AFTER_VALUE in problem.message:
                drop.add(i)
    return [problem for i, problem in enumerate(out) if i not in drop]


def _bare_words(cmdline: str) -> list[Problem]:
    """A warning for each b2c option whose unquoted value is followed by words without '='
    (``b2c.container=docker://r/j:1 sh -c make check``): the kernel ends the value at the
    first space and hands those words to /init as arguments. The kernel keeps its own flags
    (_KERNEL_FLAGS: quiet, ro...): they never reach /init, so they are not reported, and a
    value followed by flags alone (``b2c.container=r/j quiet``) gets no warning. Only a
    warning, since a word may be a kernel parameter this list does not know."""
    params = kernel_params(cmdline)
    problems: list[Problem] = []
    for k, param in enumerate(params):
        if not param.name.startswith("b2c.") or param.value is None:
            continue
        if '"' in cmdline[param.start : param.end]:
            continue
        bare = []
        for word in params[k + 1 :]:
            if word.value is not None or word.name.startswith("b2c.") or word.name == "--":
                break
            bare.append(word)
        # b2c.hostname=my host quiet: quiet is the kernel's, host reaches /init.
        reaching = [word for word in bare if word.name not in _KERNEL_FLAGS]
        if not reaching:
            continue
        words = " ".join(word.name for word in reaching)
        value = cmdline[param.start + len(param.name) + 1 : reaching[-1].end].replace('"', "'")
        they = (
            "they reach /init as arguments"
            if len(reaching) > 1
            else "it reaches /init as an argument"
        )
        problems.append(
            Problem(
                "warning",
                param.name,
                f"{words!r} {_AFTER_VALUE}: {they}, not {param.name} (the kernel "
                f"keeps its own flags, such as quiet or ro); if that is its value, quote it: "
                f'{param.name}="{value}"',
            )
        )
    return problems


def _repeated(params: list[tuple[str, str | None]]) -> list[Problem]:
    """A note for an option that takes one value given several times with different values:
    /init keeps the last one (its dispatch assigns each in turn; the job and a
    b2c.extra_args_url document come after the command line)."""
    values: dict[str, list[str | None]] = {}
    for name, value in params:
        option = lookup(name)
        if option is not None and not option.repeatable and option.kind is not ValueKind.flag:
            values.setdefault(option.name, []).append(value)
    return [
        Problem("note", name, f"given {len(given)} times: /init keeps the last one ({given[-1]!r})")
        for name, given in values.items()
        if len(set(given)) > 1
    ]


def _no_container(params: list[tuple[str, str | None]]) -> list[Problem]:
    """A warning when no option of the line runs a container, unless a misspelt one meant to
    (b2c.containr: its error already says what is wrong)."""
    names = {opt.name for name, _ in params if (opt := _option_meant(name)) is not None}
    if names & {*_CONTAINERS, "b2c.extra_args_url"}:
        return []
    return [
        Problem(
            "warning",
            "cmdline",
            f"no {', '.join(_CONTAINERS[:2])} or {_CONTAINERS[2]}: the boot runs no container",
        )
    ]


def _stricter(problems: list[Problem]) -> list[Problem]:
    """/init's unknown-option warnings, as the host's errors."""
    return [
        _unknown(p.option) if (p.severity, p.message) == ("warning", UNKNOWN_OPTION) else p
        for p in problems
    ]


def check_cmdline(
    cmdline: str,
    *,
    arch: str | None = None,
    added: str = "",
    added_by: str = "the boot loader",
    job: Sequence[str] = (),
) -> list[Problem]:
    """``options.lint_cmdline`` read as the host reads it before acting (see the module's
    docstring): its problems, made stricter, and the host's own."""
    problems = lint_cmdline(cmdline, arch=arch, added=added, added_by=added_by, job=job)
    params = [*parse_cmdline(cmdline), *parse_cmdline(" ".join(job))]
    problems = _keyword_problems(params, _stricter(problems)) + _bare_words(cmdline)
    return _single_quoted(cmdline, problems) + _repeated(params) + _no_container(params)


def check_extra_args(data: bytes) -> list[Problem]:
    """``options.lint_extra_args`` made stricter as check_cmdline is (a b2c.extra_args_url
    document need not name a container: the command line may)."""
    problems = _stricter(lint_extra_args(data))
    text = data.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    return _keyword_problems(parse_cmdline(text), problems)


def refuse_errors(
    cmdline: str,
    *,
    arch: str | None = None,
    added: str = "",
    added_by: str = "the boot loader",
    job: Sequence[str] = (),
    outcome: str,
) -> None:
    """Check ``cmdline`` (``check_cmdline``) before a command acts on it: every problem is
    printed on stderr (``warning: OPTION: MESSAGE`` / ``error: ...``); errors then raise one
    ConfigError counting them and naming their options (not repeating them) with ``outcome``
    (what was not done, e.g. "nothing was written"). The checks of ``b2c-builder
    check-cmdline``, run by bootcfg, iso and run (``job``: see options.lint_cmdline)."""
    problems = check_cmdline(cmdline, arch=arch, added=added, added_by=added_by, job=job)
    for problem in problems:
        print(problem, file=sys.stderr)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        where = ", ".join(dict.fromkeys(p.option for p in errors))
        raise ConfigError(
            f"the command line has {len(errors)} error(s) ({where}), printed above; {outcome}",
            hint="fix the options above (b2c-builder check-cmdline 'LINE' checks a line without "
            "acting on it)",
        )
