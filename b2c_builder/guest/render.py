"""Render /init and its udhcpc script from templates/ and init/ into the rootfs manifest.

The init/*.sh libraries are plain shell (never jinja2-rendered, so shell text such as
podman's Go templates passes through untouched); templates/init.sh.j2 inlines them, in
INIT_LIBRARIES order, after the option dispatch it generates from b2c_builder.guest.options and
the boot-time kernel checks it generates from b2c_builder.guest.kconfig.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import jinja2

from b2c_builder import __version__
from b2c_builder.build.rootfs import Rootfs
from b2c_builder.errors import ConfigError
from b2c_builder.guest.hostlint import check_cmdline
from b2c_builder.guest.kconfig import init_checks
from b2c_builder.guest.options import OPTIONS
from b2c_builder.resources import data_path

# Sourcing order of init/*.sh in the rendered /init (each only defines functions).
INIT_LIBRARIES = (
    "common.sh",
    "cmdline.sh",
    "secrets.sh",
    "modules.sh",
    "kernel.sh",
    "network.sh",
    "time.sh",
    "storage.sh",
    "store.sh",
    "job.sh",
    "podman.sh",
    "pipeline.sh",
    "shutdown.sh",
    "main.sh",
)
INIT_TEMPLATE = "init.sh.j2"
UDHCPC_SCRIPT = "udhcpc.script"
INIT_PATH = "init"
UDHCPC_PATH = "etc/udhcpc/default.script"


@dataclass(frozen=True)
class InitSettings:
    """Build-time values rendered into /init."""

    version: str = __version__
    default_cmdline: str = ""

    def __post_init__(self) -> None:
        errors = [p for p in check_cmdline(self.default_cmdline) if p.severity == "error"]
        if errors:
            raise ConfigError(
                "--default-cmdline is invalid: " + "; ".join(str(p) for p in errors),
                hint="e.g. --default-cmdline 'b2c.container=\"docker://IMAGE\" b2c.pipefail'",
            )


@dataclass(frozen=True)
class _Library:
    name: str
    text: str


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(data_path("templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["shquote"] = lambda value: shlex.quote(str(value))
    return env


def _libraries() -> list[_Library]:
    init = data_path("init")
    libs = []
    for name in INIT_LIBRARIES:
        text = _strip_directive((init / name).read_text())
        libs.append(_Library(name, text.strip("\n") + "\n"))
    return libs


def _strip_directive(text: str) -> str:
    """Drop a library's leading shellcheck directive and its "# (...)" explanation: they
    concern the file alone; /init has its own directive and is checked without exceptions."""
    lines = text.splitlines(keepends=True)
    if lines and lines[0].startswith("# shellcheck "):
        lines = lines[1:]
        if lines and lines[0].startswith("# ("):
            lines = lines[1:]
    return "".join(lines)


def render_init(settings: InitSettings) -> bytes:
    """The /init script for ``settings``: one self-contained busybox sh file."""
    template = _environment().get_template(INIT_TEMPLATE)
    text = template.render(
        version=settings.version,
        default_cmdline=settings.default_cmdline,
        options=OPTIONS,
        kernel_checks=init_checks(),
        libraries=_libraries(),
    )
    return text.encode()


def udhcpc_script() -> bytes:
    return (data_path("init") / UDHCPC_SCRIPT).read_bytes()


def add_init(manifest: Rootfs, settings: InitSettings) -> None:
    """Add /init (0755) and the udhcpc event script to ``manifest``."""
    manifest.add_file(INIT_PATH, render_init(settings), 0o755)
    manifest.add_file(UDHCPC_PATH, udhcpc_script(), 0o755)
