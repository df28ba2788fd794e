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
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from b2c_builder.boot import console
from b2c_builder.boot.console import ConsoleResult, ExitCode
from b2c_builder.config import DEFAULT_BOOTFILE, Accel, Arch, Disk, Firmware, Machine, run_field
from b2c_builder.errors import BootError, ConfigError, ToolError
from b2c_builder.guest import options
from b2c_builder.guest.options import parse_cmdline
from b2c_builder.log import log
from b2c_builder.run import run, which

# Debian's ovmf: the firmware code, and the variable store template (used read-only: QEMU
# writes the guest's changes to a temporary overlay, snapshot=on).
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
_MEMORY_RE = re.compile(r"^\d+[KMGT]?$")


def check_settings(memory: str, cpus: int, timeout: float) -> None:
    """Raise ConfigError for a --memory QEMU cannot parse, fewer than one CPU or a timeout
    that is not positive (seconds)."""
    if not _MEMORY_RE.match(memory) or float(re.sub(r"[^\d.]", "", memory)) <= 0:
        raise ConfigError(f"--memory {memory!r} is not a QEMU memory size", hint="e.g. 2G or 512M")
    if cpus < 1:
        raise ConfigError("--cpus must be at least 1", hint="e.g. --cpus 2")
    if timeout <= 0:
        raise ConfigError("--timeout must be positive", hint="e.g. --timeout 600")


