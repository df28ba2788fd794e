"""Whole boots of /init under stubs: the console contract, failures, the final action."""

from __future__ import annotations

import functools
import http.server
import re
import socketserver
import threading
from pathlib import Path

import pytest

from tests.shell import PODMAN, Result, Shell, real_world_lines

SECTION = re.compile(
    r"\x1b\[0Ksection_(start|end):(\d+):([a-z0-9_]+)(\[collapsed=true\])?\r\x1b\[0K"
)


def boot(sh: Shell, cmdline: str, *, net: bool = True) -> Result:
    sh.stub("podman", PODMAN)
    if net:
        sh.write("sys/class/net/eth0/operstate", "up\n")
    sh.write("proc/cmdline", cmdline.encode("latin-1") + b"\n")
    return sh.run("b2c_init")


def log_lines(result: Result) -> list[str]:
    return [re.sub(r"^\[[0-9.]+\]: ", "", line) for line in result.lines if line.startswith("[")]


def assert_console_contract(result: Result, status: int, action: list[str]) -> None:
    logs = log_lines(result)
    assert logs.count(f"Execution is over, pipeline status: {status}") == 1
    assert sum("Execution is over" in line for line in result.lines) == 1
    assert "It's now safe to turn off your computer" in logs
    # The storage is released before the final action, which follows the last line.
    names = [call[0] for call in result.calls]
    assert action[0] in names
    last_umount = max((i for i, n in enumerate(names) if n == "umount"), default=-1)
    assert last_umount < names.index(action[0])
    assert result.calls[names.index(action[0])][1:] == action[1:]
    safe = result.lines.index(
        next(
            line
            for line in result.lines
            if line.endswith("It's now safe to turn off your computer")
        )
    )
    assert all(not line.startswith("[") for line in result.lines[safe + 1 :])
    # GitLab sections are balanced and never nested.
    open_section = None
    for kind, _, name, _ in SECTION.findall(result.out):
        if kind == "start":
            assert open_section is None, name
            open_section = name
        else:
            assert open_section == name
            open_section = None
    assert open_section is None


