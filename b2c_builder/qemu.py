"""Boot a kernel + initramfs under QEMU: a pure command line, a KVM probe, a streaming runner.

``qemu_cmdline()`` builds the argument list without touching the system, so it is tested
without QEMU and printed by ``--dry-run``. ``boot()`` starts QEMU, streams the serial
console (echoed, copied to a log file, parsed by ``console.ConsoleParser``), enforces the
timeout from a watchdog thread and always kills QEMU on the way out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import IO

from b2c_builder import console
from b2c_builder.config import Arch
from b2c_builder.console import ConsoleResult, ExitCode
from b2c_builder.errors import ConfigError, ToolError
from b2c_builder.log import log
from b2c_builder.run import run, which


class Accel(StrEnum):
    """``--accel``: ``auto`` uses KVM when the probe shows it works, else TCG."""

    auto = "auto"
    kvm = "kvm"
    tcg = "tcg"


@dataclass(frozen=True)
class QemuArch:
    """What differs between architectures when booting a kernel directly."""

    binary: str
    machine: str
    console: str  # the serial console device, as console= names it
    tcg_cpu: str = "max"  # all the instructions TCG can emulate
    kvm_cpu: str = "host"
    nic: str = "virtio-net-pci"


QEMU_ARCHES: Mapping[Arch, QemuArch] = MappingProxyType(
    {
        Arch.amd64: QemuArch("qemu-system-x86_64", "q35", "ttyS0"),
        Arch.arm64: QemuArch("qemu-system-aarch64", "virt,gic-version=max", "ttyAMA0"),
    }
)

QCOW2_MAGIC = b"QFI\xfb"
_MEMORY_RE = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class Disk:
    """A disk image attached as a virtio block device."""

    path: Path
    format: str = "raw"  # "raw" or "qcow2"

    @classmethod
    def detect(cls, path: Path) -> Disk:
        """A disk whose format is read from its first bytes (qcow2 magic, else raw)."""
        try:
            with path.open("rb") as image:
                magic = image.read(len(QCOW2_MAGIC))
        except OSError as exc:
            raise ConfigError(
                f"--disk {path}: {exc.strerror}", hint="pass an existing disk image file"
            ) from exc
        return cls(path, "qcow2" if magic == QCOW2_MAGIC else "raw")


@dataclass(frozen=True)
class RunConfig:
    """Everything one boot depends on; ``b2c-builder run`` options map onto these fields."""

    kernel: Path
    initrds: tuple[Path, ...] = ()  # several are concatenated, as the kernel allows
    append: str = ""
    arch: Arch = Arch.amd64
    accel: Accel = Accel.auto
    memory: str = "2G"
    # One vCPU: with several, multi-threaded TCG races the kernel's int3-based code patching
    # (seen here: 'Oops: int3' in secure_tcp_seq_and_ts_off in 1 boot of 2 with -smp 2).
    cpus: int = 1
    disks: tuple[Disk, ...] = ()
    timeout: float = 600.0  # seconds, from QEMU's start
    serial_log: Path | None = None
    qemu_args: tuple[str, ...] = ()  # appended as is, e.g. ("-rtc", "base=2020-01-01")
    # (host folder, 9p mount tag): shared read-write; files are created as QEMU's user.
    shares: tuple[tuple[Path, str], ...] = ()
    # The per-boot nonce given to the guest in the job: only the init's lines tagged with it
    # count for the console contract (console.ConsoleParser). None: every line counts.
    nonce: str | None = None

    def __post_init__(self) -> None:
        for what, path in [("--kernel", self.kernel)] + [("--initrd", p) for p in self.initrds]:
            if not path.is_file():
                raise ConfigError(f"{what} {path} is not a file", hint="check the path")
        if not _MEMORY_RE.match(self.memory) or float(re.sub(r"[^\d.]", "", self.memory)) <= 0:
            raise ConfigError(
                f"--memory {self.memory!r} is not a QEMU memory size", hint="e.g. 2G or 512M"
            )
        if self.cpus < 1:
            raise ConfigError("--cpus must be at least 1", hint="e.g. --cpus 2")
        if self.timeout <= 0:
            raise ConfigError("--timeout must be positive", hint="e.g. --timeout 600")
        if self.nonce is not None and not re.fullmatch(r"[0-9a-f]{16,}", self.nonce):
            raise ValueError(f"a console nonce is 16+ lower-case hex digits, not {self.nonce!r}")


def _kernel_param_names(cmdline: str) -> set[str]:
    """Names of the kernel's own parameters in ``cmdline`` (before ``--``), quotes honoured."""
    names: set[str] = set()
    for token in re.findall(r'(?:[^\s"]|"[^"]*"?)+', cmdline):
        if token == "--":
            break
        names.add(token.replace('"', "").split("=", 1)[0])
    return names


