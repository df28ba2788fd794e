"""boot2container's options that a CI farm passes: b2c.swap=SIZE,swappiness=N and
b2c.swap=/dev/DEVICE, b2c.storage=, b2c.proxy=https=URL, and b2c.nbd= (not supported: warned)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from b2c_builder.guest.options import lint_cmdline
from tests.shell import Result, Shell


def run(sh: Shell, cmdline: str, code: str) -> Result:
    sh.write("line", cmdline)
    return sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline; echo "rc=$?"\n'
        + code
    )


def rel(result: Result, calls: list[list[str]]) -> list[list[str]]:
    return [[arg.replace(str(result.root), "") for arg in call] for call in calls]


def test_swap_file_with_swappiness(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write("proc/sys/vm/swappiness", "60\n")
    sh.write("storage/.keep", "")
    sh.stub("fallocate", ': >"$3"')
    result = run(sh, "b2c.swap=1G,swappiness=10", "B2C_CACHE_ON=1; b2c_setup_swap")
    assert rel(result, result.called("fallocate")) == [["-l", str(1 << 30), "/storage/swapfile"]]
    assert (sh.root / "proc/sys/vm/swappiness").read_text() == "10\n"
    assert "[1.00]: Set vm.swappiness to 10" in result.lines


def test_swap_device_gets_a_signature_only_if_it_has_none(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write("proc/sys/vm/swappiness", "60\n")
    sh.write("dev/vdb", b"\0" * 8192)
    page = bytearray(8192)
    page[4086:4096] = b"SWAPSPACE2"
    sh.write("dev/vdc", bytes(page))
    # No cache: a device needs none.
    code = "B2C_CACHE_ON=0; b2c_setup_swap; b2c_release_storage"
    result = run(sh, "b2c.swap=/dev/vdb,swappiness=0", code)
    assert rel(result, result.called("mkswap")) == [["/dev/vdb"]]
    assert rel(result, result.called("swapon")) == [["/dev/vdb"]]
    assert rel(result, result.called("swapoff")) == [["/dev/vdb"]]
    assert (sh.root / "dev/vdb").exists()  # released, never removed
    assert "[1.00]: Giving /dev/vdb a swap signature (it had none)" in result.lines
    assert (sh.root / "proc/sys/vm/swappiness").read_text() == "0\n"
    result = run(sh, "b2c.swap=/dev/vdc", code)
    assert result.called("mkswap") == []
    assert rel(result, result.called("swapon")) == [["/dev/vdc"]]
    assert result.warnings() == []


def test_a_missing_swap_device_is_a_warning(tmp_path: Path) -> None:
    result = run(Shell(tmp_path), "b2c.swap=/dev/vdz", "b2c_setup_swap")
    assert result.warnings() == [
        "b2c: warning: the swap device /dev/vdz did not appear within 10s: no swap"
    ]
    assert result.called("swapon") == []


def test_storage_options_reach_podman_through_storage_conf(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write(
        "etc/containers/storage.conf",
        '[storage]\ndriver = "overlay"\ngraphroot = "/var/lib/containers/storage"\n',
    )
    result = run(
        sh,
        "b2c.filesystem=images,src=imgs,type=virtiofs,opts=ro "
        'b2c.storage="additionalimagestores=/mnt/local|images,overlay.mountopt=nodev"',
        'b2c_setup_storage_conf; echo "rc=$? conf=$CONTAINERS_STORAGE_CONF"',
    )
    assert result.lines[-1] == "rc=0 conf=/run/b2c/storage.conf"
    assert rel(result, result.called("mount")) == [
        ["-t", "virtiofs", "-o", "ro", "imgs", "/run/b2c/filesystems/images"]
    ]
    conf = tomllib.loads((sh.root / "run/b2c/storage.conf").read_text())
    assert conf["storage"]["driver"] == "overlay"
    assert conf["storage"]["options"]["additionalimagestores"] == [
        "/mnt/local",
        "/run/b2c/filesystems/images",
    ]
    assert conf["storage"]["options"]["overlay"] == {"mountopt": "nodev"}


def test_storage_on_a_missing_filesystem_is_an_error(tmp_path: Path) -> None:
    result = run(
        Shell(tmp_path),
        "b2c.storage=additionalimagestores=nowhere",
        'b2c_setup_storage_conf; echo "rc=$?"',
    )
    assert result.lines[-1] == "rc=1"
    assert result.errors() == ["b2c: error: there is no b2c.filesystem named 'nowhere'"]


ENV = (
    'printf "%s|%s|%s|%s\\n" "${http_proxy:-}" "${HTTP_PROXY:-}" "${https_proxy:-}" '
    '"${HTTPS_PROXY:-}"'
)


def test_proxy_in_its_per_scheme_form(tmp_path: Path) -> None:
    result = run(Shell(tmp_path), "b2c.proxy=https=http://p:3128", f"b2c_apply_proxy; {ENV}")
    assert result.lines[-1] == "||http://p:3128|http://p:3128"
    assert "[1.00]: Using the proxies http: none, https: http://p:3128" in result.lines
    result = run(
        Shell(tmp_path / "2"),
        "b2c.proxy=http=http://p:3128,https=http://u:pw@q:3129",
        f"b2c_apply_proxy; {ENV}",
    )
    assert result.lines[-1] == "http://p:3128|http://p:3128|http://u:pw@q:3129|http://u:pw@q:3129"
    assert "[1.00]: Using the proxies http: http://p:3128, https: http://***@q:3129" in (
        result.lines
    )


def test_proxy_as_one_url_serves_both_schemes(tmp_path: Path) -> None:
    result = run(Shell(tmp_path), "b2c.proxy=http://p:3128", f"b2c_apply_proxy; {ENV}")
    assert result.lines[-1] == "|".join(["http://p:3128"] * 4)
    assert "[1.00]: Using the HTTP(S) proxy http://p:3128" in result.lines


def test_nbd_is_not_supported_and_says_why(tmp_path: Path) -> None:
    line = "b2c.nbd=/dev/nbd0,host=10.0.0.1,port=10809,connections=4"
    result = run(Shell(tmp_path), line, "")
    assert result.lines[-1] == "rc=0"
    (warning,) = result.warnings()
    assert warning.startswith("b2c: warning: b2c.nbd: not supported by b2c-builder (ignored)")
    assert "nbd-client" in warning and "20 MiB" in warning
    (problem,) = lint_cmdline(line)
    assert (problem.severity, problem.option) == ("warning", "b2c.nbd")
    assert warning == f"b2c: warning: b2c.nbd: {problem.message}"