@dataclass(frozen=True)
class RunConfig:
    """Everything one boot depends on. The fields that are ``b2c-builder run`` options take
    their defaults from config.RUN_SETTINGS."""

    kernel: Path | None = None  # None: the firmware boots from --pxe or --cdrom
    initrds: tuple[Path, ...] = ()  # several are concatenated, as the kernel allows
    append: str = run_field("append")
    arch: Arch = run_field("arch")
    accel: Accel = run_field("accel")
    memory: str = run_field("memory")
    cpus: int = run_field("cpus")
    machine: str | None = run_field("machine")  # None: the architecture's (Arch.machine)
    disks: tuple[Disk, ...] = run_field("disks")
    timeout: float = run_field("timeout")  # seconds, from QEMU's start
    serial_log: Path | None = run_field("serial_log")
    qemu_args: tuple[str, ...] = run_field("qemu_args")  # e.g. ("-rtc", "base=...")
    # (host folder, 9p mount tag): shared read-write; files are created as QEMU's user.
    shares: tuple[tuple[Path, str], ...] = ()
    # Firmware boots (amd64): from QEMU's TFTP server (the NIC keeps its iPXE ROM), the
    # DHCP boot file being a path in pxe or an http:// URL; or from an ISO; under SeaBIOS
    # or OVMF.
    pxe: Path | None = run_field("pxe")
    bootfile: str = run_field("bootfile")
    cdrom: Path | None = run_field("cdrom")
    firmware: Firmware = run_field("firmware")
    # The per-boot nonce given to the guest in the job: only the init's lines tagged with it
    # count for the console contract (console.ConsoleParser). None: every line counts.
    nonce: str | None = None

    def __post_init__(self) -> None:
        self._check_boot_source()
        self._check_machine()
        paths = [("--kernel", self.kernel)] if self.kernel is not None else []
        for what, path in paths + [("--initrd", p) for p in self.initrds]:
            if not path.is_file():
                raise ConfigError(f"{what} {path} is not a file", hint="check the path")
        check_settings(self.memory, self.cpus, self.timeout)
        if self.nonce is not None and not re.fullmatch(r"[0-9a-f]{16,}", self.nonce):
            raise ValueError(f"a console nonce is 16+ lower-case hex digits, not {self.nonce!r}")
        self._check_cmdline_length()

    def _check_boot_source(self) -> None:
        """Exactly one of kernel, pxe, cdrom; firmware boots are amd64's; OVMF is there."""
        candidates: list[tuple[str, Path | None]] = [
            ("--kernel", self.kernel),
            ("--pxe", self.pxe),
            ("--cdrom", self.cdrom),
        ]
        sources = [name for name, value in candidates if value is not None]
        if len(sources) != 1:
            raise ConfigError(
                f"boot from one of --kernel, --pxe or --cdrom, not {' and '.join(sources)}"
                if sources
                else "nothing to boot",
                hint="--kernel FILE (with --initrd, --append), --pxe DIR or --cdrom FILE.iso",
            )
        if self.kernel is None and (self.initrds or self.append):
            raise ConfigError(
                f"--initrd and --append go with --kernel, not {sources[0]}",
                hint="with --pxe or --cdrom the boot entry names the initrds and command line",
            )
        firmware_boot = self.kernel is None or self.firmware is Firmware.uefi
        if firmware_boot and self.arch is not Arch.amd64:
            raise ConfigError(
                f"{sources[0]} and --firmware uefi boot amd64 guests only, not {self.arch}",
                hint=f"boot {self.arch} guests with --kernel",
            )
        if self.pxe is not None and not self.pxe.is_dir():
            raise ConfigError(f"--pxe {self.pxe} is not a folder", hint="the TFTP root")
        if self.pxe is not None and not self.bootfile.strip():
            raise ConfigError("--bootfile is empty", hint=f"e.g. {DEFAULT_BOOTFILE}")
        if self.cdrom is not None and not self.cdrom.is_file():
            raise ConfigError(f"--cdrom {self.cdrom} is not a file", hint="an ISO image")
        if self.firmware is Firmware.uefi:
            for part in (OVMF_CODE, OVMF_VARS):
                if not part.is_file():
                    raise ToolError(
                        f"Could not find {part}, which is required to boot under UEFI",
                        hint="install it: apt-get install ovmf",
                    )

    @property
    def qemu_machine(self) -> Machine:
        """The machine to boot (--machine, else the architecture's); ConfigError for one
        the architecture does not have."""
        return self.arch.machine(self.machine)

    def _check_machine(self) -> None:
        """A known machine; on microvm, no firmware boot: its qboot firmware boots only a
        -kernel (no PXE, no CD-ROM drive without an IDE/AHCI controller, no OVMF)."""
        if not self.qemu_machine.microvm:
            return
        refused = [
            name
            for name, given in (
                ("--pxe", self.pxe is not None),
                ("--cdrom", self.cdrom is not None),
                ("--firmware uefi", self.firmware is Firmware.uefi),
            )
            if given
        ]
        if refused:
            raise ConfigError(
                f"--machine microvm cannot boot with {' and '.join(refused)}: its minimal "
                "firmware (qboot) boots a --kernel only, and it has no PCI bus (no NIC "
                "option ROM, no CD-ROM controller, no OVMF)",
                hint=f"drop --machine microvm to use {refused[0]} on "
                f"{self.arch.facts.qemu_machine_name}, or boot --kernel with --machine microvm",
            )

    def _check_cmdline_length(self) -> None:
        """Refuse a command line the kernel would cut (an x86 one then boots to silence)."""
        if self.kernel is None:
            return
        # On microvm, room for the longest tsc_early_khz= run may add (guest_tsc_khz).
        tsc_khz = TSC_KHZ_RESERVE if self.qemu_machine.microvm else None
        added = added_by_run(self.append, self.arch, tsc_khz=tsc_khz)
        problem = options.check_length(self.append, self.arch, added=added, added_by=options.RUN)
        if problem is not None:
            raise ConfigError(f"--append: {problem.message}")


def _kernel_param_names(cmdline: str) -> set[str]:
    """Names of the kernel's own parameters in ``cmdline``: those before ``--`` (the rest is
    for init), split by the kernel's rules (options.parse_cmdline)."""
    names: set[str] = set()
    for name, value in parse_cmdline(cmdline):
        if name == "--" and value is None:
            break
        names.add(name)
    return names


def kernel_cmdline(append: str, console_device: str, *, tsc_khz: int | None = None) -> str:
    """``append`` with ``console=`` and ``panic=-1`` in front, unless it already sets them;
    with ``tsc_khz`` (kHz, see guest_tsc_khz), ``tsc_early_khz=`` too, unless it sets that.

    ``panic=-1`` makes a panicking kernel reboot at once, which ``-no-reboot`` turns into
    QEMU exiting: a panic never becomes a hang.
    """
    names = _kernel_param_names(append)
    wanted = [("console", console_device), ("panic", "-1")]
    if tsc_khz is not None:
        wanted.append((TSC_EARLY_KHZ, str(tsc_khz)))
    defaults = [f"{name}={value}" for name, value in wanted if name not in names]
    return " ".join([*defaults, append] if append.strip() else defaults)


