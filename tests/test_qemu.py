"""The QEMU command line (pure), the KVM probe, and real boots of a busybox-only initramfs."""

from __future__ import annotations

import gzip
import io
import logging
import os
import platform
import re
import time
import uuid
from pathlib import Path

import pytest

from b2c_builder.boot import qemu
from b2c_builder.boot.console import ConsoleResult, ExitCode, Panic, Status
from b2c_builder.boot.qemu import (
    PROBE_TIMEOUT,
    RunConfig,
    RunResult,
    boot,
    concatenate_initrds,
    dry_run,
    kernel_cmdline,
    kvm_unusable_reason,
    qemu_cmdline,
    resolve_accel,
)
from b2c_builder.build.cpio import write_cpio
from b2c_builder.build.rootfs import Kind, Rootfs
from b2c_builder.config import Accel, Arch, Disk, Firmware
from b2c_builder.errors import BootError, ConfigError
from b2c_builder.run import run
from tests.conftest import require_tool
from tests.kernel import DebianKernel

# --- the command line, without QEMU ----------------------------------------------------


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"not really a kernel")
    return path


def test_amd64_tcg_command(kernel: Path, tmp_path: Path) -> None:
    cfg = RunConfig(kernel=kernel, append="quiet", memory="1G", cpus=1)
    assert qemu_cmdline(cfg, Accel.tcg, tmp_path / "initrd") == [
        "qemu-system-x86_64",
        "-M", "q35",
        "-accel", "tcg",
        "-cpu", "max,erms=off,fsrm=off",
        "-m", "1G",
        "-smp", "1",
        "-nodefaults",
        "-display", "none",
        "-serial", "stdio",
        "-no-reboot",
        "-kernel", str(kernel),
        "-initrd", str(tmp_path / "initrd"),
        "-append", "console=ttyS0 panic=-1 quiet",
        "-netdev", "user,id=net0",
        "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip


def _option(cmd: list[str], name: str) -> list[str]:
    """Every value given to option ``name``."""
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == name]


def test_amd64_kvm_uses_the_host_cpu(kernel: Path) -> None:
    cmd = qemu_cmdline(RunConfig(kernel=kernel), Accel.kvm, None)
    assert (_option(cmd, "-accel"), _option(cmd, "-cpu")) == (["kvm"], ["host"])
    assert "-initrd" not in cmd
    assert _option(cmd, "-m") == ["2G"]


def test_arm64_command(kernel: Path) -> None:
    cfg = RunConfig(kernel=kernel, arch=Arch.arm64)
    tcg = qemu_cmdline(cfg, Accel.tcg, None)
    assert tcg[0] == "qemu-system-aarch64"
    assert _option(tcg, "-M") == ["virt,gic-version=max"]
    assert _option(tcg, "-cpu") == ["max"]
    assert _option(tcg, "-append") == ["console=ttyAMA0 panic=-1"]
    assert _option(qemu_cmdline(cfg, Accel.kvm, None), "-cpu") == ["host"]


@pytest.mark.parametrize(
    ("arch", "machine", "cpu", "console", "devices", "firmware"),
    [
        (
            Arch.riscv64,
            "virt",
            "rv64",
            "ttyS0",
            ["virtio-net-pci,netdev=net0,romfile=", "virtio-rng-pci"],
            ["default"],
        ),
        (
            Arch.ppc64el,
            "pseries",
            "power9",
            "hvc0",
            ["virtio-net-pci,netdev=net0,romfile=", "virtio-rng-pci"],
            [],
        ),
        (
            Arch.s390x,
            "s390-ccw-virtio",
            "max,vx=off",
            "ttysclp0",
            ["virtio-net-ccw,netdev=net0", "virtio-rng-ccw"],  # CCW devices: no ROM to drop
            [],
        ),
    ],
    ids=str,
)
def test_other_architectures_commands(
    kernel: Path,
    arch: Arch,
    machine: str,
    cpu: str,
    console: str,
    devices: list[str],
    firmware: list[str],
) -> None:
    cfg = RunConfig(kernel=kernel, arch=arch)
    tcg = qemu_cmdline(cfg, Accel.tcg, None)
    assert tcg[0] == arch.facts.qemu_binary
    assert (_option(tcg, "-M"), _option(tcg, "-cpu")) == ([machine], [cpu])
    assert _option(tcg, "-append") == [f"console={console} panic=-1"]
    assert _option(tcg, "-device") == devices
    assert _option(tcg, "-bios") == firmware
    assert _option(qemu_cmdline(cfg, Accel.kvm, None), "-cpu") == ["host"]