def kernel_cmdline(append: str, console_device: str) -> str:
    """``append`` with ``console=`` and ``panic=-1`` in front, unless it already sets them.

    ``panic=-1`` makes a panicking kernel reboot at once, which ``-no-reboot`` turns into
    QEMU exiting: a panic never becomes a hang.
    """
    names = _kernel_param_names(append)
    defaults = [
        f"{name}={value}"
        for name, value in (("console", console_device), ("panic", "-1"))
        if name not in names
    ]
    return " ".join([*defaults, append] if append.strip() else defaults)


def _qemu_path(path: Path) -> str:
    """A path inside a QEMU option value: commas are doubled."""
    return str(path).replace(",", ",,")


def qemu_cmdline(cfg: RunConfig, accel: Accel, initrd: Path | None) -> list[str]:
    """The QEMU command for ``cfg`` with a resolved ``accel`` and the (concatenated) initrd."""
    if accel is Accel.auto:
        raise ValueError("resolve --accel auto with resolve_accel() first")
    arch = QEMU_ARCHES[cfg.arch]
    cpu = arch.kvm_cpu if accel is Accel.kvm else arch.tcg_cpu
    cmd = [
        arch.binary,
        "-M", arch.machine,
        "-accel", str(accel),
        "-cpu", cpu,
        "-m", cfg.memory,
        "-smp", str(cfg.cpus),
        "-nodefaults",
        "-display", "none",
        "-serial", "stdio",
        "-no-reboot",
        "-kernel", str(cfg.kernel),
    ]  # fmt: skip
    if initrd is not None:
        cmd += ["-initrd", str(initrd)]
    cmd += ["-append", kernel_cmdline(cfg.append, arch.console)]
    # romfile= drops the NIC's iPXE option ROM: we never netboot, and it costs a second.
    cmd += ["-netdev", "user,id=net0", "-device", f"{arch.nic},netdev=net0,romfile="]
    cmd += ["-device", "virtio-rng-pci"]
    for disk in cfg.disks:
        cmd += ["-drive", f"file={_qemu_path(disk.path)},format={disk.format},if=virtio"]
    for path, tag in cfg.shares:
        # security_model=none: QEMU creates files as the invoking user and never chowns them.
        cmd += [
            "-virtfs",
            f"local,path={_qemu_path(path)},mount_tag={tag},security_model=none,id={tag}",
        ]
    return cmd + list(cfg.qemu_args)


# --- KVM probe -------------------------------------------------------------------------

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12
PROBE_TIMEOUT = 3.0  # seconds; a working KVM boots the firmware probe in well under 1 s

# arm64 probe guest, loaded with -kernel: print "K" on the virt board's PL011, then PSCI
# SYSTEM_OFF through HVC, which makes QEMU exit 0. Little-endian A64 instructions:
_ARM64_PROBE = b"".join(
    insn.to_bytes(4, "little")
    for insn in (
        0xD2A12001,  # movz x1, #0x0900, lsl #16   (UART data register 0x09000000)
        0x52800962,  # movz w2, #'K'
        0x39000022,  # strb w2, [x1]
        0x52800100,  # movz w0, #0x0008
        0x72B08000,  # movk w0, #0x8400, lsl #16   (PSCI_SYSTEM_OFF 0x84000008)
        0xD4000002,  # hvc #0
        0x14000000,  # b .
    )
)


