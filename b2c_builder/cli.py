"""The command line: options map onto config objects; B2CError becomes a message + exit code."""

from __future__ import annotations

import functools
import inspect
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from b2c_builder import __version__, log
from b2c_builder.boot.bootcfg import Format
from b2c_builder.config import (
    BUILD_SETTINGS,
    RELEASE_SETTINGS,
    RUN_SETTINGS,
    Arch,
    BuildConfig,
    ReleaseConfig,
    Setting,
    SettingsTable,
)
from b2c_builder.errors import B2CError, ConfigError
from b2c_builder.guest.options import OPTIONS, Option, ValueKind

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Build boot2container-style initramfs releases from Debian packages, and boot them.",
)
_state = {"debug": False}


def _setting_parameter(setting: Setting) -> inspect.Parameter:
    """The typer parameter of ``setting``: its flag, help, type (a list for a repeatable
    option) and default (``Setting.cli_default``; a default the command line cannot spell is
    shown in words)."""
    one: Any = setting.value_type
    value: Any = types.GenericAlias(list, (one,)) if setting.repeatable else one
    helptext = setting.description
    info: Any
    if setting.argument:
        info = typer.Argument(help=helptext, metavar=setting.metavar or None, show_default=False)
    else:
        info = typer.Option(
            setting.flags,
            help=helptext,
            metavar=setting.metavar or None,
            show_default=True if setting.cli_default is not None else setting.shown or False,
            rich_help_panel=setting.panel,
        )
    return inspect.Parameter(
        setting.param,
        inspect.Parameter.KEYWORD_ONLY,
        default=setting.cli_default,
        annotation=Annotated[value if setting.switch else value | None, info],
    )