def added_by_run(append: str, arch: Arch, *, tsc_khz: int | None = None) -> str:
    """What ``b2c-builder run`` adds to ``append`` on the kernel's command line (see
    kernel_cmdline), e.g. ``"console=ttyS0 panic=-1 "``; for the length check."""
    full = kernel_cmdline(append, arch.facts.qemu_console, tsc_khz=tsc_khz)
    return full[: len(full) - len(append)] if append.strip() else full


# QEMU's microvm machine has no HPET and no ACPI PM timer, so its kernel can calibrate the
# TSC against the PIT only. Under TCG that fails whenever the host is busy (6 of 6 boots
# with three busy loops on a 2-core host; 1 in about 13 on an idle one): the kernel prints
# "tsc: Marking TSC unstable due to could not calculate TSC khz" and hangs before /init.
# Under TCG the guest's TSC is the host's own (QEMU's cpu_get_host_ticks(): RDTSC on an x86
# host), so run gives the kernel the host's TSC frequency; tsc_early_khz= (the kernel's
# Documentation/admin-guide/kernel-parameters.txt) skips the calibration. Under KVM the
# kernel reads the frequency from kvmclock.
TSC_EARLY_KHZ = "tsc_early_khz"
TSC_KHZ_RESERVE = 9_999_999  # the widest value the length check makes room for (10 GHz)
CPUINFO = Path("/proc/cpuinfo")
_BOGOMIPS_RE = re.compile(r"^bogomips\s*:\s*(\d+(?:\.\d+)?)\s*$", re.MULTILINE | re.IGNORECASE)


def host_tsc_khz(cpuinfo: str) -> int | None:
    """The TSC frequency in kHz of an x86 host whose /proc/cpuinfo text is ``cpuinfo``:
    its first ``bogomips`` value times 500, rounded; None when there is none. Pure.

    An x86 kernel that knows its TSC frequency skips the delay-loop calibration and derives
    loops_per_jiffy from it (arch/x86/kernel/tsc.c: lpj = tsc_khz * 1000 / HZ); bogomips is
    lpj * HZ / 500000 with two decimals (init/calibrate.c), so this is tsc_khz within 5 kHz.
    """
    found = _BOGOMIPS_RE.search(cpuinfo)
    return round(float(found.group(1)) * 500) if found else None


def guest_tsc_khz(cfg: RunConfig, accel: Accel) -> int | None:
    """The TSC frequency (kHz) run gives a microvm guest under TCG on an x86_64 host (see
    TSC_EARLY_KHZ), read from /proc/cpuinfo; None for other boots, or with a warning when
    the host's frequency is unknown (that guest may hang calibrating its TSC)."""
    if not cfg.qemu_machine.microvm or accel is not Accel.tcg or cfg.kernel is None:
        return None
    khz = None
    if platform.machine() == "x86_64":
        with contextlib.suppress(OSError):
            khz = host_tsc_khz(CPUINFO.read_text(errors="replace"))
    if khz is None:
        log.warning(
            "--machine microvm under TCG: this host's TSC frequency is unknown (no x86 "
            "bogomips in /proc/cpuinfo), so the guest's kernel calibrates its TSC against "
            "the PIT alone and may hang before /init when the host is busy; "
            "add tsc_early_khz=<the host's TSC kHz> to --append, or use the default machine"
        )
    return khz


def _qemu_path(path: Path) -> str:
    """A path inside a QEMU option value: commas are doubled."""
    return str(path).replace(",", ",,")


def firmware_args(cfg: RunConfig) -> list[str]:
    """OVMF's code (read-only) and variables (a throw-away overlay) as pflash drives, for
    ``--firmware uefi``; nothing for SeaBIOS, QEMU's default."""
    if cfg.firmware is Firmware.bios:
        return []
    return [
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_qemu_path(OVMF_CODE)}",
        "-drive", f"if=pflash,format=raw,unit=1,snapshot=on,file={_qemu_path(OVMF_VARS)}",
    ]  # fmt: skip


# The virtio devices of the microvm machine: virtio-mmio transports (QEMU's virtio-*-device
# models), where the usual machines have PCI ones (ArchFacts.qemu_nic, qemu_rng, if=virtio,
# -virtfs). They have no option ROM.
MICROVM_NIC = "virtio-net-device"
MICROVM_RNG = "virtio-rng-device"
MICROVM_BLK = "virtio-blk-device"
MICROVM_9P = "virtio-9p-device"


