"""The README's tables of the ``build`` and ``run`` options, generated from the settings
tables (config.BUILD_SETTINGS, config.RUN_SETTINGS), which also give the typer options
(cli.py) and the config classes' defaults.

    python -m b2c_builder.settings --write-readme   # refresh README.md's option tables
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

from b2c_builder.config import (
    BUILD_SETTINGS,
    RELEASE_SETTINGS,
    RUN_SETTINGS,
    Setting,
    SettingsTable,
)

TABLES: tuple[SettingsTable, ...] = (BUILD_SETTINGS, RELEASE_SETTINGS, RUN_SETTINGS)


def markers(table: SettingsTable) -> tuple[str, str]:
    """The comments around ``table``'s section of the README."""
    return f"<!-- settings:{table.command}:start -->", f"<!-- settings:{table.command}:end -->"


def _cell(text: str) -> str:
    """Text in a markdown table cell: ``|`` would end the cell, ``<`` start an HTML tag,
    ``*`` emphasis."""
    for char in "|<*":
        text = text.replace(char, "\\" + char)
    return text.replace("\n", " ")


def _option(setting: Setting) -> str:
    if setting.argument:
        return f"`-- {setting.metavar}...`"
    flags = " / ".join(f"`{flag}`" for flag in setting.flags.split("/"))
    return f"`{setting.flags} {setting.metavar}`" if setting.metavar else flags


def _default(setting: Setting) -> str:
    """A value as code (``20MiB``); on/off, a default in words, or nothing as text."""
    shown = setting.shown
    if setting.switch or not shown or len(shown.split()) > 1:
        return _cell(shown)
    return f"`{shown}`"


def _meaning(setting: Setting) -> str:
    """The description, with the choices of an enum (--help shows them by itself)."""
    text = _cell(setting.description)
    if issubclass(setting.value_type, Enum):
        text += " One of " + ", ".join(f"`{choice.value}`" for choice in setting.value_type) + "."
    return text


def markdown_table(table: SettingsTable) -> str:
    """The README table of ``table``'s options: flag (and value), default, meaning."""
    lines = ["| option | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| {_option(s)} | {_default(s)} | {_meaning(s)} |" for s in table]
    return "\n".join(lines) + "\n"


def _section(text: str, table: SettingsTable) -> tuple[int, int]:
    """Where ``table``'s section starts (after its start marker) and ends (at its end
    marker) in ``text``. Raises ValueError when the README lacks the markers."""
    start, end = markers(table)
    first, last = text.find(start), text.find(end)
    if first < 0 or last < first:
        raise ValueError(f"README has no {start} ... {end} section")
    return first + len(start), last


def readme_section(text: str, table: SettingsTable) -> str:
    """The current contents of ``table``'s section (without the markers)."""
    first, last = _section(text, table)
    return text[first:last].removeprefix("\n")


def update_readme(text: str) -> str:
    """``text`` with each table's section replaced by its markdown_table(); the rest kept."""
    for table in TABLES:
        first, last = _section(text, table)
        text = text[:first] + "\n" + markdown_table(table) + text[last:]
    return text


def write_readme(path: Path) -> bool:
    """Refresh the option tables in ``path``; True when the file changed."""
    old = path.read_text()
    new = update_readme(old)
    if new != old:
        path.write_text(new)
    return new != old


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m b2c_builder.settings", description=__doc__)
    parser.add_argument("--write-readme", action="store_true", required=True)
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args(argv)
    changed = write_readme(args.readme)
    print(f"{args.readme}: {'updated' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