def test_no_kvm_test_boot_for_architectures_without_a_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a riscv64 host with a usable /dev/kvm, auto still needs a test boot: there is
    none for riscv64 guests, so it says so (and names the way to use KVM anyway)."""
    monkeypatch.setattr(Arch, "host", classmethod(lambda cls: Arch.riscv64))
    monkeypatch.setattr(qemu, "_kvm_device_unusable_reason", lambda: None)
    reason = qemu.kvm_unusable_reason(Arch.riscv64)
    assert reason == "there is no KVM test boot for riscv64 guests (pass --accel kvm to use it)"


def test_auto_must_be_resolved_first(kernel: Path) -> None:
    with pytest.raises(ValueError, match="resolve_accel"):
        qemu_cmdline(RunConfig(kernel=kernel), Accel.auto, None)


def test_disks_and_extra_arguments(kernel: Path, tmp_path: Path) -> None:
    qemu_img = require_tool("qemu-img")
    raw = tmp_path / "cache,disk.img"  # a comma must be doubled inside a QEMU option
    raw.write_bytes(b"\0" * 4096)
    qcow2 = tmp_path / "disk.qcow2"
    run([qemu_img, "create", "-q", "-f", "qcow2", str(qcow2), "16M"], reason="make a test disk")
    cfg = RunConfig(
        kernel=kernel,
        disks=(Disk.detect(raw), Disk.detect(qcow2)),
        qemu_args=("-rtc", "base=2010-01-01"),
    )
    cmd = qemu_cmdline(cfg, Accel.tcg, None)
    assert _option(cmd, "-drive") == [
        f"file={tmp_path}/cache,,disk.img,format=raw,if=virtio",
        f"file={qcow2},format=qcow2,if=virtio",
    ]
    assert cmd[-2:] == ["-rtc", "base=2010-01-01"]


def test_missing_disk_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.img"):
        Disk.detect(tmp_path / "nope.img")


@pytest.mark.parametrize(
    ("append", "expected"),
    [
        ("", "console=ttyS0 panic=-1"),
        ("quiet", "console=ttyS0 panic=-1 quiet"),
        ("console=tty0 quiet", "panic=-1 console=tty0 quiet"),
        ("panic=10", "console=ttyS0 panic=10"),
        ("console=ttyS1,115200 panic=0", "console=ttyS1,115200 panic=0"),
        ('"console=ttyS1" panic=5', '"console=ttyS1" panic=5'),
        # Inside a quoted value or after "--" (arguments for init) they do not count.
        ('b2c.run="-e console=x img"', 'console=ttyS0 panic=-1 b2c.run="-e console=x img"'),
        ("-- console=x panic=1", "console=ttyS0 panic=-1 -- console=x panic=1"),
        ("consoleblank=0", "console=ttyS0 panic=-1 consoleblank=0"),
        # The kernel's isspace(), not Python's: \x1c does not separate parameters.
        ("quiet\x1cconsole=x", "console=ttyS0 panic=-1 quiet\x1cconsole=x"),
        ('a="-- console=x"', 'console=ttyS0 panic=-1 a="-- console=x"'),
    ],
)  # fmt: skip
def test_append_defaults_are_not_duplicated(append: str, expected: str) -> None:
    assert kernel_cmdline(append, "ttyS0") == expected


def test_run_config_validation(kernel: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--kernel"):
        RunConfig(kernel=tmp_path / "missing")
    with pytest.raises(ConfigError, match="--initrd"):
        RunConfig(kernel=kernel, initrds=(tmp_path / "missing.cpio",))
    with pytest.raises(ConfigError, match="--memory"):
        RunConfig(kernel=kernel, memory="2 GB")
    with pytest.raises(ConfigError, match="--timeout"):
        RunConfig(kernel=kernel, timeout=0)


def test_initrds_are_concatenated_on_4_byte_boundaries(tmp_path: Path) -> None:
    parts = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for part, data in zip(parts, [b"12345", b"abcd", b"xy"], strict=True):
        part.write_bytes(data)
    out = concatenate_initrds(parts, tmp_path / "out")
    assert out.read_bytes() == b"12345\0\0\0abcdxy\0\0"


@pytest.fixture
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to probe KVM (open /dev/kvm, boot the test guest) fails the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the KVM probe must not run")

    for name in ("kvm_unusable_reason", "_kvm_device_unusable_reason", "run"):
        monkeypatch.setattr(qemu, name, forbidden)


@pytest.mark.usefixtures("no_probe")
def test_explicit_accel_does_not_probe() -> None:
    assert resolve_accel(Accel.tcg, Arch.amd64) is Accel.tcg
    assert resolve_accel(Accel.kvm, Arch.amd64) is Accel.kvm


def test_auto_follows_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "kvm_unusable_reason", lambda arch: None)
    assert resolve_accel(Accel.auto, Arch.amd64) is Accel.kvm
    monkeypatch.setattr(qemu, "kvm_unusable_reason", lambda arch: "no /dev/kvm")
    assert resolve_accel(Accel.auto, Arch.amd64) is Accel.tcg


@pytest.mark.usefixtures("no_probe")
def test_dry_run_with_auto_starts_nothing(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: path == "/dev/kvm")
    monkeypatch.setattr(Arch, "host", classmethod(lambda cls: Arch.amd64))
    comment, command = dry_run(RunConfig(kernel=kernel)).splitlines()
    assert comment.startswith("# --accel auto: shown with kvm (/dev/kvm is there);")
    assert " -accel kvm -cpu host " in command
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    comment, command = dry_run(RunConfig(kernel=kernel)).splitlines()
    assert comment.startswith("# --accel auto: shown with tcg (/dev/kvm is missing")
    assert " -accel tcg -cpu max,erms=off,fsrm=off " in command
    comment, command = dry_run(RunConfig(kernel=kernel, arch=Arch.arm64)).splitlines()
    assert "KVM cannot run arm64 guests on this amd64 host" in comment
    assert command.startswith("qemu-system-aarch64 ") and " -accel tcg " in command


@pytest.mark.usefixtures("no_probe")
def test_dry_run_prints_the_command(kernel: Path, tmp_path: Path) -> None:
    initrds = (tmp_path / "base.cpio.zst", tmp_path / "modules.cpio.zst")
    for initrd in initrds:
        initrd.write_bytes(b"x")
    cfg = RunConfig(kernel=kernel, initrds=initrds, append="b2c.container='a b'", accel=Accel.tcg)
    text = dry_run(cfg)
    comment, command = text.splitlines()
    assert comment.startswith("# ") and comment.endswith(f"{initrds[0]} {initrds[1]}")
    assert command.startswith("qemu-system-x86_64 -M q35 -accel tcg -cpu max,erms=off,fsrm=off ")
    assert "-append 'console=ttyS0 panic=-1 b2c.container='\"'\"'a b'\"'\"" in command


@pytest.mark.parametrize(
    ("console", "timed_out", "stopped", "returncode", "expected", "summary"),
    [
        (ConsoleResult(statuses=(Status(3, 1),)), False, None, 0, 3,
         "the guest printed pipeline status 3 after 1.0s"),
        # The status wins over what happened after it (a hang at poweroff, a panic).
        (ConsoleResult(statuses=(Status(0, 1),)), True, "timeout", -9, 0,
         "the guest printed pipeline status 0 after 1.0s"),
        (ConsoleResult(statuses=(Status(0, 1),), panic=Panic("x", 2)), False, None, 0, 0,
         "the guest printed pipeline status 0 after 1.0s"),
        (ConsoleResult(statuses=(Status(0, 1), Status(1, 2)), problems=("two statuses",)),
         False, None, 0, 254, "console contract broken: two statuses"),
        (ConsoleResult(statuses=(Status(300, 1),), problems=("status 300 above 255",)),
         False, None, 0, 254, "console contract broken: status 300 above 255"),
        (ConsoleResult(panic=Panic("VFS: unable to mount root", 1)), False, None, 0, 251,
         "kernel panic after 1.0s: VFS: unable to mount root"),
        (ConsoleResult(panic=Panic("x", 1)), False, "kernel panic", -9, 251,
         "kernel panic after 1.0s: x"),
        (ConsoleResult(), True, "timeout", -9, 250,
         "timeout after 1.0s: the guest was still running; QEMU was killed"),
        (ConsoleResult(), False, None, 0, 252,
         "the guest ended after 1.0s without printing a pipeline status"),
        (ConsoleResult(), False, "the guest did not power off", -9, 252,
         "the guest ended after 1.0s without printing a pipeline status"),
        (ConsoleResult(), False, None, 1, 253, "QEMU failed (exit code 1): no message"),
    ],
)  # fmt: skip
def test_exit_code_and_summary(
    console: ConsoleResult,
    timed_out: bool,
    stopped: str | None,
    returncode: int,
    expected: int,
    summary: str,
) -> None:
    result = RunResult(console, Accel.tcg, (), 1.0, timed_out, stopped, returncode)
    assert result.exit_code == expected
    assert result.summary() == summary


def fake_qemu(directory: Path, body: bytes) -> Path:
    """An executable file named like QEMU in ``directory``."""
    directory.mkdir(exist_ok=True)
    path = directory / "qemu-system-x86_64"
    path.write_bytes(body)
    path.chmod(0o755)
    return path


def test_a_boot_that_cannot_start_is_a_boot_error(
    kernel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = RunConfig(kernel=kernel, accel=Accel.tcg)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BootError, match="Could not find 'qemu-system-x86_64'") as missing:
        boot(cfg, echo=None)
    assert missing.value.hint == "install it: apt-get install qemu-system-x86"
    qemu_bin = fake_qemu(tmp_path / "bin", b"\x00not an executable format\n")
    monkeypatch.setenv("PATH", str(qemu_bin.parent))
    with pytest.raises(BootError, match=r"cannot start .*qemu-system-x86_64: Exec format error"):
        boot(cfg, echo=None)
    assert BootError.exit_code == ExitCode.QEMU_FAILED


# --- the KVM probe ----------------------------------------------------------------------


def test_kvm_probe_is_bounded_and_names_the_failing_layer() -> None:
    """The probe ends within its time limit, and its answer agrees with what can be checked
    without it: no /dev/kvm, a /dev/kvm this user cannot open, else only the test boot."""
    require_tool(f"qemu-system-{os.uname().machine}")
    start = time.monotonic()
    reason = kvm_unusable_reason(Arch.host())
    took = time.monotonic() - start
    assert took < PROBE_TIMEOUT + 2, f"the probe took {took:.1f}s"
    if not os.path.exists("/dev/kvm"):
        assert reason is not None and reason.startswith("/dev/kvm does not exist"), reason
    elif not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert reason is not None and reason.startswith("cannot open /dev/kvm"), reason
    elif reason is not None:  # the device works: only creating a VM or the boot can fail
        assert re.match(r"(/dev/kvm cannot create a VM|QEMU with KVM (failed|did not))", reason)


def test_kvm_probe_refuses_a_foreign_architecture() -> None:
    foreign = Arch.arm64 if Arch.host() is Arch.amd64 else Arch.amd64
    reason = kvm_unusable_reason(foreign)
    assert reason is not None and "architecture" in reason


# --- real boots ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vmlinuz(debian_kernel: DebianKernel) -> Path:
    """Debian's amd64 kernel image (tests/kernel.py: fetched by our own verified client)."""
    return debian_kernel.vmlinuz


