"""Run /init's shell functions on the host under busybox sh, with stubbed commands.

Debian's busybox runs its applets in preference to $PATH (a "standalone" shell), so
stubs are shell functions (which win over applets), defined after the rendered /init is
sourced with B2C_UNITTEST=1. Every stub logs its argv to a file; its body (shell code,
``return N`` for a status) says what it does. File paths go through $B2C_ROOT, a scratch
directory holding a fake /proc, /sys, /dev and /etc.
"""

from __future__ import annotations

import functools
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from b2c_builder.guest.render import InitSettings, render_init
from b2c_builder.run import run
from tests.conftest import require_tool

CMDLINES = Path(__file__).parent / "data" / "cmdlines"
ARG_SEP, CALL_SEP = "\x1e", "\x1d"

# name -> body. Functions named like a command replace it; rdate, mkfs_ext4 and sfdisk are
# reached through B2C_RDATE, B2C_MKFS_EXT4 and B2C_SFDISK.
DEFAULT_STUBS: dict[str, str] = {
    name: "return 0"
    for name in (
        "mount",
        "umount",
        "modprobe",
        "poweroff",
        "reboot",
        "udhcpc",
        "ip",
        "wget",
        "hostname",
        "stty",
        "swapon",
        "swapoff",
        "mkswap",
        "fallocate",
        "sync",
        "df",
        "rdate",
        "mkfs_ext4",
    )
}
DEFAULT_STUBS |= {
    "date": "echo 1700000000",
    "uname": "echo x86_64",
    "timeout": 'shift; "$@"',
    "pidof": "return 1",  # no such process
    "sfdisk": "cat >/dev/null",
    # Time passes only when init sleeps: the fake /proc/uptime advances by the delay.
    "sleep": textwrap.dedent(
        """\
        local cs
        case $1 in
            *.*) cs=$(( ${1%.*} * 100 + ${1#*.} * 10 )) ;;
            *) cs=$(( $1 * 100 )) ;;
        esac
        b2c_uptime_cs
        cs=$((B2C_UPTIME_CS + cs))
        printf '%d.%02d 0.00\\n' $((cs / 100)) $((cs % 100)) >"$B2C_ROOT/proc/uptime"
        """
    ),
    # podman: create prints a container id, run writes one to its --cidfile (64 hex digits,
    # as podman's), everything else succeeds silently.
    "podman": textwrap.dedent(
        """\
        case $1 in
            create)
                n=$(( $(cat "$B2C_ROOT/ncreate" 2>/dev/null || echo 0) + 1 ))
                echo "$n" >"$B2C_ROOT/ncreate"
                echo "cid$n"
                ;;
            run)
                n=$(( $(cat "$B2C_ROOT/ncreate" 2>/dev/null || echo 0) + 1 ))
                echo "$n" >"$B2C_ROOT/ncreate"
                b2c_stub_cidfile "$@" && printf '%064x' "$n" >"$B2C_ROOT$B2C_STUB_CIDFILE"
                ;;
            volume) [ "$2" != exists ] || return 1 ;;
        esac
        return 0
        """
    ),
}


# A podman whose containers exit with the number that ends their command line
# ("docker://x 3" exits 3); "docker://unreachable" cannot be pulled; "docker://tty" was
# created with -i. podman run writes the 64-hex-digit id of a container it creates to its
# --cidfile (b2c_direct_run's FIFO).
PODMAN = """\
local last
for last in "$@"; do :; done
case $1 in
    create)
        if [ "$last" = docker://unreachable ]; then
            echo "Error: initializing source" >&2
            return 125
        fi
        echo "id-$last"
        ;;
    run)
        if [ "$last" = docker://unreachable ]; then
            echo "Error: initializing source" >&2
            return 125
        fi
        b2c_stub_cidfile "$@" && printf '%064d' 0 >"$B2C_ROOT$B2C_STUB_CIDFILE"
        case $last in [0-9]*) return "$last" ;; esac
        ;;
    start)
        case $last in id-[0-9]*) return "${last#id-}" ;; esac
        ;;
    container)
        [ "$2" = inspect ] || return 0
        case $last in id-docker://tty) echo true ;; *) echo false ;; esac
        ;;
    volume)
        [ "$2" != exists ] || return 1
        ;;
esac
return 0
"""


# /proc/filesystems of a kernel with overlay, ext4, 9p and virtiofs loaded.
FILESYSTEMS = "".join(
    f"nodev\t{name}\n" if name != "ext4" else "\text4\n"
    for name in (
        "sysfs",
        "tmpfs",
        "proc",
        "cgroup2",
        "devtmpfs",
        "devpts",
        "mqueue",
        "overlay",
        "ext4",
        "9p",
        "virtiofs",
    )
)


def real_world_lines(name: str) -> list[str]:
    text = (CMDLINES / name).read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@functools.cache
