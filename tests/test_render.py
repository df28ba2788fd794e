"""Rendering /init: the template, the settings it takes, the manifest entries, shellcheck."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from b2c_builder.build.rootfs import Kind as EntryKind
from b2c_builder.build.rootfs import Rootfs
from b2c_builder.errors import ConfigError
from b2c_builder.guest.options import OPTIONS, ValueKind
from b2c_builder.guest.render import (
    INIT_LIBRARIES,
    InitSettings,
    _environment,
    add_init,
    render_init,
    udhcpc_script,
)
from b2c_builder.resources import data_path
from b2c_builder.run import run

HOSTILE = 'b2c.container="$(touch /tmp/pwned) `id` ; docker://x" foo=it\'s'


def test_data_dir_finds_the_checkout() -> None:
    assert (data_path("templates") / "init.sh.j2").is_file()
    init = data_path("init")
    for name in INIT_LIBRARIES:
        assert (init / name).is_file()


def test_render_is_deterministic_and_self_contained() -> None:
    settings = InitSettings(version="1.2.3", default_cmdline="b2c.pipefail")
    text = render_init(settings).decode()
    assert render_init(settings).decode() == text
    assert text.startswith("#!/bin/sh\n# shellcheck shell=dash\n")
    assert "B2C_VERSION=1.2.3\n" in text
    assert "B2C_DEFAULT_CMDLINE=b2c.pipefail\n" in text
    assert not [ln for ln in text.splitlines() if ln.lstrip().startswith((". ", "source "))]
    for name in INIT_LIBRARIES:
        assert f"# --- init/{name} " in text
    assert "{{.Config.OpenStdin}}" in text  # init/ is not rendered by jinja2
    assert text.count("# shellcheck shell=") == 1
    for opt in OPTIONS:
        assert f"        {opt.case_pattern})\n" in text
        if opt.kind is not ValueKind.unsupported:
            assert f"    {opt.var}=" in text


def test_no_eval_anywhere() -> None:
    text = render_init(InitSettings()).decode()
    assert not [line for line in text.splitlines() if line.strip().startswith("eval")]
    assert " eval " not in text


def test_default_cmdline_is_quoted_not_evaluated() -> None:
    settings = InitSettings(default_cmdline=HOSTILE)
    text = render_init(settings).decode()
    assert "B2C_DEFAULT_CMDLINE='b2c.container=\"$(touch /tmp/pwned)" in text


def test_invalid_default_cmdline_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"b2c\.poweroff_delay"):
        InitSettings(default_cmdline="b2c.poweroff_delay=soon")
    # /init would ignore a misspelt option baked into it: the build refuses it (hostlint).
    with pytest.raises(ConfigError, match=r"did you mean b2c\.pipefail\?"):
        InitSettings(default_cmdline="b2c.pipefial")


def test_template_is_strict() -> None:
    template = _environment().get_template("init.sh.j2")
    with pytest.raises(jinja2.UndefinedError):
        template.render(version="1", default_cmdline="", options=OPTIONS)


def test_add_init_adds_manifest_entries() -> None:
    manifest = Rootfs()
    add_init(manifest, InitSettings())
    init = manifest["/init"]
    assert init.kind is EntryKind.FILE and init.mode == 0o755
    assert init.data == render_init(InitSettings())
    script = manifest["/etc/udhcpc/default.script"]
    assert script.mode == 0o755 and script.data == udhcpc_script()
    assert script.data.startswith(b"#!/bin/sh\n")


def _shellcheck(*paths: Path) -> None:
    proc = run(["shellcheck", *map(str, paths)], reason="lint /init's shell", check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_shellcheck_rendered_init(tmp_path: Path) -> None:
    init = tmp_path / "init"
    init.write_bytes(render_init(InitSettings(default_cmdline=HOSTILE)))
    _shellcheck(init)


def test_shellcheck_init_libraries() -> None:
    init = data_path("init")
    _shellcheck(*sorted(init.glob("*.sh")), init / "udhcpc.script")


def test_data_dir_prefers_the_installed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from b2c_builder import resources
    from b2c_builder.errors import RootfsError

    package = tmp_path / "site-packages" / "b2c_builder"
    (package / "_data" / "templates").mkdir(parents=True)
    monkeypatch.setattr(resources, "_PACKAGE", package)
    assert data_path("templates") == package / "_data" / "templates"
    with pytest.raises(RootfsError, match="'init'"):
        data_path("init")