def newc(manifest: Rootfs) -> bytes:
    """A newc archive of ``manifest`` by our own writer: device nodes without root or mknod."""
    out = io.BytesIO()
    write_cpio(manifest, out, source_date_epoch=0)
    return out.getvalue()


def busybox_manifest(init: str) -> Rootfs:
    """A minimal initramfs: static busybox, /dev/console, /proc and a shell /init."""
    busybox = Path(require_tool("busybox")).resolve()
    manifest = Rootfs()
    manifest.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    manifest.add_symlink("bin/sh", "busybox")
    for directory in ("dev", "proc", "etc"):
        manifest.add_dir(directory)
    # The kernel opens /dev/console for init's stdio before anything is mounted.
    manifest.add_device("dev/console", Kind.CHAR, 5, 1, 0o600)
    script = "#!/bin/sh\nexport PATH=/bin\nbusybox mount -t proc proc /proc\n" + init
    manifest.add_file("init", script.encode(), 0o755)
    return manifest


def initramfs(tmp_path: Path, init: str) -> Path:
    path = tmp_path / "initrd.cpio"
    path.write_bytes(newc(busybox_manifest(init)))
    return path


def boot_busybox(
    kernel: Path,
    initrds: tuple[Path, ...],
    *,
    timeout: float = 120,
    serial_log: Path | None = None,
) -> tuple[RunResult, list[str], dict[str, float]]:
    """Boot under TCG; return the result, the echoed lines and when each line arrived."""
    require_tool("qemu-system-x86_64")
    lines: list[str] = []
    seen: dict[str, float] = {}
    start = time.monotonic()

    def echo(line: str) -> None:
        lines.append(line)
        seen.setdefault(line.strip(), time.monotonic() - start)

    cfg = RunConfig(
        kernel=kernel,
        initrds=initrds,
        accel=Accel.tcg,
        memory="256M",
        cpus=1,
        timeout=timeout,
        serial_log=serial_log,
    )
    return boot(cfg, echo=echo), lines, seen