def rendered_init(default_cmdline: str = "") -> Path:
    """The /init rendered from the checkout, written once per test session."""
    directory = Path(tempfile.mkdtemp(prefix="b2c-init-"))
    path = directory / "init"
    path.write_bytes(render_init(InitSettings(default_cmdline=default_cmdline)))
    return path


@dataclass
class Result:
    status: int
    out: str
    err: str
    calls: list[list[str]]
    root: Path

    def called(self, name: str) -> list[list[str]]:
        """The argument lists of every call to the stub ``name``."""
        return [call[1:] for call in self.calls if call[0] == name]

    @property
    def lines(self) -> list[str]:
        """Console lines (split on newlines only: GitLab section markers contain \\r)."""
        return self.out.removesuffix("\n").split("\n") if self.out else []

    def errors(self) -> list[str]:
        return [line for line in self.lines if line.startswith("b2c: error:")]

    def warnings(self) -> list[str]:
        return [line for line in self.lines if line.startswith("b2c: warning:")]


@dataclass
class Shell:
    """A scratch root and a set of stubs; ``run(code)`` runs shell code after /init's
    functions are defined."""

    tmp: Path
    init: Path = field(default_factory=rendered_init)
    stubs: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_STUBS))

    def __post_init__(self) -> None:
        self.root = self.tmp / "root"
        self.log = self.tmp / "calls.log"
        for directory in (
            "proc/sys/kernel",
            "proc/sys/net/ipv4",
            "proc/net",
            "sys/class/net",
            "sys/class/block",
            "sys/block",
            "sys/fs/cgroup",
            "dev",
            "etc",
            "run/b2c",
            "var/tmp",
            "var/lib/containers",
        ):
            (self.root / directory).mkdir(parents=True, exist_ok=True)
        self.write("proc/uptime", "1.00 0.00\n")
        self.write("proc/cmdline", "\n")
        self.write("proc/sys/kernel/osrelease", "6.1.0-test\n")
        # What init/kernel.sh checks, as a kernel with every option of b2c_builder/guest/kconfig.py
        # shows it once the modules are loaded.
        self.write("proc/filesystems", FILESYSTEMS)
        self.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids\n")
        self.write("proc/net/unix", "Num       RefCount Protocol Flags    Type St Inode Path\n")
        self.write("proc/net/packet", "sk       RefCnt Type Proto  Iface R Rmem   User   Inode\n")
        (self.root / "sys/bus/virtio/drivers/9pnet_virtio").mkdir(parents=True, exist_ok=True)
        self.write("usr/bin/crun", b"\x7fELF crun")

    def stub(self, name: str, body: str) -> None:
        self.stubs[name] = textwrap.dedent(body)

    def write(self, path: str, data: str | bytes) -> Path:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data)
        return target

    def script(self, code: str) -> str:
        stubs = "\n".join(
            f"b2c_stub_{name}() {{\n{body}\n}}\n"
            f'{name}() {{ b2c_stub_log {name} "$@"; b2c_stub_{name} "$@"; }}'
            for name, body in self.stubs.items()
        )
        return "\n".join(
            [
                f"cd '{self.tmp}' || exit 98",
                "B2C_UNITTEST=1",
                f". '{self.init}'",
                f"B2C_ROOT='{self.root}'",
                "B2C_RDATE=rdate B2C_MKFS_EXT4=mkfs_ext4 B2C_SFDISK=sfdisk B2C_HALT_LOOP=0",
                "b2c_option_defaults",
                # The podman stubs' --cidfile: B2C_STUB_CIDFILE = its value (false: none).
                "b2c_stub_cidfile() {",
                "    B2C_STUB_CIDFILE=",
                "    while [ $# -gt 0 ]; do",
                "        case $1 in --cidfile=*) B2C_STUB_CIDFILE=${1#--cidfile=} ;;",
                "            --cidfile) B2C_STUB_CIDFILE=$2 ;; esac",
                "        shift",
                "    done",
                '    [ -n "$B2C_STUB_CIDFILE" ]',
                "}",
                "b2c_stub_log() {",
                f"    printf '%s{ARG_SEP}' \"$@\" >>'{self.log}'",
                f"    printf '{CALL_SEP}' >>'{self.log}'",
                "}",
                stubs,
                textwrap.dedent(code),
            ]
        )

    def run(self, code: str, *, timeout: float = 20) -> Result:
        path = self.tmp / "test.sh"
        path.write_text(self.script(code))
        self.log.write_bytes(b"")
        proc = run(
            ["env", "-i", "PATH=/usr/bin:/bin", require_tool("busybox"), "sh", str(path)],
            reason="run /init's shell functions under busybox sh",
            check=False,
            timeout=timeout,
        )
        raw = self.log.read_bytes().decode("latin-1")
        calls = [call.split(ARG_SEP)[:-1] for call in raw.split(CALL_SEP)[:-1]]
        return Result(
            proc.returncode,
            proc.stdout.decode("latin-1"),
            proc.stderr.decode("latin-1"),
            calls,
            self.root,
        )
