"""/init's boot-time kernel checks (init/kernel.sh, generated from b2c_builder/guest/kconfig.py)
on a fake root: each missing piece ends the boot with one line naming the kernel option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from b2c_builder.guest import kconfig
from b2c_builder.guest.kconfig import ProbeKind, init_checks, lookup
from tests.shell import FILESYSTEMS, PODMAN, Result, Shell


def kernel_check(sh: Shell, cmdline: str = "") -> Result:
    sh.write("line", cmdline)
    return sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline || exit 99\n'
        'b2c_kernel_check; echo "rc=$?"; b2c_uptime_cs; echo "uptime=$B2C_UPTIME_CS"'
    )


def lacks(symbol: str) -> str:
    """The error line /init prints when the kernel lacks ``symbol``, from the table."""
    opt = lookup(symbol)
    assert opt.probe is not None
    return f"b2c: error: the kernel lacks {opt.name} ({opt.probe.label}): {opt.why}"


def without_fs(sh: Shell, name: str) -> None:
    lines = [line for line in FILESYSTEMS.splitlines() if line.split()[-1] != name]
    assert len(lines) == len(FILESYSTEMS.splitlines()) - 1
    sh.write("proc/filesystems", "\n".join(lines) + "\n")


def with_eth0(sh: Shell) -> Shell:
    sh.write("sys/class/net/eth0/operstate", "up\n")
    return sh


def test_a_complete_kernel_passes_silently(tmp_path: Path) -> None:
    result = kernel_check(
        with_eth0(Shell(tmp_path)), "b2c.filesystem=share,src=host,type=9p,opts=trans=virtio"
    )
    assert result.lines[-2:] == ["rc=0", "uptime=100"]
    assert result.lines[:-2] == []


@pytest.mark.parametrize(
    ("fs", "symbol"),
    [
        ("overlay", "OVERLAY_FS"),
        ("cgroup2", "CGROUPS"),
        ("devtmpfs", "DEVTMPFS"),
        ("devpts", "UNIX98_PTYS"),
        ("mqueue", "POSIX_MQUEUE"),
    ],
)
def test_missing_filesystem_names_the_option(tmp_path: Path, fs: str, symbol: str) -> None:
    sh = with_eth0(Shell(tmp_path))
    without_fs(sh, fs)
    result = kernel_check(sh)
    assert result.lines[-2] == "rc=1"
    assert result.errors() == [lacks(symbol)]
    assert result.lines[:-2] == [lacks(symbol)]  # one line, nothing else


def test_overlay_error_line_as_documented(tmp_path: Path) -> None:
    sh = with_eth0(Shell(tmp_path))
    without_fs(sh, "overlay")
    (line,) = kernel_check(sh).errors()
    assert line.startswith("b2c: error: the kernel lacks CONFIG_OVERLAY_FS (overlay filesystem): ")


@pytest.mark.parametrize(
    ("fs", "symbol"), [("9p", "9P_FS"), ("virtiofs", "VIRTIO_FS"), ("ext4", "EXT4_FS")]
)
def test_filesystems_checked_only_when_requested(tmp_path: Path, fs: str, symbol: str) -> None:
    sh = with_eth0(Shell(tmp_path))
    without_fs(sh, fs)
    assert kernel_check(sh, "b2c.filesystem=other,src=x,type=nfs").lines[-2] == "rc=0"
    result = kernel_check(sh, f"b2c.filesystem=other,src=x b2c.filesystem=share,src=host,type={fs}")
    assert result.lines[-2] == "rc=1"
    assert result.errors() == [lacks(symbol)]


def test_9p_virtio_transport(tmp_path: Path) -> None:
    sh = with_eth0(Shell(tmp_path))
    (sh.root / "sys/bus/virtio/drivers/9pnet_virtio").rmdir()
    assert kernel_check(sh).lines[-2] == "rc=0"
    result = kernel_check(sh, "b2c.filesystem=share,src=host,type=9p,opts=trans=virtio")
    assert result.errors() == [lacks("NET_9P_VIRTIO")]


@pytest.mark.parametrize(
    ("path", "symbol"), [("proc/net/unix", "UNIX"), ("proc/net/packet", "PACKET")]
)
def test_missing_socket_family(tmp_path: Path, path: str, symbol: str) -> None:
    sh = with_eth0(Shell(tmp_path))
    (sh.root / path).unlink()
    result = kernel_check(sh)
    assert result.lines[-2] == "rc=1"
    assert result.errors() == [lacks(symbol)]


def test_missing_controller_only_warns(tmp_path: Path) -> None:
    sh = with_eth0(Shell(tmp_path))
    sh.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory\n")
    result = kernel_check(sh)
    assert result.lines[-2] == "rc=0"
    opt = lookup("CGROUP_PIDS")
    assert result.warnings() == [
        f"b2c: warning: the kernel lacks {opt.name} (cgroup v2 pids controller): {opt.why}"
    ]


def test_cgroup2_not_mounted(tmp_path: Path) -> None:
    sh = with_eth0(Shell(tmp_path))
    (sh.root / "sys/fs/cgroup/cgroup.controllers").unlink()
    result = kernel_check(sh)
    assert result.lines[-2] == "rc=1"
    assert result.lines[:-2] == [
        "b2c: error: cgroup2 is not mounted on /sys/fs/cgroup: podman cannot create containers"
    ]


def test_no_network_interface_after_waiting(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write("sys/class/net/lo/operstate", "unknown\n")
    result = kernel_check(sh)
    assert result.lines[-2] == "rc=1"
    assert result.errors() == [lacks("VIRTIO_NET")]
    # It waited b2c's usual 10 s for the interface (the fake clock advances in sleep).
    assert 1000 <= int(result.lines[-1].split("=")[1]) - 100 <= 1050


def test_late_network_interface(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    # The interface appears during the third sleep.
    sh.stub(
        "sleep",
        'n=$(( $(cat "$B2C_ROOT/nsleep" 2>/dev/null || echo 0) + 1 ))\n'
        'echo "$n" >"$B2C_ROOT/nsleep"\n'
        '[ "$n" -lt 3 ] || mkdir -p "$B2C_ROOT/sys/class/net/enp0s3"',
    )
    result = kernel_check(sh)
    assert result.lines[-2] == "rc=0"
    assert len(result.called("sleep")) == 3


@pytest.mark.parametrize("cmdline", ["b2c.iface=eth7,dhcp", "ip=dhcp"])
def test_named_interfaces_are_left_to_the_network_setup(tmp_path: Path, cmdline: str) -> None:
    result = kernel_check(Shell(tmp_path), cmdline)
    assert result.lines[-2:] == ["rc=0", "uptime=100"]


def test_whole_boot_fails_before_podman(tmp_path: Path) -> None:
    sh = with_eth0(Shell(tmp_path))
    without_fs(sh, "overlay")
    sh.stub("podman", PODMAN)
    sh.write("proc/cmdline", 'b2c.container="docker://a 0"\n')
    result = sh.run("b2c_init")
    logs = [re.sub(r"^\[[0-9.]+\]: ", "", line) for line in result.lines]
    assert "Execution is over, pipeline status: 1" in logs
    assert "The pipeline failed because of: the kernel configuration" in logs
    assert result.called("podman") == [] and result.called("udhcpc") == []
    assert [e for e in result.errors() if "kernel" in e] == [lacks("OVERLAY_FS")]


def test_modules_are_loaded_before_the_check(tmp_path: Path) -> None:
    """overlay as a module: /proc/filesystems lists it only once modprobe has loaded it."""
    sh = with_eth0(Shell(tmp_path))
    without_fs(sh, "overlay")
    sh.write("lib/modules/6.1.0-test/b2c.modules", "virtio_net\noverlay\n")
    sh.stub(
        "modprobe",
        '[ "$1" != overlay ] || printf \'nodev\\toverlay\\n\' >>"$B2C_ROOT/proc/filesystems"',
    )
    sh.stub("podman", PODMAN)
    sh.write("proc/cmdline", 'b2c.container="docker://a 0"\n')
    result = sh.run("b2c_init")
    assert ["overlay"] in result.called("modprobe")
    assert [e for e in result.errors() if "kernel" in e] == []
    assert "Execution is over, pipeline status: 0" in result.out


@pytest.mark.parametrize("loads", [True, False])
def test_a_probe_loads_a_module_on_demand(tmp_path: Path, loads: bool) -> None:
    """overlay is loaded on demand (kmod.LoadWhen.demand): b2c.modules leaves it to the
    kernel, and the check modprobes it before it decides. A module that does not load (or
    load the filesystem) is still the one error line."""
    sh = with_eth0(Shell(tmp_path))
    without_fs(sh, "overlay")
    sh.write("lib/modules/6.1.0-test/b2c.modules", "virtio_net network\noverlay demand\n")
    effect = "printf 'nodev\\toverlay\\n' >>\"$B2C_ROOT/proc/filesystems\"" if loads else "false"
    sh.stub("modprobe", f'[ "$1 $2" != "-q overlay" ] || {effect}')
    sh.stub("podman", PODMAN)
    sh.write("proc/cmdline", 'b2c.container="docker://a 0"\n')
    result = sh.run("b2c_init")
    assert result.called("modprobe") == [["virtio_net"], ["-q", "overlay"]]
    errors = [e for e in result.errors() if "kernel" in e]
    assert errors == ([] if loads else [lacks("OVERLAY_FS")])
    status = 0 if loads else 1
    assert f"Execution is over, pipeline status: {status}" in result.out


def test_rendered_init_runs_every_check_of_the_table(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    text = sh.init.read_text()
    body = text.split("b2c_kernel_checks() {\n", 1)[1].split("\n}\n", 1)[0]
    calls = re.findall(
        r"b2c_kernel_probe (\w+) (\S+) (\w+) (\S+) (\S+) \\\n\s+(.+) \|\| return 1", body
    )
    assert len(calls) == len(init_checks()) > 0
    for call, expected in zip(calls, init_checks(), strict=True):
        assert call[0] == expected.severity and call[2] == str(expected.kind)
        assert call[4] == (expected.module or "''")
        assert expected.message.split(" (")[0] in call[5]
    # Every probe kind the table uses is one init/kernel.sh knows.
    kernel_sh = (Path(__file__).parent.parent / "init" / "kernel.sh").read_text()
    for kind in {c.kind for c in init_checks()}:
        assert f"        {kind})\n" in kernel_sh
    assert {c.kind for c in init_checks()} == set(ProbeKind)
    assert kconfig.lookup("VIRTIO_NET").probe is not None
