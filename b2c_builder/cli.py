"""The command line: options map onto config objects; B2CError becomes a message + exit code."""

from __future__ import annotations

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
    default_cache_dir,
    parse_epoch,
    parse_size,
    source_date_epoch_from_env,
)
from b2c_builder.errors import B2CError

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


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    if not log.log.handlers:
        log.setup()
    app(prog_name="b2c-builder")
    sys.exit(0)
