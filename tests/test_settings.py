"""The settings tables of build and run: the config classes, the typer options and the README
tables are all derived from them, and the command line maps onto the config objects."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from b2c_builder import cli, settings
from b2c_builder.boot import launch, qemu
from b2c_builder.config import (
    ARCHES,
    BUILD_SETTINGS,
    DEFAULT_MAX_SIZE,
    RELEASE_SETTINGS,
    RUN_SETTINGS,
    Accel,
    Arch,
    BuildConfig,
    Compression,
    Disk,
    PodmanVariant,
    ReleaseConfig,
    Setting,
    SettingsTable,
    format_size,
    parse_size,
)
from tests.conftest import ROOT

# --- the config classes ---------------------------------------------------------------------


def field_default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory
    return field.default


def setting_default(setting: Setting) -> Any:
    return setting.factory if setting.factory is not None else setting.config_default


@pytest.mark.parametrize(
    ("cls", "table", "own"),
    [
        (BuildConfig, BUILD_SETTINGS, set()),
        (ReleaseConfig, RELEASE_SETTINGS, set()),
        (launch.RunRequest, RUN_SETTINGS, {"b2c"}),  # the b2c flags come from options.py
    ],
    ids=["BuildConfig", "ReleaseConfig", "RunRequest"],
)
def test_one_field_per_setting_with_its_default(
    cls: type[Any], table: SettingsTable, own: set[str]
) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert sorted(set(fields) - own) == sorted(s.dest for s in table)
    for setting in table:
        assert field_default(fields[setting.dest]) == setting_default(setting), setting.dest


def test_run_config_shares_the_run_defaults() -> None:
    """qemu.RunConfig's option fields default as run's settings do; its own fields (the
    resolved kernel, initrds, 9p shares, the console nonce) are not options."""
    fields = {f.name: f for f in dataclasses.fields(qemu.RunConfig)}
    shared = set(fields) - {"kernel", "initrds", "shares", "nonce"}
    assert shared <= {s.dest for s in RUN_SETTINGS}
    for name in shared:
        assert field_default(fields[name]) == setting_default(RUN_SETTINGS[name]), name


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` has the type ``hint`` (classes, X | None, tuple[X, ...])."""
    if isinstance(hint, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is tuple:
        (item, _) = typing.get_args(hint)
        return isinstance(value, tuple) and all(_accepts(item, v) for v in value)
    return isinstance(value, typing.get_origin(hint) or hint)


@pytest.mark.parametrize("cls", [BuildConfig, ReleaseConfig, launch.RunRequest, qemu.RunConfig])
def test_defaults_have_the_field_types(cls: type[Any]) -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default = field_default(field)
        value = default() if callable(default) else default
        assert _accepts(hints[field.name], value), (field.name, value)


def test_a_config_without_arguments_has_the_table_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    cfg = BuildConfig()
    assert (cfg.suite, cfg.arch, cfg.compression) == ("trixie", Arch.amd64, Compression.zstd)
    assert (cfg.max_size, cfg.extra_packages) == (DEFAULT_MAX_SIZE, ())
    assert cfg.cache_dir == tmp_path / "b2c-builder"
    assert cfg.source_date_epoch == 1234
    request = launch.RunRequest()
    assert (request.memory, request.cpus, request.timeout) == ("2G", 1, 600.0)
    assert (request.accel, request.dry_run, request.disks) == (Accel.auto, False, ())


# --- the command line ------------------------------------------------------------------------


def cli_params(command: str) -> dict[str, Any]:
    """The typer (click) parameters of ``command``, by Python name."""
    group = typer.main.get_command(cli.app)
    return {p.name: p for p in group.commands[command].params}  # type: ignore[attr-defined]


@pytest.mark.parametrize("table", settings.TABLES, ids=lambda t: t.command)
def test_one_cli_option_per_setting(table: SettingsTable) -> None:
    params = cli_params(table.command)
    for setting in table:
        param = params[setting.param]
        flags = setting.flags.split("/")
        if setting.argument:
            assert (param.param_type_name, param.nargs) == ("argument", -1)
            continue
        assert [*param.opts, *param.secondary_opts] == flags, setting.dest
        assert param.multiple is setting.repeatable, setting.dest
        assert param.default == setting.cli_default, setting.dest
        assert setting.help in param.help, setting.dest


def test_every_flag_of_before_is_kept() -> None:
    """The flags the typer signatures had before the tables (and their defaults)."""
    build = cli_params("build")
    assert build["max_size"].show_default == "20MiB"
    assert build["verify_signature"].secondary_opts == ["--no-verify-signature"]
    run = cli_params("run")
    flags = {opt for p in run.values() if p.param_type_name == "option" for opt in p.opts}
    before = (
        *("--kernel", "--initrd", "--modules-dir", "--image", "--share", "--junit"),
        *("--releases", "--append", "--arch", "--accel", "--memory", "--cpus", "--disk"),
        *("--timeout", "--serial-log", "--qemu-arg", "--cache-dir", "--dry-run", "--pxe"),
        *("--bootfile", "--cdrom", "--firmware", "--container", "--pipefail"),
    )
    assert set(before) <= flags, set(before) - flags


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The BuildConfig or RunRequest the CLI hands over, instead of building or booting."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    seen: dict[str, Any] = {}

    def fake_build(cfg: BuildConfig) -> Any:
        seen["config"] = cfg
        return types.SimpleNamespace(image=types.SimpleNamespace(path=cfg.output))

    def fake_launch(request: launch.RunRequest) -> int:
        seen["config"] = request
        return 7

    def fake_release(cfg: ReleaseConfig) -> Any:
        seen["config"] = cfg
        return types.SimpleNamespace(folder=cfg.output / "version")

    monkeypatch.setattr("b2c_builder.build.pipeline.build", fake_build)
    monkeypatch.setattr("b2c_builder.build.release.make_release", fake_release)
    monkeypatch.setattr(launch, "launch", fake_launch)
    return seen


def invoke(*args: str) -> typer.testing.Result:
    return CliRunner().invoke(cli.app, list(args), catch_exceptions=False)


def test_build_without_options_is_the_default_config(captured: dict[str, Any]) -> None:
    result = invoke("build")
    assert result.exit_code == 0, result.output
    assert captured["config"] == BuildConfig()


def test_build_options_reach_the_config(captured: dict[str, Any], tmp_path: Path) -> None:
    result = invoke(
        "build",
        *("--suite", "bookworm", "--arch", "arm64", "--compression", "xz"),
        *("--output", "out", "--mirror", "http://127.0.0.1:9/debian"),
        *("--extra-package", "strace", "--extra-package", "gdb", "--max-size", "3MiB"),
        *("--source-date-epoch", "1000", "--module", "e1000", "--default-cmdline", "b2c.pipefail"),
        "--no-verify-signature",
    )
    assert result.exit_code == 0, result.output
    assert captured["config"] == BuildConfig(
        suite="bookworm",
        arch=Arch.arm64,
        compression=Compression.xz,
        output=Path("out"),
        mirror="http://127.0.0.1:9/debian",
        verify_signature=False,
        cache_dir=tmp_path / "cache/b2c-builder",
        extra_packages=("strace", "gdb"),
        max_size=3 * 2**20,
        source_date_epoch=1000,
        modules=("e1000",),
        default_cmdline="b2c.pipefail",
    )


def test_release_options_reach_the_config(captured: dict[str, Any], tmp_path: Path) -> None:
    result = invoke("release")
    assert result.exit_code == 0, result.output
    assert captured["config"] == ReleaseConfig()
    assert captured["config"].targets() == tuple(ARCHES)  # every row of the table
    last = list(ARCHES)[-1]
    result = invoke(
        "release",
        *("--arch", str(last), "--arch", "amd64", "--output", "out", "--podman", "trimmed"),
        *("--suite", "bookworm", "--source-date-epoch", "1000", "--no-verify-signature"),
    )
    assert result.exit_code == 0, result.output
    assert result.output == "out/version\n"
    cfg = captured["config"]
    assert cfg == ReleaseConfig(
        arches=(last, Arch.amd64),
        output=Path("out"),
        suite="bookworm",
        source_date_epoch=1000,
        verify_signature=False,
        podman=PodmanVariant.trimmed,
        cache_dir=tmp_path / "cache/b2c-builder",
    )
    assert cfg.targets() == tuple(a for a in ARCHES if a in (last, Arch.amd64))  # table order
    build = cfg.build_config(last, tmp_path / "o")
    assert (build.arch, build.kernel_package, build.suite) == (
        last,
        f"linux-image-{last}",
        "bookworm",
    )
    assert (build.podman, build.source_date_epoch) == (PodmanVariant.trimmed, 1000)


def test_run_options_reach_the_request(captured: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "disk.img").write_bytes(b"QFI\xfb qcow2")
    result = invoke(
        "run",
        *("--kernel", "k", "--initrd", "a", "--initrd", "b", "--image", "oci:x"),
        *("--accel", "tcg", "--memory", "1G", "--cpus", "2", "--timeout", "30"),
        *("--disk", "disk.img", "--qemu-arg", "-rtc", "--dry-run", "--pipefail"),
        *("--append", "console=ttyS0 quiet", "--append", "b2c.ntp_peer=none"),
        *("--", "sh", "-c", "exit 3"),
    )
    assert result.exit_code == 7, result.output
    assert captured["config"] == launch.RunRequest(
        kernel=Path("k"),
        initrds=(Path("a"), Path("b")),
        images=("oci:x",),
        append="console=ttyS0 quiet b2c.ntp_peer=none",  # each --append adds its words
        accel=Accel.tcg,
        memory="1G",
        cpus=2,
        timeout=30.0,
        disks=(Disk(Path("disk.img"), "qcow2"),),
        qemu_args=("-rtc",),
        cache_dir=tmp_path / "cache/b2c-builder",
        dry_run=True,
        command=("sh", "-c", "exit 3"),
        b2c={**{name: None for name in captured["config"].b2c}, "b2c.pipefail": True},
    )


def test_a_value_that_does_not_parse_is_a_clear_error(captured: dict[str, Any]) -> None:
    result = invoke("build", "--max-size", "lots")
    assert result.exit_code == 2
    assert "cannot read 'lots' as a size" in result.output
    assert "config" not in captured


# --- the README ------------------------------------------------------------------------------


@pytest.mark.parametrize("table", settings.TABLES, ids=lambda t: t.command)
def test_readme_option_tables_are_up_to_date(table: SettingsTable) -> None:
    text = (ROOT / "README.md").read_text()
    assert settings.readme_section(text, table) == settings.markdown_table(table), (
        "README.md's option tables are stale: run python -m b2c_builder.settings --write-readme"
    )


def test_update_readme_replaces_only_the_sections(tmp_path: Path) -> None:
    build_start, build_end = settings.markers(BUILD_SETTINGS)
    run_start, run_end = settings.markers(RUN_SETTINGS)
    release_start, release_end = settings.markers(RELEASE_SETTINGS)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# x\n{build_start}\nOLD-TABLE\n{build_end}\nmid\n{release_start}{release_end}\n"
        f"{run_start}{run_end}\ntail\n"
    )
    assert settings.main(["--write-readme", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"# x\n{build_start}\n| option | default | meaning |\n")
    assert "OLD-TABLE" not in text and "\nmid\n" in text and text.endswith(f"{run_end}\ntail\n")
    assert "| `--max-size SIZE` | `20MiB` |" in text
    assert "| `--verify-signature` / `--no-verify-signature` | on |" in text
    assert "| `-- COMMAND...` |" in text
    release_table = text[text.index(release_start) : text.index(release_end)]
    assert "| `--output DIR` | `releases` | The release goes to DIR/\\<version>/" in release_table
    assert "--kernel-package" not in release_table  # each architecture's own kernel
    assert not settings.write_readme(readme), "a second run changes nothing"


def test_a_readme_without_markers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="settings:build:start"):
        settings.update_readme("# no tables\n")


def test_cells_escape_markdown() -> None:
    table = SettingsTable(
        "x",
        [
            Setting(
                "kernel", Path, "a | b <c> *d*", shown_default="the newest linux-*", metavar="FILE"
            )
        ],
    )
    row = settings.markdown_table(table).splitlines()[2]
    assert row == "| `--kernel FILE` | the newest linux-\\* | a \\| b \\<c> \\*d\\* |"


# --- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [(DEFAULT_MAX_SIZE, "20MiB"), (512 * 1024, "512KiB"), (3 * 2**30, "3GiB"), (1000, "1000")],
)
def test_format_size_reads_back(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size