@pytest.mark.qemu
@pytest.mark.network
def test_status_from_two_concatenated_initrds(vmlinuz: Path, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    init = (
        'echo "SENTINEL $(busybox cat /etc/extra.txt)"\n'
        'echo "Execution is over, pipeline status: 3"\n'
        "busybox poweroff -f\n"
    )
    base = busybox_manifest(init)
    # gzip the base archive, and pad it to an odd size, so that the uncompressed second
    # archive lands off a 4-byte boundary unless the runner pads between them.
    pad = 0
    while len(first := gzip.compress(newc(base), mtime=0)) % 4 == 0:
        pad += 1
        base.add_file("pad", b"p" * pad, replace=True)
    (tmp_path / "base.cpio.gz").write_bytes(first)
    extra = Rootfs()
    extra.add_file("etc/extra.txt", f"second-archive-{token}\n".encode())
    (tmp_path / "extra.cpio").write_bytes(newc(extra))
    log_path = tmp_path / "serial.log"

    result, lines, seen = boot_busybox(
        vmlinuz,
        (tmp_path / "base.cpio.gz", tmp_path / "extra.cpio"),
        serial_log=log_path,
    )

    sentinel = f"SENTINEL second-archive-{token}"
    assert sentinel in seen, "\n".join(lines[-30:])
    assert result.exit_code == 3, result.summary()
    assert result.console.statuses == (Status(3, lines.index(sentinel) + 2),)
    assert not result.timed_out
    # The serial log holds exactly what was streamed, raw (with the tty's \r\n).
    logged = log_path.read_bytes().decode(errors="backslashreplace").split("\n")
    assert [line.rstrip("\r") for line in logged] == [*lines, ""]
    print(f"\nTCG boot to the sentinel: {seen[sentinel]:.1f}s, QEMU ran {result.duration:.1f}s")


@pytest.mark.qemu
@pytest.mark.network
def test_kernel_panic(vmlinuz: Path, tmp_path: Path) -> None:
    initrd = initramfs(tmp_path, "echo SENTINEL-PANIC\nexit 1\n")
    result, lines, seen = boot_busybox(vmlinuz, (initrd,))
    assert "SENTINEL-PANIC" in seen, "\n".join(lines[-30:])
    assert result.exit_code == ExitCode.KERNEL_PANIC, result.summary()
    assert result.console.panic is not None
    assert result.console.panic.reason.startswith("Attempted to kill init!")


@pytest.mark.qemu
@pytest.mark.network
def test_timeout(vmlinuz: Path, tmp_path: Path) -> None:
    timeout = 40.0  # 2.5 times the boot time measured on a loaded 2-core machine
    initrd = initramfs(tmp_path, "echo SENTINEL-SLEEPING\nwhile :; do busybox sleep 1000; done\n")
    result, lines, seen = boot_busybox(vmlinuz, (initrd,), timeout=timeout)
    assert "SENTINEL-SLEEPING" in seen, "\n".join(lines[-30:])
    assert result.exit_code == ExitCode.TIMEOUT, result.summary()
    assert timeout <= result.duration < timeout + 3


@pytest.mark.qemu
@pytest.mark.network
def test_poweroff_without_status(vmlinuz: Path, tmp_path: Path) -> None:
    initrd = initramfs(tmp_path, "echo SENTINEL-NO-STATUS\nbusybox poweroff -f\n")
    result, lines, seen = boot_busybox(vmlinuz, (initrd,))
    assert "SENTINEL-NO-STATUS" in seen, "\n".join(lines[-30:])
    assert result.exit_code == ExitCode.NO_STATUS, result.summary()
    assert result.qemu_returncode == 0 and result.stopped is None


@pytest.mark.qemu
def test_qemu_that_fails_to_start(kernel: Path) -> None:
    require_tool("qemu-system-x86_64")
    cfg = RunConfig(kernel=kernel, accel=Accel.tcg, qemu_args=("-no-such-option",))
    result = boot(cfg, echo=None)
    assert result.exit_code == ExitCode.QEMU_FAILED
    assert any("-no-such-option" in line for line in result.qemu_stderr), result.qemu_stderr


# --- the runner's own mechanics, with a 64 KiB firmware that prints and halts -------------
# These boot no kernel (QEMU only loads the one it is given), so each takes about a second.


def serial_firmware(path: Path, text: str) -> Path:
    """A BIOS image that writes ``text`` to the first UART (port 0x3f8) and halts forever."""
    code = bytes.fromhex(
        "be2000"  # 0x00 mov si, 0x20         (the text, below)
        "baf803"  # 0x03 mov dx, 0x3f8
        "2eac"  #   0x06 cs lodsb
        "84c0"  #   0x08 test al, al
        "7403"  #   0x0a jz 0x0f
        "ee"  #     0x0c out dx, al
        "ebf7"  #   0x0d jmp 0x06
        "f4"  #     0x0f hlt                  (interrupts are off after reset: forever)
        "ebfd"  #   0x10 jmp 0x0f
    )
    image = bytearray(0x10000)  # mapped at 0xf0000; the CPU starts at f000:fff0
    image[: len(code)] = code
    message = text.encode() + b"\0"
    image[0x20 : 0x20 + len(message)] = message
    image[0xFFF0:0xFFF5] = bytes.fromhex("ea000000f0")  # jmp f000:0000
    path.write_bytes(image)
    return path


def qemu_children() -> list[int]:
    """Processes whose parent is this test process and whose name starts with qemu."""
    children = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat_file.read_text().rsplit(")", 1)
        except OSError:
            continue
        if int(rest.split()[1]) == os.getpid() and name.split("(", 1)[1].startswith("qemu"):
            children.append(int(stat_file.parent.name))
    return children


def firmware_config(kernel: Path, firmware: Path, timeout: float) -> RunConfig:
    return RunConfig(
        kernel=kernel,
        accel=Accel.tcg,
        memory="64M",
        cpus=1,
        timeout=timeout,
        qemu_args=("-bios", str(firmware)),
    )


@pytest.mark.qemu
@pytest.mark.network
def test_timeout_is_enforced_from_the_side(vmlinuz: Path, tmp_path: Path) -> None:
    require_tool("qemu-system-x86_64")
    firmware = serial_firmware(tmp_path / "fw.bin", "FIRMWARE-SENTINEL\n")
    lines: list[str] = []
    result = boot(firmware_config(vmlinuz, firmware, 2.0), echo=lines.append)
    assert lines == ["FIRMWARE-SENTINEL"]
    assert result.exit_code == ExitCode.TIMEOUT, result.summary()
    assert 2.0 <= result.duration < 4.0
    assert qemu_children() == []


@pytest.mark.qemu
@pytest.mark.network
def test_stops_a_guest_that_does_not_power_off(
    vmlinuz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("qemu-system-x86_64")
    monkeypatch.setattr(qemu, "SHUTDOWN_GRACE", 0.5)
    text = "Execution is over, pipeline status: 7\nIt's now safe to turn off your computer\n"
    firmware = serial_firmware(tmp_path / "fw.bin", text)
    result = boot(firmware_config(vmlinuz, firmware, 60.0), echo=None)
    assert result.exit_code == 7, result.summary()
    assert result.stopped == "the guest did not power off"
    assert not result.timed_out
    assert result.duration < 5.0


@pytest.mark.qemu
@pytest.mark.network
def test_qemu_is_killed_when_the_reader_fails(vmlinuz: Path, tmp_path: Path) -> None:
    require_tool("qemu-system-x86_64")
    firmware = serial_firmware(tmp_path / "fw.bin", "FIRMWARE-SENTINEL\n")

    def echo(line: str) -> None:
        assert qemu_children() != [], "QEMU should be running while it prints"
        raise RuntimeError(f"reader failed on {line!r}")

    with pytest.raises(RuntimeError, match="FIRMWARE-SENTINEL"):
        boot(firmware_config(vmlinuz, firmware, 60.0), echo=echo)
    assert qemu_children() == []


# --- --machine microvm -----------------------------------------------------------------


def test_microvm_command_has_virtio_mmio_devices_only(kernel: Path, tmp_path: Path) -> None:
    share = tmp_path / "src,tree"  # commas are doubled inside QEMU option values
    share.mkdir()
    disk = tmp_path / "cache,disk.img"
    disk.write_bytes(b"\0" * 4096)
    cfg = RunConfig(
        kernel=kernel,
        machine="microvm",
        memory="1G",
        disks=(Disk.detect(disk), Disk(tmp_path / "b.qcow2", "qcow2")),
        shares=((share, "b2c_share1"),),
        qemu_args=("-rtc", "base=utc"),
    )
    assert qemu_cmdline(cfg, Accel.tcg, tmp_path / "initrd") == [
        "qemu-system-x86_64",
        "-M", "microvm,auto-kernel-cmdline=off",
        "-accel", "tcg",
        "-cpu", "max,erms=off,fsrm=off",
        "-m", "1G",
        "-smp", "1",
        "-nodefaults",
        "-display", "none",
        "-serial", "stdio",
        "-no-reboot",
        "-kernel", str(kernel),
        "-initrd", str(tmp_path / "initrd"),
        "-append", "console=ttyS0 panic=-1",
        "-netdev", "user,id=net0",
        "-device", "virtio-net-device,netdev=net0",
        "-device", "virtio-rng-device",
        "-drive", f"file={tmp_path}/cache,,disk.img,format=raw,if=none,id=disk0",
        "-device", "virtio-blk-device,drive=disk0",
        "-drive", f"file={tmp_path}/b.qcow2,format=qcow2,if=none,id=disk1",
        "-device", "virtio-blk-device,drive=disk1",
        "-fsdev", f"local,path={tmp_path}/src,,tree,security_model=none,id=b2c_share1",
        "-device", "virtio-9p-device,fsdev=b2c_share1,mount_tag=b2c_share1",
        "-rtc", "base=utc",
    ]  # fmt: skip


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
cpu MHz\t\t: 2596.150
flags\t\t: fpu vme de pse tsc msr pae mce constant_tsc nonstop_tsc
bogomips\t: 5192.30
TLB size\t: 1024 4K pages

processor\t: 1
bogomips\t: 5192.31
"""


def test_the_host_tsc_frequency_is_read_from_the_first_bogomips() -> None:
    assert qemu.host_tsc_khz(X86_CPUINFO) == 2_596_150
    assert qemu.host_tsc_khz("processor\t: 0\nbogomips\t: 6000.00\n") == 3_000_000
    assert qemu.host_tsc_khz("processor\t: 0\nmodel name\t: x\n") is None
    assert qemu.host_tsc_khz("bogomips\t: unknown\n") is None


@pytest.fixture
def x86_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(X86_CPUINFO)
    monkeypatch.setattr(qemu, "CPUINFO", cpuinfo)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")


@pytest.mark.usefixtures("x86_host")
def test_microvm_under_tcg_gets_the_hosts_tsc_frequency(kernel: Path) -> None:
    """Without it, a busy host makes the guest's PIT calibration fail; with no HPET or ACPI
    PM timer on microvm, its kernel then hangs (test_kdev boots that case)."""
    microvm = RunConfig(kernel=kernel, machine="microvm", append="quiet", accel=Accel.tcg)
    khz = qemu.guest_tsc_khz(microvm, Accel.tcg)
    assert khz == 2_596_150
    cmd = qemu_cmdline(microvm, Accel.tcg, None, tsc_khz=khz)
    assert _option(cmd, "-append") == ["console=ttyS0 panic=-1 tsc_early_khz=2596150 quiet"]
    # KVM guests read it from kvmclock; the usual machines have an HPET and a PM timer.
    assert qemu.guest_tsc_khz(microvm, Accel.kvm) is None
    assert qemu.guest_tsc_khz(RunConfig(kernel=kernel), Accel.tcg) is None
    # The user's own value wins.
    mine = RunConfig(kernel=kernel, machine="microvm", append="tsc_early_khz=1000000")
    cmd = qemu_cmdline(mine, Accel.tcg, None, tsc_khz=khz)
    assert _option(cmd, "-append") == ["console=ttyS0 panic=-1 tsc_early_khz=1000000"]
    assert "tsc_early_khz=2596150" in dry_run(microvm)


def test_microvm_on_a_host_without_bogomips_boots_with_a_warning(
    kernel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with caplog.at_level(logging.WARNING, logger="b2c"):
        assert qemu.guest_tsc_khz(RunConfig(kernel=kernel, machine="microvm"), Accel.tcg) is None
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "may hang before /init" in warning and "tsc_early_khz=" in warning


def test_the_length_check_leaves_room_for_tsc_early_khz_on_microvm(kernel: Path) -> None:
    added = len("console=ttyS0 panic=-1 ") + 1  # and the terminating NUL
    fits = "x" * (Arch.amd64.facts.command_line_size - added)
    RunConfig(kernel=kernel, append=fits)
    with pytest.raises(ConfigError, match="COMMAND_LINE_SIZE"):
        RunConfig(kernel=kernel, machine="microvm", append=fits)
    room = len(f"tsc_early_khz={qemu.TSC_KHZ_RESERVE} ")
    RunConfig(kernel=kernel, machine="microvm", append=fits[:-room])


def test_the_default_machine_is_the_architectures_and_unchanged(
    kernel: Path, tmp_path: Path
) -> None:
    share = tmp_path / "share"
    share.mkdir()
    base = {"kernel": kernel, "shares": ((share, "b2c_share1"),)}
    default = qemu_cmdline(RunConfig(**base), Accel.tcg, None)  # type: ignore[arg-type]
    named = qemu_cmdline(RunConfig(**base, machine="q35"), Accel.tcg, None)  # type: ignore[arg-type]
    assert default == named
    assert _option(default, "-M") == ["q35"]
    assert _option(default, "-virtfs") == [
        f"local,path={share},mount_tag=b2c_share1,security_model=none,id=b2c_share1"
    ]
    assert not [arg for arg in default if arg.startswith("virtio-") and arg.endswith("-device")]
    arm = RunConfig(kernel=kernel, arch=Arch.arm64, machine="virt")
    assert _option(qemu_cmdline(arm, Accel.tcg, None), "-M") == ["virt,gic-version=max"]


@pytest.mark.parametrize(
    ("arch", "machine", "message", "hint"),
    [
        (Arch.arm64, "microvm", "x86 guests only", "--machine virt"),
        (Arch.s390x, "microvm", "x86 guests only", "--machine s390-ccw-virtio"),
        (Arch.amd64, "pc", "the choices are q35 or microvm", "--machine q35 or --machine microvm"),
        (Arch.amd64, "virt", "the choices are q35 or microvm", "--machine q35"),
        (Arch.arm64, "q35", "the choices are virt", "--machine virt"),
    ],
)
def test_unknown_machines_are_config_errors_with_the_choices(
    kernel: Path, arch: Arch, machine: str, message: str, hint: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        RunConfig(kernel=kernel, arch=arch, machine=machine)
    assert hint in (caught.value.hint or "")
    assert f"--machine {machine!r}" in caught.value.message


@pytest.mark.parametrize(
    ("boot", "refused"),
    [
        ({"pxe": "folder"}, "--pxe"),
        ({"cdrom": "file"}, "--cdrom"),
        ({"kernel": "file", "firmware": Firmware.uefi}, "--firmware uefi"),
    ],
)
def test_microvm_refuses_firmware_boots(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    boot: dict[str, object],
    refused: str,
) -> None:
    monkeypatch.setattr(qemu, "OVMF_CODE", tmp_path / "file")  # installed or not
    monkeypatch.setattr(qemu, "OVMF_VARS", tmp_path / "file")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    given = {k: tmp_path / str(v) if k != "firmware" else v for k, v in boot.items()}
    RunConfig(**given)  # type: ignore[arg-type] # fine on q35
    with pytest.raises(
        ConfigError, match=f"--machine microvm cannot boot with {refused}"
    ) as caught:
        RunConfig(**given, machine="microvm")  # type: ignore[arg-type]
    assert "drop --machine microvm" in (caught.value.hint or "")