def _with_settings(table: SettingsTable) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give the command one CLI option per setting of ``table`` (config.BUILD_SETTINGS or
    RUN_SETTINGS): flag, type, default and help come from there. The command receives them
    as ``settings={config field: value typer read, None when not given}``, for
    ``table.config_values``."""

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(func, eval_str=True)
        params = [p for p in signature.parameters.values() if p.name != "settings"]
        extra = [_setting_parameter(setting) for setting in table]

        @functools.wraps(func)
        def wrapper(**kwargs: object) -> None:
            settings = {setting.dest: kwargs.pop(setting.param) for setting in table}
            func(settings=settings, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*extra, *params])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*extra, *params]}
        del wrapper.__wrapped__  # typer must read the new signature, not func's
        return wrapper

    return decorate


def _print_version(given: bool) -> None:
    """``--version``: the same line as ``b2c-builder version``, then exit 0."""
    if given:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Verbose logs and tracebacks.")] = False,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    _state["debug"] = debug
    log.setup(debug=debug)


@app.command()
@_with_settings(BUILD_SETTINGS)
def build(settings: dict[str, object]) -> None:
    """Build releases/initramfs.linux_<arch>.cpio.<ext> (+ .sha256 and manifest.json)."""
    from b2c_builder.build.pipeline import build as run_build

    def action() -> None:
        result = run_build(BuildConfig(**BUILD_SETTINGS.config_values(settings)))
        print(result.image.path)

    _guard(action)


@app.command()
@_with_settings(RELEASE_SETTINGS)
def release(settings: dict[str, object]) -> None:
    """Build every architecture (with Debian's kernel) into releases/<version>/ with
    SHA256SUMS; the folder appears, or is replaced, only once every build succeeded.

    Every architecture's packages are fetched before the first build: a mirror that lacks
    some fails first, naming them, with the --arch options of the architectures it serves."""
    from b2c_builder.build.release import make_release

    def action() -> None:
        result = make_release(ReleaseConfig(**RELEASE_SETTINGS.config_values(settings)))
        print(result.folder)

    _guard(action)


@app.command()
def diff(
    old: Annotated[Path, typer.Argument(help="An image, or a release folder.")],
    new: Annotated[Path, typer.Argument(help="An image, or a release folder (as OLD).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """List what changed between two images or two release folders: files added, removed
    and resized, Debian package versions (from the spdx.json or manifest.json beside each
    image). Images are newc cpio archives, raw or gzip/xz/zstd-compressed.

    Exit code 0: identical; 1: they differ; 2: an input cannot be read.
    """
    from b2c_builder.build import diff as diffs

    code = 0

    def action() -> None:
        nonlocal code
        report = diffs.diff(old, new)
        sys.stdout.write(diffs.render_json(report) if as_json else diffs.render_text(report))
        code = 0 if report.identical() else 1

    try:
        _guard(action)
    except typer.Exit as exc:  # any error but an interruption is 2, as diff(1)'s trouble
        raise typer.Exit(exc.exit_code if exc.exit_code == 130 else 2) from None
    raise typer.Exit(code)


def _guard(action: Callable[[], None]) -> None:
    try:
        action()
    except B2CError as exc:
        _die(exc)
    except OSError as exc:  # a full disk, a folder that became read-only...
        _die(B2CError(str(exc), hint="check the free space and permissions of that path"))
    except KeyboardInterrupt:
        log.log.error("interrupted")
        raise typer.Exit(130) from None


def _die(exc: B2CError) -> NoReturn:
    if _state["debug"]:
        log.log.exception("%s", exc.message)
    else:
        log.log.error("%s", exc.message)
    if exc.hint:
        log.log.error("hint: %s", exc.hint)
    raise typer.Exit(exc.exit_code)


def _b2c_flags() -> list[tuple[str, Option]]:
    """(parameter name, option) for every b2c option of /init that ``run`` offers as a flag."""
    return [
        ("b2c_" + opt.name.removeprefix("b2c."), opt)
        for opt in OPTIONS
        if opt.name.startswith("b2c.") and opt.kind is not ValueKind.unsupported
    ]


def _with_b2c_flags(func: Callable[..., None]) -> Callable[..., None]:
    """Give ``func`` one CLI flag per b2c option of the option table (b2c_builder/guest/options.py):
    ``--container SPEC`` for ``b2c.container``, ``--pipefail`` for a flag... ``func`` receives
    them as ``b2c={option name: value}``."""
    signature = inspect.signature(func, eval_str=True)
    flags = _b2c_flags()
    extra = []
    for name, opt in flags:
        flag = opt.flag
        helptext = f"{opt.name}: {opt.meaning}"
        panel = "b2c options (one per option of /init, see the README)"
        annotation: object
        default: object
        if opt.kind is ValueKind.flag:
            annotation = Annotated[
                bool, typer.Option(flag, help=helptext, rich_help_panel=panel, show_default=False)
            ]
            default = False
        elif opt.repeatable:
            annotation = Annotated[
                list[str] | None,
                typer.Option(flag, help=helptext + " (repeatable)", rich_help_panel=panel),
            ]
            default = None
        else:
            annotation = Annotated[
                str | None, typer.Option(flag, help=helptext, rich_help_panel=panel)
            ]
            default = None
        extra.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    params = [p for p in signature.parameters.values() if p.name != "b2c"]

    @functools.wraps(func)
    def wrapper(**kwargs: object) -> None:
        values = {opt.name: kwargs.pop(name) for name, opt in flags}
        func(b2c=values, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*params, *extra]}
    del wrapper.__wrapped__  # typer must read the new signature, not func's
    return wrapper


@app.command(context_settings={"allow_interspersed_args": False})
@_with_settings(RUN_SETTINGS)
@_with_b2c_flags
def run(settings: dict[str, object], b2c: dict[str, object] | None = None) -> None:
    """Boot a kernel + initramfs under QEMU; exit with the pipeline status the guest printed.

    The pipeline status is the first failing container's status (125: podman could not pull
    or create it). Before booting, a bad option exits 2 (1 for other errors). Other exit
    codes: 250 timeout, 251 kernel panic, 252 the guest printed no status, 253 QEMU failed,
    254 the guest broke the console contract (e.g. two statuses).
    """
    from b2c_builder.boot import launch

    code = 0

    def action() -> None:
        nonlocal code
        values = RUN_SETTINGS.config_values(settings)
        code = launch.launch(launch.RunRequest(**values, b2c=dict(b2c or {})))  # type: ignore[arg-type]

    _guard(action)
    raise typer.Exit(code)


# Extra arguments are kept (ctx.args), to say that the shell split the line.
@app.command("check-cmdline", context_settings={"allow_extra_args": True})
def check_cmdline(
    ctx: typer.Context,
    cmdline: Annotated[
        str,
        typer.Argument(
            metavar="CMDLINE", help="A kernel command line, as in a boot entry: one argument."
        ),
    ],
    arch: Annotated[
        Arch, typer.Option(help="Target architecture (its kernel's COMMAND_LINE_SIZE).")
    ] = Arch.amd64,
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format",
            help="Check it for this boot loader's entry (its quoting, what it adds) instead "
            "of for `b2c-builder run`.",
        ),
    ] = None,
    kernel: Annotated[
        str, typer.Option(help="With --format: the kernel's path in the entry.")
    ] = "/vmlinuz",
    initrd: Annotated[
        list[str] | None, typer.Option(help="With --format: an initrd's path (repeatable).")
    ] = None,
) -> None:
    """Report what /init would reject or warn about in CMDLINE, without booting.

    Also checks the line as a whole: its length against the kernel's limit (with what
    `b2c-builder run`, or the --format boot loader, adds), a UTF-8 byte-order mark, a CR,
    values that look like secrets and, with --format, what that loader cannot pass.
    Exit code 0: clean (warnings allowed); 2: at least one error (the boot would fail or end
    with a non-zero pipeline status before any container).
    """
    from b2c_builder.boot import bootcfg
    from b2c_builder.boot.qemu import added_by_run
    from b2c_builder.guest.hostlint import check_cmdline as check
    from b2c_builder.guest.options import RUN, Problem

    if ctx.args:
        # The shell split the line (and took its quotes): checking the words joined again
        # would check another line than the boot loader's.
        _die(
            ConfigError(
                f"check-cmdline takes the command line as one argument, not "
                f"{1 + len(ctx.args)}: the shell split it and removed its quotes",
                hint="put the whole line in single quotes: b2c-builder check-cmdline "
                "'console=ttyS0 b2c.container=\"docker://registry/image:tag cmd\"'",
            )
        )
    problems: list[Problem] = []
    added_by = RUN if fmt is None else fmt.loader
    if fmt is None:
        added = added_by_run(cmdline, arch)
    else:
        entry = bootcfg.BootEntry(kernel, tuple(initrd or ()), cmdline)
        try:
            bootcfg.render(fmt, entry)
            added = bootcfg.added_text(fmt, entry)
        except ConfigError as exc:
            problems.append(Problem("error", "cmdline", f"{exc.message} ({exc.hint})"))
            added = ""
    if fmt is not None and not initrd:
        problems.append(
            Problem(
                "warning",
                "cmdline",
                "no --initrd: bootcfg refuses an entry without one (the image holds /init), "
                f"and what {fmt.loader} adds for an initrd is not counted in the length",
            )
        )
    problems = check(cmdline, arch=arch, added=added, added_by=added_by) + problems
    for problem in problems:
        print(problem)
    if any(p.severity == "error" for p in problems):
        raise typer.Exit(2)


def _compose_line(
    append: list[str] | None, b2c: dict[str, object] | None, fmt: Format | None
) -> str:
    """The words of every ``--append``, then the parameters of the b2c option flags (for
    GRUB in the ``"name=value"`` form it can pass)."""
    from b2c_builder.boot import bootcfg, launch

    if fmt is Format.grub:
        bootcfg.grub_check_flags(dict(b2c or {}))  # GRUB passes neither ' nor "
    hint = (
        "group words with '...' instead (/init splits podman's words at both quotes, without "
        "expansion), or put the option in a file served over HTTP(S) and pass "
        "b2c.extra_args_url=URL"
    )
    params = launch.b2c_parameters(dict(b2c or {}), quote_hint=hint)  # type: ignore[arg-type]
    if fmt is Format.grub:
        params = [bootcfg.grub_parameter(p) for p in params]
    return " ".join([p for p in append or () if p] + params)


@app.command()
@_with_b2c_flags
def bootcfg(
    fmt: Annotated[Format, typer.Option("--format", help="The boot loader.")],
    kernel: Annotated[str, typer.Option(help="The kernel's path, as the loader sees it.")],
    initrd: Annotated[
        list[str] | None,
        typer.Option(
            help="An initrd's path, as the loader sees it; repeat it (image, then modules)."
        ),
    ] = None,
    append: Annotated[
        list[str] | None,
        typer.Option(
            help="The kernel command line (the b2c flags are appended); repeat it to add "
            "words (the values are joined with spaces)."
        ),
    ] = None,
    label: Annotated[str, typer.Option(help="The entry's name.")] = "b2c",
    arch: Annotated[
        Arch, typer.Option(help="Target architecture (its kernel's COMMAND_LINE_SIZE).")
    ] = Arch.amd64,
    b2c: dict[str, object] | None = None,
) -> None:
    """Print a boot loader configuration whose default entry boots at once, handing the
    kernel the command line byte for byte (or an error naming what the loader cannot pass).

    The command line is checked first (as check-cmdline does, with what the loader adds);
    nothing is printed when it has an error.
    """
    from b2c_builder.boot import bootcfg as entries
    from b2c_builder.guest.hostlint import refuse_errors

    def action() -> None:
        line = _compose_line(append, b2c, fmt)
        entry = entries.BootEntry(kernel, tuple(initrd or ()), line, label)
        text = entries.render(fmt, entry)
        refuse_errors(
            line,
            arch=arch,
            added=entries.added_text(fmt, entry),
            added_by=fmt.loader,
            outcome="nothing was written",
        )
        entries.require_initrd(entry)
        sys.stdout.write(text)

    _guard(action)


@app.command()
@_with_b2c_flags
def iso(
    kernel: Annotated[Path, typer.Option(help="The kernel image (bzImage).")],
    output: Annotated[Path, typer.Option(help="The ISO file to write (*.iso).")],
    initrd: Annotated[
        list[Path] | None,
        typer.Option(help="An initrd; repeat it (image, then modules)."),
    ] = None,
    append: Annotated[
        list[str] | None,
        typer.Option(
            help="The kernel command line (the b2c flags are appended); repeat it to add "
            "words (the values are joined with spaces)."
        ),
    ] = None,
    label: Annotated[str, typer.Option(help="The boot entry's name.")] = "b2c",
    b2c: dict[str, object] | None = None,
) -> None:
    """Write a hybrid ISO (CD or USB stick) that boots KERNEL + initrds unattended under BIOS
    (ISOLINUX) and UEFI (systemd-boot), handing the kernel the command line byte for byte.

    Needs Debian's xorriso, isolinux, syslinux-common, systemd-boot-efi and mtools. The
    command line is checked first; nothing is written when it has an error.
    """
    from b2c_builder.boot import bootcfg as entries
    from b2c_builder.boot import iso as isos
    from b2c_builder.guest.hostlint import refuse_errors

    def action() -> None:
        line = _compose_line(append, b2c, Format.syslinux)
        cfg = isos.IsoConfig(kernel, tuple(initrd or ()), line, output, label)
        isos.loader_files(cfg)  # refuses what a loader cannot pass, before the lint
        refuse_errors(
            line,
            arch=Arch.amd64,
            added=isos.added_text(cfg),
            added_by="ISOLINUX or systemd-boot",
            outcome="nothing was written",
        )
        entries.require_initrd(isos.boot_entry(cfg))
        print(isos.make_iso(cfg))

    _guard(action)


@app.command()
def serve(
    folder: Annotated[Path, typer.Argument(help="The folder to serve (kernel, initrds, scripts).")],
    bind: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8000,
) -> None:
    """Serve FOLDER over HTTP for iPXE, logging each request; paths outside it get 403.

    A QEMU guest on user networking (`b2c-builder run --pxe`) reaches 127.0.0.1 as 10.0.2.2.
    """
    from b2c_builder.boot import serve as server

    _guard(lambda: server.serve(folder, bind, port))


@app.command()
def kconfig(
    arch: Annotated[
        Arch | None,
        typer.Option(help="Kernel architecture (default: amd64; with --check, the .config's)."),
    ] = None,
    check: Annotated[
        Path | None,
        typer.Option("--check", help="Check this .config instead of printing the fragment."),
    ] = None,
) -> None:
    """Print the kernel config fragment b2c-builder images need (for merge_config.sh).

    With --check FILE: print one line per missing or wrong option of FILE, with why it is
    needed. Exit code 0: every required option is there (warnings allowed); 1: at least one
    required option is missing or wrong; 2: FILE cannot be read or is not a .config.
    """
    from b2c_builder.guest import kconfig as kc

    code = 0

    def action() -> None:
        nonlocal code
        if check is None:
            print(kc.fragment(arch or Arch.amd64), end="")
            return
        checked, problems = kc.check_file(check, arch)
        for problem in problems:
            print(problem)
        errors = sum(p.severity == "error" for p in problems)
        log.log.info(
            "%s (%s): %d required option(s) missing or wrong, %d warning(s)",
            check,
            checked,
            errors,
            len(problems) - errors,
        )
        code = 1 if errors else 0

    _guard(action)
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command("check-extra-args")
def check_extra_args(
    document: Annotated[
        Path, typer.Argument(help="A b2c.extra_args_url document, as the server sends it.")
    ],
) -> None:
    """Report what /init would reject or warn about in a b2c.extra_args_url DOCUMENT.

    The document is read as /init reads it: a UTF-8 byte-order mark at its start is dropped
    and CR is white space (CRLF line ends are fine); NUL or control bytes, a byte-order mark
    elsewhere and any parameter that is not a b2c option are errors. Exit code 0: clean
    (warnings allowed); 2: at least one error (the boot would stop before any container), or
    DOCUMENT cannot be read.
    """
    from b2c_builder.guest.hostlint import check_extra_args as check

    problems = []

    def action() -> None:
        try:
            data = document.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read {document}: {exc.strerror}", hint="check the path"
            ) from exc
        problems.extend(check(data))

    _guard(action)
    for problem in problems:
        print(problem)
    if any(p.severity == "error" for p in problems):
        raise typer.Exit(2)


def reflowed(doc: str) -> str:
    """A docstring as --help shows it: each paragraph on one line. Typer's rich help keeps
    single line breaks, so the source's own wrapping would break its lines mid-sentence
    before rich wraps them at the terminal's width."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


for _command in app.registered_commands:
    if _command.help is None and _command.callback is not None and _command.callback.__doc__:
        _command.help = reflowed(_command.callback.__doc__)


def main() -> None:
    if not log.log.handlers:
        log.setup()
    app(prog_name="b2c-builder")
    sys.exit(0)
