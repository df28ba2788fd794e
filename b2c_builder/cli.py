"""The command line: options map onto config objects; B2CError becomes a message + exit code."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from b2c_builder import __version__, log
from b2c_builder.config import (
    DEFAULT_KEYRING,
    DEFAULT_MAX_SIZE,
    DEFAULT_SUITE,
    Arch,
    BuildConfig,
    Compression,
    PodmanVariant,
    default_cache_dir,
    parse_epoch,
    parse_size,
    source_date_epoch_from_env,
)
from b2c_builder.errors import B2CError
from b2c_builder.options import OPTIONS, Kind, Option
from b2c_builder.qemu import Accel

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Build boot2container-style initramfs releases from Debian packages, and boot them.",
)
_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Verbose logs and tracebacks.")] = False,
) -> None:
    _state["debug"] = debug
    log.setup(debug=debug)


@app.command()
def build(
    suite: Annotated[str, typer.Option(help="Debian codename.")] = DEFAULT_SUITE,
    arch: Annotated[Arch, typer.Option(help="Debian architecture.")] = Arch.amd64,
    compression: Annotated[Compression, typer.Option(help="Image compression.")] = Compression.zstd,
    output: Annotated[Path, typer.Option(help="Output folder.")] = Path("releases"),
    mirror: Annotated[
        str | None, typer.Option(help="Debian mirror URL (default: the host's apt sources).")
    ] = None,
    keyring: Annotated[Path, typer.Option(help="OpenPGP keyring for InRelease.")] = DEFAULT_KEYRING,
    verify_signature: Annotated[
        bool,
        typer.Option(
            "--verify-signature/--no-verify-signature",
            help="Check InRelease's signature (turning it off is unsafe).",
        ),
    ] = True,
    cache_dir: Annotated[Path | None, typer.Option(help="Download cache folder.")] = None,
    extra_package: Annotated[
        list[str] | None, typer.Option(help="Add a package's programs (repeatable).")
    ] = None,
    max_size: Annotated[
        str, typer.Option(help="Fail above this compressed size, e.g. 20MiB.")
    ] = f"{DEFAULT_MAX_SIZE // 2**20}MiB",
    source_date_epoch: Annotated[
        str | None,
        typer.Option(help="Clamp mtimes (default: $SOURCE_DATE_EPOCH, else the Release date)."),
    ] = None,
    kernel_package: Annotated[
        str | None, typer.Option(help="Also ship this Debian kernel and a modules archive.")
    ] = None,
    modules_dir: Annotated[
        Path | None, typer.Option(help="Build the modules archive from lib/modules/<version>.")
    ] = None,
    module: Annotated[
        list[str] | None, typer.Option(help="Add a kernel module to the default set (repeatable).")
    ] = None,
    default_cmdline: Annotated[
        str, typer.Option(help="Command line applied before /proc/cmdline.")
    ] = "",
    podman: Annotated[
        PodmanVariant,
        typer.Option(
            help="debian: Debian's podman binary; trimmed: compiled from Debian's source "
            "package, trimmed of unused features (cached; the first build takes minutes)."
        ),
    ] = PodmanVariant.debian,
) -> None:
    """Build releases/initramfs.linux_<arch>.cpio.<ext> (+ .sha256 and manifest.json)."""
    from b2c_builder.build import build as run_build

    def action() -> None:
        epoch = (
            parse_epoch(source_date_epoch, "--source-date-epoch")
            if source_date_epoch is not None
            else source_date_epoch_from_env()
        )
        cfg = BuildConfig(
            suite=suite,
            arch=arch,
            compression=compression,
            output=output,
            mirror=mirror,
            keyring=keyring,
            verify_signature=verify_signature,
            cache_dir=cache_dir or default_cache_dir(),
            extra_packages=tuple(extra_package or ()),
            max_size=parse_size(max_size),
            source_date_epoch=epoch,
            kernel_package=kernel_package,
            modules_dir=modules_dir,
            modules=tuple(module or ()),
            default_cmdline=default_cmdline,
            podman=podman,
        )
        if not verify_signature:
            log.log.warning(
                "!!! --no-verify-signature: the archive index is NOT authenticated; "
                "anyone on the path to the mirror can change what goes into the image !!!"
            )
        result = run_build(cfg)
        print(result.image.path)

    _guard(action)


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
        if opt.name.startswith("b2c.") and opt.kind is not Kind.unsupported
    ]


def _with_b2c_flags(func: Callable[..., None]) -> Callable[..., None]:
    """Give ``func`` one CLI flag per b2c option of the option table (b2c_builder/options.py):
    ``--container SPEC`` for ``b2c.container``, ``--pipefail`` for a flag... ``func`` receives
    them as ``b2c={option name: value}``."""
    signature = inspect.signature(func, eval_str=True)
    flags = _b2c_flags()
    extra = []
    for name, opt in flags:
        flag = "--" + opt.name.removeprefix("b2c.").replace("_", "-")
        helptext = f"{opt.name}: {opt.meaning}"
        panel = "b2c options (one per option of /init, see the README)"
        annotation: object
        default: object
        if opt.kind is Kind.flag:
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
@_with_b2c_flags
def run(
    kernel: Annotated[
        Path | None,
        typer.Option(help="The kernel image (bzImage / Image). Default: the newest in releases/."),
    ] = None,
    initrd: Annotated[
        list[Path] | None,
        typer.Option(
            help="An initramfs; repeat it to concatenate several (image, modules). Default: "
            "the release image + the modules archive matching the kernel."
        ),
    ] = None,
    modules_dir: Annotated[
        Path | None,
        typer.Option(help="Modules from this lib/modules/<release> tree (cached archive)."),
    ] = None,
    image: Annotated[
        list[str] | None,
        typer.Option(
            help="A container image, one pipeline container each, in order: docker://REF, "
            "oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE, "
            "containers-storage:NAME (repeatable)."
        ),
    ] = None,
    share: Annotated[
        list[str] | None,
        typer.Option(
            help="HOST_DIR[:GUEST_DIR] shared read-write (9p) with the guest and the image "
            "containers; the first one is their working directory (repeatable)."
        ),
    ] = None,
    junit: Annotated[
        Path | None,
        typer.Option(help="Write a JUnit XML report (KTAP/TAP results become testcases)."),
    ] = None,
    releases: Annotated[
        Path, typer.Option(help="Where the default kernel and initrds are looked for.")
    ] = Path("releases"),
    append: Annotated[str, typer.Option(help="Raw kernel command-line parameters.")] = "",
    arch: Annotated[Arch, typer.Option(help="Guest architecture.")] = Arch.amd64,
    accel: Annotated[
        Accel, typer.Option(help="auto probes /dev/kvm for real and falls back to tcg.")
    ] = Accel.auto,
    memory: Annotated[str, typer.Option(help="Guest memory, as QEMU's -m.")] = "2G",
    cpus: Annotated[int, typer.Option(help="Guest CPUs (more than 1 is unstable under TCG).")] = 1,
    disk: Annotated[
        list[Path] | None, typer.Option(help="A disk image (raw or qcow2), repeatable.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds before the guest is killed.")] = 600,
    serial_log: Annotated[
        Path | None, typer.Option(help="Also write the serial console here.")
    ] = None,
    qemu_arg: Annotated[
        list[str] | None, typer.Option(help="An extra QEMU argument, e.g. -rtc (repeatable).")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache for --modules-dir archives.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the QEMU command and exit.")
    ] = False,
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="After --: the command of the last --image, argument by argument, byte for byte."
        ),
    ] = None,
    b2c: dict[str, object] | None = None,
) -> None:
    """Boot a kernel + initramfs under QEMU; exit with the pipeline status the guest printed.

    Other exit codes: 250 timeout, 251 kernel panic, 252 the guest printed no status,
    253 QEMU failed, 254 the guest broke the console contract (e.g. two statuses).
    """
    from b2c_builder import launch, qemu

    code = 0

    def action() -> None:
        nonlocal code
        request = launch.RunRequest(
            kernel=kernel,
            initrds=tuple(initrd or ()),
            modules_dir=modules_dir,
            images=tuple(image or ()),
            shares=tuple(share or ()),
            command=tuple(command or ()),
            b2c=dict(b2c or {}),  # type: ignore[arg-type]
            append=append,
            arch=arch,
            releases=releases,
            cache_dir=cache_dir or default_cache_dir(),
            memory=memory,
            accel=accel,
            cpus=cpus,
            disks=tuple(qemu.Disk.detect(p) for p in disk or ()),
            timeout=timeout,
            serial_log=serial_log,
            qemu_args=tuple(qemu_arg or ()),
        )
        code = launch.launch(request, dry_run=dry_run, junit=junit)

    _guard(action)
    raise typer.Exit(code)


@app.command("check-cmdline")
def check_cmdline(
    cmdline: Annotated[str, typer.Argument(help="A kernel command line, as in a boot entry.")],
) -> None:
    """Report what /init would reject or warn about in CMDLINE, without booting.

    Exit code 0: clean (warnings allowed); 2: at least one error (the boot would end with a
    non-zero pipeline status before running any container).
    """
    from b2c_builder.options import lint_cmdline

    problems = lint_cmdline(cmdline)
    for problem in problems:
        print(problem)
    if any(p.severity == "error" for p in problems):
        raise typer.Exit(2)


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
    from b2c_builder import kconfig as kc

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


def main() -> None:
    if not log.log.handlers:
        log.setup()
    app(prog_name="b2c-builder")
    sys.exit(0)