def test_successful_boot(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    result = boot(
        sh, 'console=ttyS0 b2c.container="docker://a 0" b2c.hostname=dut-01 b2c.ntp_peer=10.0.0.1'
    )
    assert result.status == 0
    assert_console_contract(result, 0, ["poweroff", "-f"])
    # The API filesystems: two mount -a passes over /etc/fstab (the second skips what the
    # first mounted), in this order.
    fstab = sh.root / "etc/fstab"
    assert result.called("mount")[:2] == [["-a", "-T", str(fstab)]] * 2
    mounts = [line.split() for line in fstab.read_text().replace(str(sh.root), "").splitlines()]
    assert [(fields[2], fields[1]) for fields in mounts] == [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/run"),
        ("tmpfs", "/tmp"),
        ("devpts", "/dev/pts"),
        ("tmpfs", "/dev/shm"),
        ("cgroup2", "/sys/fs/cgroup"),
    ]
    assert mounts[5][3] == "gid=5,mode=0620,ptmxmode=0666"
    assert not [line for line in result.errors() if "could not mount" in line]
    assert result.called("stty")[0][-4:] == ["cols", "120", "rows", "40"]
    assert (sh.root / "var/tmp").is_dir()
    assert (sh.root / "etc/mtab").readlink() == Path("/proc/self/mounts")
    assert (sh.root / "etc/hostname").read_text() == "dut-01\n"
    assert "127.0.1.1\tdut-01" in (sh.root / "etc/hosts").read_text()
    names = [c[0] for c in result.calls]
    assert names.index("udhcpc") < names.index("rdate") < names.index("podman")
    assert result.errors() == [
        "b2c: error: b2c.shutdown_cmd (poweroff -f) returned: forcing a power off"
    ]
    assert (sh.root / "proc/sysrq-trigger").read_text() == "o\n"


def test_mkdirs_forks_one_mkdir_and_only_for_missing_folders(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("mkdir", 'command mkdir "$@"')
    result = sh.run(
        'b2c_mkdirs "$B2C_ROOT/proc" "$B2C_ROOT/etc"\n'
        'b2c_mkdirs "$B2C_ROOT/etc" "$B2C_ROOT/a b/c" "$B2C_ROOT/d"'
    )
    assert result.status == 0, result.out
    assert [call[1:] for call in result.called("mkdir")] == [
        [f"{sh.root}/etc", f"{sh.root}/a b/c", f"{sh.root}/d"]
    ]
    assert (sh.root / "a b/c").is_dir() and (sh.root / "d").is_dir()


def test_a_boot_forks_no_mkdir_for_the_image_folders(tmp_path: Path) -> None:
    """mount_early's folders are in the image (image.new_image) but for /dev's and /run's, on
    the file systems mounted there: one mkdir each, and nothing chmods /var/tmp again."""
    sh = Shell(tmp_path)
    for folder in ("tmp", "root"):
        (sh.root / folder).mkdir()
    (sh.root / "var/tmp").chmod(0o1777)
    sh.stub("mkdir", 'command mkdir "$@"')
    sh.stub("chmod", 'command chmod "$@"')
    result = sh.run("b2c_mount_early")
    assert result.status == 0, result.out
    made = [call[-1].replace(str(sh.root), "") for call in result.called("mkdir")]
    assert made == ["/sys/fs/cgroup", "/run/b2c/crun"], made
    assert not result.called("chmod")


def test_the_kernel_gets_modprobe_once_init_runs(tmp_path: Path) -> None:
    """The image has no /sbin/modprobe (the kernel's default path; image.SBIN_APPLETS), so
    /init points /proc/sys/kernel/modprobe at busybox's, before its own first modprobe."""
    sh = Shell(tmp_path)
    sh.write("proc/sys/kernel/modprobe", "/sbin/modprobe\n")
    sh.write("lib/modules/6.1.0-test/b2c.modules", "virtio_net network\n")
    sh.write("proc/sys/kernel/osrelease", "6.1.0-test\n")
    sh.stub("modprobe", 'cat "$B2C_ROOT/proc/sys/kernel/modprobe" >>"$B2C_ROOT/seen"')
    result = boot(sh, 'b2c.container="docker://a 0"')
    assert result.status == 0, result.out
    assert (sh.root / "proc/sys/kernel/modprobe").read_text() == "/usr/bin/modprobe\n"
    seen = (sh.root / "seen").read_text().splitlines()
    assert seen and set(seen) == {"/usr/bin/modprobe"}
    assert not [line for line in result.lines if "kernel/modprobe" in line]


def test_a_kernel_without_modules_support_is_left_alone(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    result = boot(sh, 'b2c.container="docker://a 0"')
    assert result.status == 0, result.out
    assert not (sh.root / "proc/sys/kernel/modprobe").exists()
    assert not [line for line in result.lines if "kernel/modprobe" in line]


def test_a_modprobe_path_that_cannot_be_set_is_one_warning(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    (sh.root / "proc/sys/kernel/modprobe").mkdir(parents=True)
    result = boot(sh, 'b2c.container="docker://a 0"')
    assert result.status == 0, result.out
    assert [line for line in result.lines if "kernel/modprobe" in line] == [
        "b2c: warning: could not set /proc/sys/kernel/modprobe: the kernel cannot load modules"
        " on demand"
    ]


def test_crun_is_bound_read_only_before_the_first_podman(tmp_path: Path) -> None:
    result = boot(Shell(tmp_path), 'b2c.container="docker://a 0"')
    names = [call[0] if call[:2] != ["mount", "--bind"] else "bind" for call in result.calls]
    assert names.index("bind") < names.index("podman"), names
    assert not [w for w in result.warnings() if "crun" in w], result.out


def test_failing_container_status(tmp_path: Path) -> None:
    result = boot(Shell(tmp_path), 'b2c.container="docker://a 3" b2c.container="docker://b 0"')
    assert_console_contract(result, 3, ["poweroff", "-f"])
    assert "The pipeline failed because of: docker://a 3" in log_lines(result)


def test_malformed_command_line_runs_nothing(tmp_path: Path) -> None:
    result = boot(Shell(tmp_path), 'b2c.container="docker://a 0" b2c.poweroff_delay=abc')
    assert_console_contract(result, 2, ["poweroff", "-f"])
    assert result.called("podman") == [] and result.called("udhcpc") == []
    assert result.errors()[:2] == [
        "b2c: error: b2c.poweroff_delay: must be a whole number of seconds, not 'abc'",
        "b2c: error: the kernel command line is invalid: nothing was run",
    ]


@pytest.mark.parametrize(("code", "action"), [(129, ["reboot", "-f"]), (130, ["poweroff", "-f"])])
def test_container_asking_for_reboot_or_poweroff(
    tmp_path: Path, code: int, action: list[str]
) -> None:
    result = boot(Shell(tmp_path), f'b2c.container="docker://a {code}" b2c.poweroff_delay=0')
    assert_console_contract(result, code, action)
    assert ("Rebooting the computer" in log_lines(result)) == (code == 129)


def test_poweroff_delay_and_custom_commands(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("my_off", "return 0")
    result = boot(
        sh,
        'b2c.container="docker://a 0" b2c.poweroff_delay=5 b2c.shutdown_cmd="my_off --now \'a b\'"',
    )
    assert_console_contract(result, 0, ["my_off", "--now", "a b"])
    names = [c[0] for c in result.calls]
    assert result.calls[names.index("my_off") - 1] == ["sleep", "5"]
    result = boot(
        Shell(tmp_path / "r"), 'b2c.container="docker://a 129" b2c.reboot_cmd="my_reboot x"'
    )
    assert ["my_reboot", "x"] not in result.calls  # not a command: the shell says so, then...
    assert ["reboot", "-f"] in result.calls  # ... the forced fallback
    assert (tmp_path / "r/root/proc/sysrq-trigger").read_text() == "b\n"


def test_network_failure_ends_the_boot(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("udhcpc", "return 1")
    result = boot(sh, 'b2c.container="docker://a 0"')
    assert_console_contract(result, 1, ["poweroff", "-f"])
    assert not [c for c in result.called("podman") if c[0] in ("run", "create")]


def test_extra_args_url(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("wget", 'printf \'b2c.container="docker://extra 4"\\nb2c.iface=eth9\\n\' >"$3"')
    result = boot(sh, 'b2c.container="docker://a 0" b2c.extra_args_url=http://10.0.2.2:8000/extra')
    assert_console_contract(result, 4, ["poweroff", "-f"])
    assert result.called("wget")[0][-1] == "http://10.0.2.2:8000/extra"
    # Run by podman run, in order: their commands end with their status.
    assert [c[-1] for c in result.called("podman") if c[0] == "run"] == ["0", "4"]
    assert result.warnings() == [
        "b2c: warning: b2c.iface in the extra command line comes too late to take effect (ignored)"
    ]


@pytest.mark.parametrize(
    ("wget", "status", "message"),
    [
        ("return 1", 1, "b2c: error: could not download the extra command line from http://x/e"),
        (
            'echo b2c.swap=lots >"$3"',
            2,
            "b2c: error: the extra command line from http://x/e is invalid",
        ),
    ],
)
def test_extra_args_failures(tmp_path: Path, wget: str, status: int, message: str) -> None:
    sh = Shell(tmp_path)
    sh.stub("wget", wget)
    result = boot(sh, 'b2c.container="docker://a 0" b2c.extra_args_url=http://x/e')
    assert_console_contract(result, status, ["poweroff", "-f"])
    assert message in result.errors()
    assert not [c for c in result.called("podman") if c[0] in ("run", "create")]


def test_cache_is_released_before_the_end(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write("sys/block/vda/removable", "0\n")
    sh.write("sys/block/vda/size", "100\n")
    sh.write("sys/block/vda/device/type", "0\n")
    sh.write("dev/vda", b"\0" * 2048)
    sh.stub(
        "sfdisk",
        'cat >/dev/null; : >"$B2C_ROOT/dev/vda1"; mkdir -p "$B2C_ROOT/sys/class/block/vda1"\n'
        ': >"$B2C_ROOT/sys/class/block/vda1/partition"',
    )
    result = boot(sh, 'b2c.cache_device=auto b2c.container="docker://a 0"')
    assert_console_contract(result, 0, ["poweroff", "-f"])
    umounts = [c[0].replace(str(sh.root), "") for c in result.called("umount")]
    assert umounts == ["/var/tmp", "/var/lib/containers", "/storage"]
    logs = log_lines(result)
    assert logs.index("Unmounted /storage") < logs.index("It's now safe to turn off your computer")


def test_a_crash_in_the_main_flow_still_shuts_down(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("cp", "exit 9")  # kills the subshell running b2c_main (b2c_crun_read_only)
    result = boot(sh, 'b2c.container="docker://a 0"')
    assert_console_contract(result, 1, ["poweroff", "-f"])
    assert "The pipeline failed because of: the init runtime" in log_lines(result)


def test_nothing_to_run(tmp_path: Path) -> None:
    result = boot(Shell(tmp_path), "console=ttyS0")
    assert_console_contract(result, 0, ["poweroff", "-f"])
    assert "b2c: warning: no b2c.container was given: nothing to run" in result.warnings()


@pytest.mark.parametrize("line", real_world_lines("hostile.txt"))
def test_hostile_lines_execute_nothing(tmp_path: Path, line: str) -> None:
    sh = Shell(tmp_path)
    canary = tmp_path / "canary"
    result = boot(sh, line.replace("CANARY", str(canary)))
    assert not canary.exists()
    assert result.errors() == [] or all("returned: forcing" in e for e in result.errors())
    assert "Execution is over, pipeline status: 0" in log_lines(result)
    creates = [c for c in result.called("podman") if c[0] in ("run", "create")]
    assert all(
        "$(touch" in " ".join(c) or "`touch" in " ".join(c) or "'touch" in " ".join(c)
        for c in creates
    )


def test_hostile_container_reaches_podman_literally(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    canary = tmp_path / "canary"
    result = boot(
        sh, f'b2c.container="$(touch {canary}) docker://x `touch {canary}` ; touch {canary}"'
    )
    assert not canary.exists()
    create = next(c for c in result.called("podman") if c[0] in ("run", "create"))
    assert create[-8:] == [
        "$(touch",
        f"{canary})",
        "docker://x",
        "`touch",
        f"{canary}`",
        ";",
        "touch",
        str(canary),
    ]


def test_extra_args_over_real_http(tmp_path: Path) -> None:
    """The real busybox wget and timeout fetch the extra command line from 127.0.0.1."""
    served = tmp_path / "www"
    served.mkdir()
    (served / "extra").write_text('b2c.container="docker://served 5"\n')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            sh = Shell(tmp_path)
            del sh.stubs["wget"], sh.stubs["timeout"]
            url = f"http://127.0.0.1:{server.server_address[1]}/extra"
            result = boot(sh, f'b2c.container="docker://a 0" b2c.extra_args_url={url}')
        finally:
            server.shutdown()
    assert_console_contract(result, 5, ["poweroff", "-f"])
    assert f"Parsed the extra command line from {url}" in log_lines(result)


@pytest.mark.parametrize(
    ("meminfo", "cmdline_env", "expected"),
    [
        ("MemTotal:        1014840 kB\n", "", "GOGC=off GOMEMLIMIT=61MiB"),  # 1/16 of the RAM
        ("MemFree: 1 kB\nMemTotal: 67108864 kB\n", "", "GOGC=off GOMEMLIMIT=128MiB"),  # capped
        ("MemTotal:         262144 kB\n", "", ""),  # under 512 MiB: Go's defaults
        ("MemFree: 1 kB\n", "", ""),  # no MemTotal line
        (None, "", ""),  # no /proc/meminfo
        ("MemTotal:        1014840 kB\n", "GOGC=100", "GOGC=100"),  # the command line's
        ("MemTotal:        1014840 kB\n", "GOMEMLIMIT=1GiB", "GOMEMLIMIT=1GiB"),
    ],
)
def test_podman_collects_garbage_near_a_memory_limit(
    tmp_path: Path, meminfo: str | None, cmdline_env: str, expected: str
) -> None:
    sh = Shell(tmp_path)
    if meminfo is not None:
        sh.write("proc/meminfo", meminfo)
    # What podman's process gets: the exported environment, not the shell's variables.
    sh.stub(
        "podman",
        f'{{ env | grep "^GO" | sort | tr "\\n" " "; echo; }} >>"$B2C_ROOT/go-env"\n{PODMAN}',
    )
    sh.stub("b2c_shutdown", "return 0")
    sh.write("sys/class/net/eth0/operstate", "up\n")
    sh.write("proc/cmdline", 'b2c.container="docker://a 0"\n')
    result = sh.run(f"{'export ' + cmdline_env if cmdline_env else ':'}\nb2c_init")
    assert result.status == 0, result.out
    seen = [line.strip() for line in (sh.root / "go-env").read_text().splitlines()]
    assert seen and all(env == expected for env in seen), seen
    assert ("GOMEMLIMIT" in result.out) == expected.startswith("GOGC=off")


def test_api_filesystems_that_do_not_mount_are_one_error_and_the_boot_goes_on(
    tmp_path: Path,
) -> None:
    sh = Shell(tmp_path)
    sh.stub("mount", 'echo "mount: mounting proc on /proc failed: No such device" >&2; return 1')
    result = sh.run("b2c_mount_early; echo after")
    assert result.errors() == [
        "b2c: error: could not mount every file system of /etc/fstab (see mount's messages above)"
    ]
    assert result.lines[-1] == "after"