def network_args(cfg: RunConfig) -> list[str]:
    """User networking and the NIC. With ``pxe`` QEMU's DHCP/TFTP server offers
    ``bootfile`` from that folder and the NIC, first in the boot order, keeps its iPXE
    option ROM (Debian's ipxe-qemu); otherwise ``romfile=`` drops the ROM, which costs a
    second of firmware time. On microvm the NIC is a virtio-mmio one (no ROM, no PXE)."""
    nic = MICROVM_NIC if cfg.qemu_machine.microvm else cfg.arch.facts.qemu_nic
    if cfg.pxe is None:
        no_rom = ",romfile=" if nic.endswith("-pci") else ""  # only PCI cards have a ROM
        return ["-netdev", "user,id=net0", "-device", f"{nic},netdev=net0{no_rom}"]
    bootfile = cfg.bootfile.replace(",", ",,")
    netdev = f"user,id=net0,tftp={_qemu_path(cfg.pxe)},bootfile={bootfile}"
    return ["-netdev", netdev, "-device", f"{nic},netdev=net0,bootindex=0"]


def qemu_cmdline(
    cfg: RunConfig, accel: Accel, initrd: Path | None, *, tsc_khz: int | None = None
) -> list[str]:
    """The QEMU command for ``cfg`` with a resolved ``accel`` and the (concatenated) initrd;
    ``tsc_khz`` (guest_tsc_khz) becomes the kernel's ``tsc_early_khz=``."""
    if accel is Accel.auto:
        raise ValueError("resolve --accel auto with resolve_accel() first")
    arch = cfg.arch.facts
    machine = cfg.qemu_machine
    cpu = arch.qemu_kvm_cpu if accel is Accel.kvm else arch.qemu_tcg_cpu
    cmd = [
        arch.qemu_binary,
        "-M", machine.qemu_option,
        "-accel", str(accel),
        "-cpu", cpu,
        "-m", cfg.memory,
        "-smp", str(cfg.cpus),
        "-nodefaults",
        "-display", "none",
        "-serial", "stdio",
        "-no-reboot",
    ]  # fmt: skip
    cmd += firmware_args(cfg)
    cmd += arch.qemu_firmware
    if cfg.kernel is not None:
        cmd += ["-kernel", str(cfg.kernel)]
        if initrd is not None:
            cmd += ["-initrd", str(initrd)]
        cmd += ["-append", kernel_cmdline(cfg.append, arch.qemu_console, tsc_khz=tsc_khz)]
    cmd += network_args(cfg)
    cmd += ["-device", MICROVM_RNG if machine.microvm else arch.qemu_rng]
    if cfg.cdrom is not None:
        cdrom = f"if=none,id=cd0,media=cdrom,readonly=on,format=raw,file={_qemu_path(cfg.cdrom)}"
        cmd += ["-drive", cdrom, "-device", "ide-cd,drive=cd0,bootindex=0"]
    cmd += disk_args(cfg)
    cmd += share_args(cfg)
    return cmd + list(cfg.qemu_args)


def disk_args(cfg: RunConfig) -> list[str]:
    """The --disk images as virtio block devices, in order (the guest's vda, vdb...):
    ``if=virtio`` (a PCI device, or CCW on s390x), or on microvm a drive without a
    device and its virtio-mmio block device (diskN ids)."""
    cmd: list[str] = []
    for n, disk in enumerate(cfg.disks):
        drive = f"file={_qemu_path(disk.path)},format={disk.format}"
        if cfg.qemu_machine.microvm:
            cmd += ["-drive", f"{drive},if=none,id=disk{n}"]
            cmd += ["-device", f"{MICROVM_BLK},drive=disk{n}"]
        else:
            cmd += ["-drive", f"{drive},if=virtio"]
    return cmd


def share_args(cfg: RunConfig) -> list[str]:
    """The shared folders as 9p devices, mount tag = fsdev id. security_model=none: QEMU
    creates files as the invoking user and never chowns them. -virtfs picks the PCI (or
    CCW) 9p device, which microvm has no bus for: there, -fsdev and a virtio-9p-device."""
    cmd: list[str] = []
    for path, tag in cfg.shares:
        fsdev = f"local,path={_qemu_path(path)},security_model=none,id={tag}"
        if cfg.qemu_machine.microvm:
            cmd += ["-fsdev", fsdev, "-device", f"{MICROVM_9P},fsdev={tag},mount_tag={tag}"]
        else:
            cmd += [
                "-virtfs",
                f"local,path={_qemu_path(path)},mount_tag={tag},security_model=none,id={tag}",
            ]
    return cmd


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