def _kvm_device_unusable_reason() -> str | None:
    """Open /dev/kvm read-write and create a VM, as QEMU will."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return "/dev/kvm does not exist (no hardware virtualization, or kvm not loaded)"
    except OSError as exc:
        return f"cannot open /dev/kvm: {exc.strerror} (is your user in the kvm group?)"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            return f"/dev/kvm has API version {version}, not {KVM_API_VERSION}"
        os.close(fcntl.ioctl(fd, KVM_CREATE_VM, 0))
    except OSError as exc:
        return f"/dev/kvm cannot create a VM: {exc.strerror}"
    finally:
        os.close(fd)
    return None


def _probe_command(arch: Arch, workdir: Path) -> tuple[list[str], bytes]:
    """A tiny boot under KVM that exits by itself, and what it must print."""
    spec = QEMU_ARCHES[arch]
    base = [
        spec.binary,
        "-M", spec.machine,
        "-accel", "kvm",
        "-cpu", spec.kvm_cpu,
        "-m", "64",
        "-smp", "1",
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
    ]  # fmt: skip
    if arch is Arch.amd64:
        # SeaBIOS with no boot device reboots at once (reboot-timeout=0), and -no-reboot
        # makes that an exit; its debug log on port 0x402 shows the vCPU really ran.
        firmware = ["-boot", "reboot-timeout=0", "-debugcon", "stdio"]
        return [*base, *firmware, "-global", "isa-debugcon.iobase=0x402"], b"SeaBIOS"
    blob = workdir / "probe.bin"
    blob.write_bytes(_ARM64_PROBE)
    return [*base, "-serial", "stdio", "-kernel", str(blob)], b"K"


def kvm_unusable_reason(arch: Arch) -> str | None:
    """None when QEMU can really run ``arch`` guests under KVM here, else why not.

    Opening /dev/kvm is not enough (on some nested set-ups the ioctls succeed but QEMU
    aborts or hangs), so this also boots a tiny guest under KVM, bounded by PROBE_TIMEOUT.
    """
    try:
        host = Arch.host()
    except ConfigError:
        host = None
    if host is not arch:
        return f"KVM only runs guests of the host's architecture ({host}), not {arch}"
    if reason := _kvm_device_unusable_reason():
        return reason
    with tempfile.TemporaryDirectory(prefix="b2c-kvm-probe-") as tmp:
        cmd, expected = _probe_command(arch, Path(tmp))
        start = time.monotonic()
        try:
            proc = run(cmd, reason="test KVM", timeout=PROBE_TIMEOUT, check=False, input=b"")
        except ToolError as exc:
            return f"QEMU with KVM did not finish a test boot: {exc.message}"
        took = time.monotonic() - start
    if proc.returncode != 0 or expected not in proc.stdout:
        stderr = proc.stderr.decode(errors="backslashreplace").strip().splitlines()
        detail = stderr[-1] if stderr else "no message"
        return f"QEMU with KVM failed a test boot (exit code {proc.returncode}): {detail}"
    log.debug("KVM test boot took %.2fs", took)
    return None


def probe_kvm(arch: Arch | None = None) -> bool:
    """True when KVM really works for ``arch`` (default: the host's) guests."""
    return kvm_unusable_reason(arch or Arch.host()) is None


def resolve_accel(
    accel: Accel, arch: Arch, *, probe: Callable[[Arch], str | None] = kvm_unusable_reason
) -> Accel:
    """``kvm`` or ``tcg``. Only ``auto`` probes; the choice and its reason are logged."""
    if accel is not Accel.auto:
        return accel
    reason = probe(arch)
    if reason is None:
        log.info("accel auto: using kvm (a test boot under KVM worked)")
        return Accel.kvm
    log.info("accel auto: using tcg, because %s", reason)
    return Accel.tcg


# --- initrd ----------------------------------------------------------------------------


def concatenate_initrds(parts: Sequence[Path], dest: Path) -> Path:
    """Write ``parts`` one after the other into ``dest``, each padded to 4 bytes.

    The kernel unpacks concatenated (compressed or not) cpio archives in order; an
    uncompressed archive must start on a 4-byte boundary, and zero padding is skipped.
    """
    with dest.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                size = 0
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
            out.write(b"\0" * (-size % 4))
    return dest


@contextlib.contextmanager
def _initrd(cfg: RunConfig) -> Iterator[Path | None]:
    if len(cfg.initrds) <= 1:
        yield cfg.initrds[0] if cfg.initrds else None
        return
    with tempfile.TemporaryDirectory(prefix="b2c-run-") as tmp:
        yield concatenate_initrds(cfg.initrds, Path(tmp) / "initrd.img")


def dry_run(cfg: RunConfig, *, probe: Callable[[Arch], str | None] = kvm_unusable_reason) -> str:
    """The command ``boot(cfg)`` would run, as shell text. ``--accel auto`` is still probed."""
    accel = resolve_accel(cfg.accel, cfg.arch, probe=probe)
    lines = []
    initrd: Path | None = cfg.initrds[0] if cfg.initrds else None
    if len(cfg.initrds) > 1:
        initrd = Path(tempfile.gettempdir()) / "b2c-run-XXXX" / "initrd.img"
        parts = " ".join(shlex.quote(str(p)) for p in cfg.initrds)
        lines.append(f"# {initrd} is the concatenation of: {parts}")
    lines.append(shlex.join(qemu_cmdline(cfg, accel, initrd)))
    return "\n".join(lines)


# --- the runner ------------------------------------------------------------------------

PANIC_GRACE = 10.0  # seconds to let a panic report finish when panic= does not reboot
SHUTDOWN_GRACE = 15.0  # seconds from "It's now safe to turn off your computer" to poweroff


@dataclass(frozen=True)
class RunResult:
    """How a boot ended. ``exit_code`` is what ``b2c-builder run`` exits with."""

    console: ConsoleResult
    accel: Accel
    command: tuple[str, ...]
    duration: float  # seconds from QEMU's start to its end
    timed_out: bool  # the --timeout expired and QEMU was killed
    stopped: str | None  # why the runner killed QEMU, if it did
    qemu_returncode: int | None  # None if QEMU could not be started
    qemu_stderr: tuple[str, ...] = ()  # its last lines

    @property
    def exit_code(self) -> int:
        status = self.console.status
        if status is not None:
            return status
        if self.console.statuses:
            return ExitCode.PROTOCOL_ERROR
        if self.console.panic is not None:
            return ExitCode.KERNEL_PANIC
        if self.timed_out:
            return ExitCode.TIMEOUT
        if self.qemu_returncode != 0 and self.stopped is None:
            return ExitCode.QEMU_FAILED
        return ExitCode.NO_STATUS

    def summary(self) -> str:
        """One sentence saying how the boot ended, for the log."""
        code = self.exit_code
        took = f"after {self.duration:.1f}s"
        if code == self.console.status:
            return f"the guest printed pipeline status {code} {took}"
        if code == ExitCode.PROTOCOL_ERROR:
            return f"console contract broken: {'; '.join(self.console.problems)}"
        if code == ExitCode.KERNEL_PANIC:
            assert self.console.panic is not None
            return f"kernel panic {took}: {self.console.panic.reason}"
        if code == ExitCode.TIMEOUT:
            opened = [s.name for s in self.console.sections if s.end is None]
            phase = f" (in phase {opened[-1]!r})" if opened else ""
            return f"timeout {took}: the guest was still running{phase}; QEMU was killed"
        if code == ExitCode.QEMU_FAILED:
            detail = self.qemu_stderr[-1] if self.qemu_stderr else "no message"
            return f"QEMU failed (exit code {self.qemu_returncode}): {detail}"
        return f"the guest ended {took} without printing a pipeline status"


@dataclass
class _Watchdog:
    """Kills QEMU at the deadline; the deadline can only move earlier."""

    proc: subprocess.Popen[bytes]
    deadline: float
    why: str | None = None
    _reason: str = "timeout"
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def shorten(self, seconds: float, reason: str) -> None:
        with self._lock:
            if time.monotonic() + seconds < self.deadline:
                self.deadline, self._reason = time.monotonic() + seconds, reason

    def watch(self) -> None:
        while not self._done.is_set() and self.proc.poll() is None:
            with self._lock:
                remaining, reason = self.deadline - time.monotonic(), self._reason
            if remaining <= 0:
                self.why = reason
                self.proc.kill()
                return
            self._done.wait(min(remaining, 0.5))

    def stop(self) -> None:
        self._done.set()


def echo_stdout(line: str) -> None:
    """Print one console line on stdout, at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _drain_stderr(stream: IO[bytes], tail: deque[str]) -> None:
    for raw in stream:
        line = raw.decode(errors="backslashreplace").rstrip()
        tail.append(line)
        log.warning("qemu: %s", line)


def boot(
    cfg: RunConfig,
    *,
    echo: Callable[[str], None] | None = echo_stdout,
    probe: Callable[[Arch], str | None] = kvm_unusable_reason,
) -> RunResult:
    """Boot ``cfg`` under QEMU, stream its console to ``echo`` and the serial log, and
    return how it ended. QEMU is killed at the timeout and on any exception."""
    binary = which(QEMU_ARCHES[cfg.arch].binary, reason=f"boot {cfg.arch} guests")
    accel = resolve_accel(cfg.accel, cfg.arch, probe=probe)
    with contextlib.ExitStack() as stack:
        initrd = stack.enter_context(_initrd(cfg))
        cmd = qemu_cmdline(cfg, accel, initrd)
        log.info("$ %s", shlex.join(cmd))
        serial_log = None
        if cfg.serial_log is not None:
            cfg.serial_log.parent.mkdir(parents=True, exist_ok=True)
            serial_log = stack.enter_context(cfg.serial_log.open("wb"))
        parser = console.ConsoleParser(cfg.nonce)
        tail: deque[str] = deque(maxlen=20)
        start = time.monotonic()
        try:
            # The one Popen outside run.run(): the console must be read while QEMU runs.
            proc = subprocess.Popen(  # noqa: S603 - an argument list, no shell
                [binary, *cmd[1:]],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            return RunResult(
                parser.result(), accel, tuple(cmd), 0.0, False, None, None, (str(exc),)
            )
        watchdog = _Watchdog(proc, start + cfg.timeout)
        threads = [
            threading.Thread(target=watchdog.watch, name="qemu-watchdog", daemon=True),
            threading.Thread(
                target=_drain_stderr, args=(proc.stderr, tail), name="qemu-stderr", daemon=True
            ),
        ]
        for thread in threads:
            thread.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                if serial_log is not None:
                    serial_log.write(raw)
                    serial_log.flush()
                line = raw.decode(errors="backslashreplace").rstrip("\r\n")
                if echo is not None:
                    echo(parser.display(line))
                for event in parser.feed(line):
                    _react(event, watchdog)
            returncode = proc.wait()
        finally:
            watchdog.stop()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for thread in threads:
                thread.join(timeout=5)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        duration = time.monotonic() - start
    result = RunResult(
        console=parser.result(),
        accel=accel,
        command=tuple(cmd),
        duration=duration,
        timed_out=watchdog.why == "timeout",
        stopped=watchdog.why,
        qemu_returncode=returncode,
        qemu_stderr=tuple(tail),
    )
    if result.console.forged:
        log.warning(
            "ignored %d console line(s) that look like the init's status or section lines but "
            "lack this boot's tag (printed by a container?): line(s) %s",
            len(result.console.forged),
            ", ".join(map(str, result.console.forged[:10])),
        )
    log.info("%s (exit code %d)", result.summary(), result.exit_code)
    return result


def _react(event: console.Event, watchdog: _Watchdog) -> None:
    match event:
        case console.Panic():
            watchdog.shorten(PANIC_GRACE, "kernel panic")
        case console.PanicEnd():
            watchdog.shorten(1.0, "kernel panic")
        case console.SafeToTurnOff():
            watchdog.shorten(SHUTDOWN_GRACE, "the guest did not power off")
        case _:
            pass