def _probe_command(arch: Arch, workdir: Path) -> tuple[list[str], bytes] | None:
    """A tiny boot under KVM that exits by itself, and what it must print; None for an
    architecture that has no such test boot (amd64 and arm64 have one)."""
    spec = arch.facts
    base = [
        spec.qemu_binary,
        "-M", spec.qemu_machine,
        "-accel", "kvm",
        "-cpu", spec.qemu_kvm_cpu,
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
    if arch is not Arch.arm64:
        return None
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
        probe = _probe_command(arch, Path(tmp))
        if probe is None:
            return f"there is no KVM test boot for {arch} guests (pass --accel kvm to use it)"
        cmd, expected = probe
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


def resolve_accel(accel: Accel, arch: Arch) -> Accel:
    """``kvm`` or ``tcg``. Only ``auto`` probes (a KVM test boot); the choice and its reason
    are logged."""
    if accel is not Accel.auto:
        return accel
    reason = kvm_unusable_reason(arch)
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


def _kvm_guess(arch: Arch) -> tuple[Accel, str]:
    """What ``--accel auto`` will likely pick, and why, without opening anything."""
    try:
        host: Arch | None = Arch.host()
    except ConfigError:
        host = None
    if host is not arch:
        return Accel.tcg, f"KVM cannot run {arch} guests on this {host or 'unknown'} host"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel.tcg, "/dev/kvm is missing or not writable"
    return Accel.kvm, "/dev/kvm is there"


def dry_run(cfg: RunConfig) -> str:
    """The command ``boot(cfg)`` would run, as shell text. It starts nothing: with
    ``--accel auto`` the KVM test boot is not run; the command shows the likely choice and a
    comment line says that the real run decides by that test boot."""
    lines = []
    accel = cfg.accel
    if accel is Accel.auto:
        accel, why = _kvm_guess(cfg.arch)
        lines.append(
            f"# --accel auto: shown with {accel} ({why}); the run itself boots a tiny KVM "
            "test guest first and falls back to tcg if that fails"
        )
    initrd: Path | None = cfg.initrds[0] if cfg.initrds else None
    if len(cfg.initrds) > 1:
        initrd = Path(tempfile.gettempdir()) / "b2c-run-XXXX" / "initrd.img"
        parts = " ".join(shlex.quote(str(p)) for p in cfg.initrds)
        lines.append(f"# {initrd} is the concatenation of: {parts}")
    lines.append(shlex.join(qemu_cmdline(cfg, accel, initrd, tsc_khz=guest_tsc_khz(cfg, accel))))
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
    qemu_returncode: int
    qemu_stderr: tuple[str, ...] = ()  # its last lines
    started: float = 0.0  # time.monotonic() when QEMU was started

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
    observe: Callable[[str], None] | None = None,
) -> RunResult:
    """Boot ``cfg`` under QEMU, stream its console to ``echo`` and the serial log, and
    return how it ended. QEMU is killed at the timeout and on any exception.

    Raises BootError when QEMU is missing or cannot be executed: there is no boot to report.

    ``echo`` gets each console line as a person should see it (the nonce's tag removed);
    ``observe``, when given, gets it raw first.
    """
    try:
        binary = which(cfg.arch.facts.qemu_binary, reason=f"boot {cfg.arch} guests")
    except ToolError as exc:
        raise BootError(exc.message, hint=exc.hint) from exc
    accel = resolve_accel(cfg.accel, cfg.arch)
    with contextlib.ExitStack() as stack:
        initrd = stack.enter_context(_initrd(cfg))
        cmd = qemu_cmdline(cfg, accel, initrd, tsc_khz=guest_tsc_khz(cfg, accel))
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
            raise BootError(
                f"cannot start {binary}: {exc.strerror or exc}",
                hint=f"check the QEMU installation: {binary} --version must run",
            ) from exc
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
                if observe is not None:
                    observe(line)  # raw: with the boot's tag, for parsers that check it
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
        started=start,
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
