"""Typed configuration: enums that carry behaviour, the per-architecture table, and the
settings tables of ``build`` and ``run`` with the frozen BuildConfig they define.

Every option of ``b2c-builder build`` and ``run`` is one ``Setting`` row of BUILD_SETTINGS or
RUN_SETTINGS: its config field, default, flag and help. The config classes (BuildConfig here,
launch.RunRequest, qemu.RunConfig) take their field defaults from it, cli.py its typer
options, settings.py the README tables.
"""

from __future__ import annotations

import dataclasses
import lzma
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from b2c_builder.errors import ConfigError

MiB = 1024 * 1024


class Arch(StrEnum):
    """A Debian architecture we can build for and boot. Everything that differs between
    architectures is a field of its ``ArchFacts`` in ``ARCHES``: ``Arch.arm64.facts.loader``."""

    amd64 = "amd64"
    arm64 = "arm64"
    riscv64 = "riscv64"
    ppc64el = "ppc64el"
    s390x = "s390x"

    @property
    def facts(self) -> ArchFacts:
        """This architecture's row of ARCHES."""
        return ARCHES[self]

    def machine(self, name: str | None) -> Machine:
        """The QEMU machine ``run --machine NAME`` boots: None or the default machine's name
        give the usual one (ArchFacts.qemu_machine, PCI devices), ``microvm`` the light one
        where ArchFacts.qemu_microvm allows it. Raises ConfigError, naming the choices, for
        anything else."""
        facts = self.facts
        if name is None or name == facts.qemu_machine_name:
            return Machine(facts.qemu_machine_name, facts.qemu_machine)
        if name == MICROVM and facts.qemu_microvm:
            return Machine(MICROVM, MICROVM_OPTIONS, microvm=True)
        choices = [facts.qemu_machine_name, *([MICROVM] if facts.qemu_microvm else [])]
        why = (
            "QEMU has a microvm machine for x86 guests only"
            if name == MICROVM
            else f"the choices are {' or '.join(choices)}"
        )
        raise ConfigError(
            f"--machine {name!r} cannot boot {self} guests: {why}",
            hint=f"--machine {' or --machine '.join(choices)} (default {choices[0]})",
        )

    @classmethod
    def host(cls) -> Arch:
        """The architecture of this machine; ConfigError when it is none of ours."""
        machine = os.uname().machine
        for arch, facts in ARCHES.items():
            if facts.uname_machine == machine:
                return arch
        raise ConfigError(f"unsupported host machine {machine!r}", hint="pass --arch")


@dataclass(frozen=True)
class ArchFacts:
    """What differs between architectures: one field per fact, with where it comes from.

    A new fact is a new field here and a value in each row of ARCHES; code reads it as
    ``arch.facts.<field>``.
    """

    uname_machine: str  # os.uname().machine of such a host (the kernel's UTS_MACHINE)
    multiarch: str  # Debian's multiarch tuple: /usr/lib/<multiarch>/ holds the libraries
    loader: str  # the ELF interpreter at its ABI path (PT_INTERP of Debian's binaries)
    elf_machine: str  # e_machine, as pyelftools names it
    # Top-level folders that are symlinks into usr/ on a merged-/usr Debian system (and in
    # our staging tree and image): those where the ABI puts files, so none dangles.
    usrmerge: tuple[str, ...]
    xz_bcj: int | None  # the xz branch filter the kernel's decoder supports (lib/xz/)
    kconfig_symbol: str  # the symbol every .config for it sets (arch/<arch>/Kconfig)
    # COMMAND_LINE_SIZE: the kernel's buffer for its command line, terminating NUL
    # included, so a line may hold one byte less (riscv64's would be 1024).
    command_line_size: int
    qemu_binary: str  # the QEMU system emulator
    qemu_package: str  # the Debian package that ships qemu_binary
    qemu_machine: str  # -M
    qemu_console: str  # the board's serial console device, as console= names it
    qemu_nic: str  # the virtio NIC device (-pci ones get romfile=: no option ROM)
    goarch: str  # GOARCH of Go builds (the trimmed podman)
    # The GOARCH-specific level variables, pinned so that the host cannot change them.
    goarch_env: tuple[tuple[str, str], ...]
    # The C compiler for cgo code of this architecture on an amd64 host (Debian's
    # gcc-<triplet> cross packages install it under this name).
    cross_cc: str
    # Debian's kernel: the metapackage that depends on the current linux-image-<release>,
    # and where that package puts the bootable image ({release}: the kernel's `uname -r`).
    kernel_package: str
    kernel_image: str
    little_endian: bool = True  # the ELF byte order of its programs (EI_DATA)
    qemu_rng: str = "virtio-rng-pci"  # the virtio entropy device b2c-builder run adds
    qemu_tcg_cpu: str = "max"  # -cpu under TCG: every instruction TCG can emulate
    qemu_kvm_cpu: str = "host"  # -cpu under KVM
    # QEMU options that choose the firmware a -kernel boot runs first (none: the board's
    # default, or none at all).
    qemu_firmware: tuple[str, ...] = ()
    # QEMU's microvm machine can boot it (``run --machine microvm``): x86 only in QEMU.
    qemu_microvm: bool = False

    @property
    def qemu_machine_name(self) -> str:
        """The name of qemu_machine, without its properties: ``virt`` for
        ``virt,gic-version=max``."""
        return self.qemu_machine.split(",", 1)[0]


# QEMU's microvm machine (docs/system/i386/microvm.rst): no PCI bus, virtio devices on
# virtio-mmio transports described to the guest in ACPI (HID LNRO0005; Debian's kernel has
# CONFIG_VIRTIO_MMIO=m and no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), qboot as firmware, the
# legacy ISA serial port for ttyS0. auto-kernel-cmdline=off: QEMU would otherwise append a
# virtio_mmio.device= parameter per device to the kernel's command line, which that kernel
# cannot use (ACPI describes the devices) and which would count against its length.
# The legacy timers and interrupt controller stay (pit=off,pic=off,rtc=off: Debian's kernel
# hung before /init under TCG, 2 boots of 2); x-option-roms=off saved nothing measurable.
MICROVM = "microvm"
MICROVM_OPTIONS = "microvm,auto-kernel-cmdline=off"


@dataclass(frozen=True)
class Machine:
    """A QEMU machine ``run`` boots (ArchFacts.machine): its name as ``--machine`` and QEMU
    spell it, the ``-M`` value, and whether it is microvm (virtio-mmio devices,
    ``virtio-*-device``, instead of the PCI ones; no PXE, ISO or UEFI boot)."""

    name: str  # q35, virt, pseries, s390-ccw-virtio, microvm
    qemu_option: str  # -M
    microvm: bool = False


ARCHES: Mapping[Arch, ArchFacts] = MappingProxyType(
    {
        Arch.amd64: ArchFacts(
            uname_machine="x86_64",
            multiarch="x86_64-linux-gnu",
            loader="/lib64/ld-linux-x86-64.so.2",
            elf_machine="EM_X86_64",
            usrmerge=("bin", "sbin", "lib", "lib64"),
            goarch="amd64",
            goarch_env=(("GOAMD64", "v1"),),
            cross_cc="x86_64-linux-gnu-gcc",
            xz_bcj=lzma.FILTER_X86,
            kconfig_symbol="X86_64",
            # arch/x86/include/asm/setup.h (the bzImage setup header's cmdline_size field
            # says 2047 in Debian's kernels).
            command_line_size=2048,
            qemu_binary="qemu-system-x86_64",
            qemu_package="qemu-system-x86",
            qemu_machine="q35",
            qemu_console="ttyS0",
            qemu_nic="virtio-net-pci",
            qemu_microvm=True,
            # Without ERMS and FSRM ("fast" REP MOVSB/STOSB): Linux then copies and clears
            # memory with unrolled moves or REP MOVSQ/STOSQ instead of REP MOVSB, which TCG
            # runs one byte per translated-block iteration (target/i386/tcg/translate.c,
            # gen_repz). Measured (4 interleaved boots each): the release's initramfs (70 MB)
            # unpacks in 0.27 s instead of 0.42 s, /init starts 0.27 s earlier, and a
            # registry image's first output comes 0.55 s earlier (medians); the busybox-only
            # floor's, 0.05 s earlier.
            qemu_tcg_cpu="max,erms=off,fsrm=off",
            kernel_package="linux-image-amd64",
            kernel_image="boot/vmlinuz-{release}",  # a bzImage
        ),
        Arch.arm64: ArchFacts(
            uname_machine="aarch64",
            multiarch="aarch64-linux-gnu",
            loader="/lib/ld-linux-aarch64.so.1",
            elf_machine="EM_AARCH64",
            usrmerge=("bin", "sbin", "lib"),  # no lib64: the loader is in /lib
            goarch="arm64",
            goarch_env=(),
            cross_cc="aarch64-linux-gnu-gcc",
            xz_bcj=None,
            kconfig_symbol="ARM64",
            # arch/arm64/include/uapi/asm/setup.h; measured on Debian's 6.12 arm64 kernel:
            # of a 2048-byte line it keeps 2047 bytes.
            command_line_size=2048,
            qemu_binary="qemu-system-aarch64",
            qemu_package="qemu-system-arm",
            qemu_machine="virt,gic-version=max",
            qemu_console="ttyAMA0",
            qemu_nic="virtio-net-pci",
            kernel_package="linux-image-arm64",
            kernel_image="boot/vmlinuz-{release}",  # a gzip-compressed Image
        ),
        Arch.riscv64: ArchFacts(
            uname_machine="riscv64",
            multiarch="riscv64-linux-gnu",
            # The RISC-V psABI's loader name for LP64D (doubles in FP registers), which
            # Debian's riscv64 port uses.
            loader="/lib/ld-linux-riscv64-lp64d.so.1",
            elf_machine="EM_RISCV",
            usrmerge=("bin", "sbin", "lib"),  # no lib64: the loader is in /lib
            goarch="riscv64",
            # Go's RISC-V profile level: rva20u64, its default and the base of Debian's port.
            goarch_env=(("GORISCV64", "rva20u64"),),
            cross_cc="riscv64-linux-gnu-gcc",
            # lib/xz decodes a RISC-V BCJ filter since Linux 6.11, but Python's lzma module
            # writes only the x86, PowerPC, IA-64, ARM, ARM-Thumb and SPARC ones.
            xz_bcj=None,
            kconfig_symbol="RISCV",
            # arch/riscv/include/uapi/asm/setup.h (1024 since Linux 5.13; 6.12 keeps it).
            command_line_size=1024,
            # Debian's qemu-system-misc (bookworm) ships it; since trixie it is in
            # qemu-system-riscv, which qemu-system-misc depends on.
            qemu_binary="qemu-system-riscv64",
            qemu_package="qemu-system-misc",
            qemu_machine="virt",
            # The virt board's NS16550A UART, which the kernel names ttyS0.
            qemu_console="ttyS0",
            qemu_nic="virtio-net-pci",
            # QEMU 7.2 (bookworm) has no "max" RISC-V CPU; rv64 is the virt board's default
            # (RV64GC and the extensions QEMU enables by default).
            qemu_tcg_cpu="rv64",
            # OpenSBI (fw_dynamic), the SBI firmware the kernel calls to reach M-mode: QEMU's
            # "default" is /usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin, built by
            # Debian (qemu-system-data in bookworm; trixie links it to the opensbi package).
            qemu_firmware=("-bios", "default"),
            kernel_package="linux-image-riscv64",
            # The Image (with its EFI stub), uncompressed: QEMU's riscv loader takes an ELF,
            # a U-Boot image or a raw Image, not a gzip file.
            kernel_image="boot/vmlinux-{release}",
        ),
        Arch.ppc64el: ArchFacts(
            uname_machine="ppc64le",
            multiarch="powerpc64le-linux-gnu",
            loader="/lib64/ld64.so.2",  # the ELFv2 ABI's loader
            elf_machine="EM_PPC64",
            usrmerge=("bin", "sbin", "lib", "lib64"),
            goarch="ppc64le",
            goarch_env=(("GOPPC64", "power8"),),  # Go's default, the base of Debian's port
            cross_cc="powerpc64le-linux-gnu-gcc",
            # lib/xz's PowerPC BCJ filter is for big-endian instructions.
            xz_bcj=None,
            # Also set on big-endian ppc64 configs, which Debian's ports do not ship.
            kconfig_symbol="PPC64",
            # Measured on Debian's 6.12 ppc64el kernel under pseries: of a 5000-byte line
            # /proc/cmdline keeps 2047 bytes.
            command_line_size=2048,
            qemu_binary="qemu-system-ppc64",
            qemu_package="qemu-system-ppc",
            # SLOF (Debian's qemu-system-data, or qemu-slof) loads the kernel.
            qemu_machine="pseries",
            qemu_console="hvc0",  # the sPAPR virtual terminal that -serial stdio becomes
            qemu_nic="virtio-net-pci",
            # QEMU has no "max" PowerPC CPU; POWER9 is emulated by TCG since QEMU 3.x and
            # runs Debian's POWER8 baseline.
            qemu_tcg_cpu="power9",
            kernel_package="linux-image-powerpc64le",
            kernel_image="boot/vmlinux-{release}",  # an ELF file
        ),
        Arch.s390x: ArchFacts(
            uname_machine="s390x",
            multiarch="s390x-linux-gnu",
            loader="/lib/ld64.so.1",
            elf_machine="EM_S390",
            little_endian=False,
            usrmerge=("bin", "sbin", "lib"),  # no lib64: the loader is in /lib
            goarch="s390x",
            goarch_env=(),
            cross_cc="s390x-linux-gnu-gcc",
            xz_bcj=None,  # xz has no branch filter for s390x
            kconfig_symbol="S390",
            # CONFIG_COMMAND_LINE_SIZE (4096 in Debian's config), which the image's parmarea
            # announces as max_command_line_size; QEMU refuses a longer -append (NUL
            # included) and a 4086-byte line reaches /proc/cmdline whole.
            command_line_size=4096,
            # Debian's qemu-system-misc (bookworm) ships it; since trixie it is in
            # qemu-system-s390x, which qemu-system-misc depends on.
            qemu_binary="qemu-system-s390x",
            qemu_package="qemu-system-misc",
            qemu_machine="s390-ccw-virtio",
            # The SCLP VT220 console that -serial stdio becomes on this machine.
            qemu_console="ttysclp0",
            # Devices on the channel subsystem (CCW), s390x's bus: no PCI here.
            qemu_nic="virtio-net-ccw",
            qemu_rng="virtio-rng-ccw",
            # Without the vector facility: Linux 6.8+ computes IP checksums with vector
            # instructions (arch/s390/lib/csum-partial.c), and under QEMU 7.2's TCG (bookworm)
            # trixie's kernel then never gets a TCP connection through (DHCP works, image
            # pulls time out); with vx=off it uses its scalar code and pulls work.
            qemu_tcg_cpu="max,vx=off",
            kernel_package="linux-image-s390x",
            kernel_image="boot/vmlinuz-{release}",  # the decompressor and a zstd payload
        ),
    }
)


class Compression(StrEnum):
    zstd = "zstd"
    xz = "xz"
    gzip = "gzip"
    none = "none"

    def extension(self) -> str:
        return {
            Compression.zstd: ".zst",
            Compression.xz: ".xz",
            Compression.gzip: ".gz",
            Compression.none: "",
        }[self]


class Accel(StrEnum):
    """``run --accel``: ``auto`` uses KVM when a test boot shows it works, else TCG."""

    auto = "auto"
    kvm = "kvm"
    tcg = "tcg"


class Firmware(StrEnum):
    """``run --firmware``: what the guest boots with (amd64)."""

    bios = "bios"  # SeaBIOS, QEMU's default
    uefi = "uefi"  # OVMF, from Debian's ovmf package


QCOW2_MAGIC = b"QFI\xfb"


@dataclass(frozen=True)
class Disk:
    """``run --disk``: a disk image attached as a virtio block device."""

    path: Path
    format: str = "raw"  # "raw" or "qcow2"

    @classmethod
    def detect(cls, path: Path) -> Disk:
        """A disk whose format is read from its first bytes (qcow2 magic, else raw).
        Raises ConfigError when the file cannot be read."""
        try:
            with path.open("rb") as image:
                magic = image.read(len(QCOW2_MAGIC))
        except OSError as exc:
            raise ConfigError(
                f"--disk {path}: {exc.strerror}", hint="pass an existing disk image file"
            ) from exc
        return cls(path, "qcow2" if magic == QCOW2_MAGIC else "raw")


class PodmanVariant(StrEnum):
    """Where the image's /usr/bin/podman comes from."""

    debian = "debian"  # the binary of Debian's podman package
    trimmed = (
        "trimmed"  # compiled from Debian's source package, trimmed (b2c_builder/build/podman.py)
    )


DEFAULT_SUITE = "trixie"
DEFAULT_MAX_SIZE = 20 * MiB
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEFAULT_BOOTFILE = "pxelinux.0"
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/b2c-builder, else ~/.cache/b2c-builder."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "b2c-builder"


def source_date_epoch_from_env() -> int | None:
    """$SOURCE_DATE_EPOCH as a number (None when unset or empty); ConfigError when it is
    not one (see parse_epoch)."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    return parse_epoch(value, "SOURCE_DATE_EPOCH")


MAX_EPOCH = 0xFFFFFFFF  # cpio newc stores mtimes in 32 bits


def parse_epoch(value: str, what: str) -> int:
    """Seconds since 1970 from ``value``; ConfigError naming ``what`` (an option or variable)
    for anything but ASCII digits, or a time after 2106."""
    if not (value.isascii() and value.isdigit()):
        raise ConfigError(
            f"{what} must be a number of seconds since 1970, not {value!r}",
            hint="e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)",
        )
    if int(value) > MAX_EPOCH:
        raise ConfigError(
            f"{what} {value} is after 2106: cpio archives store times in 32 bits",
            hint=f"use a date up to {MAX_EPOCH}",
        )
    return int(value)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'20MiB', '20MB', '20M', '512KiB', '1048576' -> bytes: every unit is binary (MB is
    MiB), as --max-size's help says."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ConfigError(f"cannot read {text!r} as a size", hint="e.g. 20MiB, 512KiB, 1048576")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    factor = {"B": 1, "K": 1024, "M": MiB, "G": 1024 * MiB}[unit[0]]
    return int(number * factor)


def format_size(size: int) -> str:
    """Bytes as parse_size reads them back: ``20MiB``, ``512KiB``, ``1000``."""
    for unit, factor in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _check_folder(path: Path, option: str) -> None:
    """``path`` is a writable folder, or can become one: checked before any download."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{option} {path}: {existing} exists and is not a directory",
            hint=f"pass a directory to {option}",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option} {path}: cannot write in {existing}",
            hint=f"pass a directory you can write to {option}",
        )


def make_folder(path: Path, option: str) -> None:
    """Create the folder ``path`` given to ``option`` (and its parents) if it is missing,
    before any download: ConfigError naming both when the file system refuses, which
    _check_folder cannot foresee (a pseudo file system such as /proc, a read-only mount)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{option} {path}: cannot create this folder: {exc.strerror or exc}",
            hint=f"pass {option} a folder on a disk you can write to (or leave out {option})",
        ) from exc


# --- the settings of build and run --------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One option of ``b2c-builder build`` or ``run``, stated once: the config field it sets,
    that field's default, the command-line flag and the help (one text for ``--help`` and
    the README).

    On the command line every option but a switch defaults to "not given" (None), which
    leaves the config field at its default. A given value goes through ``parse`` (each value
    of a repeatable option, which the config gets as a tuple).
    """

    dest: str  # the config field it sets
    value_type: type[Any]  # one value as the command line reads it (typer parses it)
    help: str
    default: Any = None  # the config field's default; a repeatable option's is ()
    factory: Callable[[], Any] | None = None  # instead of default: computed at each use
    parse: Callable[[Any], Any] | None = None  # one command-line value -> the config's
    flag: str = ""  # default --<dest, - for _>; "--on/--off" for a switch with two flags
    metavar: str = ""  # how a value is written in --help and the README
    repeatable: bool = False
    # A repeatable option whose values the config gets as one value, joined by this
    # separator (--append: the command line's words), instead of a tuple.
    join: str | None = None
    argument: bool = False  # the words after --, not a flag
    shown_default: str = ""  # the default in words: computed at each use, or spelled so
    panel: str | None = None  # the --help panel that lists it

    @property
    def flags(self) -> str:
        """The flag(s) as typer declares them: ``--max-size``, ``--dry-run``,
        ``--verify-signature/--no-verify-signature``."""
        return self.flag or "--" + self.dest.replace("_", "-")

    @property
    def param(self) -> str:
        """The Python parameter name of the option (its first flag's)."""
        return self.flags.split("/")[0].removeprefix("--").replace("-", "_")

    @property
    def switch(self) -> bool:
        """A flag without a value: on or off."""
        return self.value_type is bool

    @property
    def description(self) -> str:
        """The help, and whether the option may be given several times."""
        if not self.repeatable or self.argument:
            return self.help
        if self.join == " ":
            return self.help + " Repeatable: the values are joined with spaces."
        return self.help + " Repeatable."

    @property
    def cli_default(self) -> Any:
        """What the command line defaults to: the config default when the command line spells
        it as is (a switch, a plain value), else None, "not given", which leaves the config
        class to compute or parse its default."""
        if self.switch:
            return self.default
        if self.shown_default or self.parse or self.factory or self.repeatable:
            return None
        return self.default

    @property
    def shown(self) -> str:
        """The default as ``--help`` and the README show it ('' when there is none to show)."""
        value = self.default
        if self.shown_default or self.repeatable or value is None or value == "":
            return self.shown_default
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    @property
    def config_default(self) -> Any:
        """The config field's default (a repeatable option's is the empty tuple, unless its
        values are joined)."""
        return () if self.repeatable and self.join is None else self.default

    def config_value(self, given: Any) -> Any:
        """The config field's value for what the command line gave (not None)."""
        parse = self.parse or (lambda value: value)
        if self.repeatable:
            values = tuple(parse(value) for value in given)
            return values if self.join is None else self.join.join(values)
        return parse(given)


class SettingsTable:
    """The settings of one command, in ``--help`` and README order, by config field."""

    def __init__(self, command: str, settings: Sequence[Setting]) -> None:
        self.command = command
        self.settings = tuple(settings)
        self._by_dest = {setting.dest: setting for setting in self.settings}
        if len(self._by_dest) != len(self.settings):
            raise ValueError(f"{command}: two settings set the same config field")

    def __iter__(self) -> Iterator[Setting]:
        return iter(self.settings)

    def __getitem__(self, dest: str) -> Setting:
        return self._by_dest[dest]

    def field(self, dest: str) -> Any:
        """The dataclass field of setting ``dest``, with its default:
        ``suite: str = BUILD_SETTINGS.field("suite")``. Raises KeyError for no such setting."""
        setting = self[dest]
        if setting.factory is not None:
            return dataclasses.field(default_factory=setting.factory)
        return dataclasses.field(default=setting.config_default)

    def config_values(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The config fields the command line set: ``given`` maps each setting's dest to what
        typer read (None: not given; a switch is always given). Values are parsed (a
        ConfigError from a parser propagates); settings not given are left out, so the
        config class's defaults apply."""
        return {
            setting.dest: setting.config_value(given[setting.dest])
            for setting in self.settings
            if given[setting.dest] is not None
        }


def _build_epoch(value: str) -> int:
    return parse_epoch(value, "--source-date-epoch")


_XDG_CACHE = "$XDG_CACHE_HOME/b2c-builder, else ~/.cache/b2c-builder"

BUILD_SETTINGS = SettingsTable(
    "build",
    [
        Setting("suite", str, "Debian codename.", DEFAULT_SUITE, metavar="CODENAME"),
        Setting("arch", Arch, "Debian architecture.", Arch.amd64),
        Setting("compression", Compression, "Image compression.", Compression.zstd),
        Setting(
            "output",
            Path,
            "Output folder; nothing is written there unless the whole build succeeds.",
            Path("releases"),
            metavar="DIR",
        ),
        Setting(
            "mirror",
            str,
            "Debian mirror URL.",
            shown_default="the first Debian mirror in the host's apt sources (one-line and deb822)",
            metavar="URL",
        ),
        Setting(
            "keyring",
            Path,
            "OpenPGP keyring for InRelease (gpgv).",
            DEFAULT_KEYRING,
            metavar="FILE",
        ),
        Setting(
            "verify_signature",
            bool,
            "Check InRelease's signature. Turning it off is unsafe (loudly warned; the "
            "hashes are still checked).",
            True,
            flag="--verify-signature/--no-verify-signature",
        ),
        Setting(
            "cache_dir",
            Path,
            "Download cache folder (files keyed by SHA-256).",
            factory=default_cache_dir,
            shown_default=_XDG_CACHE,
            metavar="DIR",
        ),
        Setting(
            "extra_packages",
            str,
            "Add a package's programs (/usr/bin, /usr/sbin, /usr/libexec) and their libraries.",
            flag="--extra-package",
            repeatable=True,
            metavar="NAME",
        ),
        Setting(
            "max_size",
            str,
            "Fail above this compressed size, in bytes or binary units: K, KB or KiB = 1024 "
            "bytes, M, MB or MiB = 1024 KiB, G, GB or GiB = 1024 MiB (so 20MB is 20MiB, "
            "20971520 bytes).",
            DEFAULT_MAX_SIZE,
            parse=parse_size,
            shown_default=format_size(DEFAULT_MAX_SIZE),
            metavar="SIZE",
        ),
        Setting(
            "source_date_epoch",
            str,
            "Clamp every mtime to this time (seconds since 1970).",
            factory=source_date_epoch_from_env,
            parse=_build_epoch,
            shown_default="$SOURCE_DATE_EPOCH, else the signed Release file's date",
            metavar="SECONDS",
        ),
        Setting(
            "kernel_package",
            str,
            "Also write this Debian kernel (e.g. linux-image-amd64) and a modules archive.",
            metavar="NAME",
        ),
        Setting(
            "modules_dir",
            Path,
            "Build the modules archive from this lib/modules/<version> tree instead.",
            metavar="DIR",
        ),
        Setting(
            "modules",
            str,
            "Add a kernel module (and its dependencies) to the default set.",
            flag="--module",
            repeatable=True,
            metavar="NAME",
        ),
        Setting(
            "default_cmdline",
            str,
            "Command line applied before /proc/cmdline (the boot loader's wins).",
            "",
            metavar="CMDLINE",
        ),
        Setting(
            "podman",
            PodmanVariant,
            "debian: Debian's podman binary; trimmed: compiled from Debian's source package, "
            "trimmed of unused features (cached; the first build takes minutes).",
            PodmanVariant.debian,
        ),
    ],
)


def build_field(dest: str) -> Any:
    """``BUILD_SETTINGS.field(dest)``: a config field with the default of setting ``dest``."""
    return BUILD_SETTINGS.field(dest)


@dataclass(frozen=True)
class BuildConfig:
    """Everything one build depends on: one field per setting of BUILD_SETTINGS, which gives
    its default (``mirror`` None: the host's apt sources; ``source_date_epoch`` None: the
    signed Release file's date). Raises ConfigError, with a hint, for a bad value."""

    suite: str = build_field("suite")
    arch: Arch = build_field("arch")
    compression: Compression = build_field("compression")
    output: Path = build_field("output")
    mirror: str | None = build_field("mirror")
    keyring: Path = build_field("keyring")
    verify_signature: bool = build_field("verify_signature")
    cache_dir: Path = build_field("cache_dir")
    extra_packages: tuple[str, ...] = build_field("extra_packages")
    max_size: int = build_field("max_size")
    source_date_epoch: int | None = build_field("source_date_epoch")
    kernel_package: str | None = build_field("kernel_package")
    modules_dir: Path | None = build_field("modules_dir")
    modules: tuple[str, ...] = build_field("modules")
    default_cmdline: str = build_field("default_cmdline")
    podman: PodmanVariant = build_field("podman")

    def __post_init__(self) -> None:
        if not SUITE_RE.match(self.suite):
            raise ConfigError(
                f"--suite {self.suite!r} is not a Debian codename",
                hint="use a codename such as trixie or bookworm",
            )
        if self.max_size <= 0:
            raise ConfigError("--max-size must be positive", hint="e.g. --max-size 20MiB")
        if self.kernel_package and self.modules_dir:
            raise ConfigError(
                "--kernel-package and --modules-dir are exclusive",
                hint="pick the Debian package or a directory of modules, not both",
            )
        if self.modules_dir is not None and not self.modules_dir.is_dir():
            raise ConfigError(
                f"--modules-dir {self.modules_dir} is not a directory",
                hint="point it at a lib/modules/<version> tree",
            )
        _check_folder(self.output, "--output")
        _check_folder(self.output.absolute().parent, "--output")  # the staging folder goes there
        _check_folder(self.cache_dir, "--cache-dir")
        if self.verify_signature and not self.keyring.is_file():
            raise ConfigError(
                f"keyring {self.keyring} not found",
                hint="apt-get install debian-archive-keyring, or pass --keyring FILE",
            )

    def image_name(self) -> str:
        return f"initramfs.linux_{self.arch}.cpio{self.compression.extension()}"


_FIRMWARE_BOOTS = "Firmware boots (PXE, ISO)"

RUN_SETTINGS = SettingsTable(
    "run",
    [
        Setting(
            "kernel",
            Path,
            "The kernel image (bzImage / Image).",
            shown_default="the newest linux-*.linux_<arch> in --releases",
            metavar="FILE",
        ),
        Setting(
            "initrds",
            Path,
            "An initramfs; several are concatenated, in order (image, modules).",
            flag="--initrd",
            repeatable=True,
            shown_default="the release image + the modules archive matching the kernel",
            metavar="FILE",
        ),
        Setting(
            "modules_dir",
            Path,
            "Modules from this lib/modules/<release> tree (an archive built and cached).",
            metavar="DIR",
        ),
        Setting(
            "images",
            str,
            "A container image, one pipeline container each, in order: docker://REF, "
            "oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE, "
            "containers-storage:NAME.",
            flag="--image",
            repeatable=True,
            metavar="IMAGE",
        ),
        Setting(
            "shares",
            str,
            "A folder shared read-write (9p) with the guest and the image containers; the "
            "first one is their working directory.",
            flag="--share",
            repeatable=True,
            metavar="HOST_DIR[:GUEST_DIR]",
        ),
        Setting(
            "junit",
            Path,
            "Write a JUnit XML report (KTAP/TAP results become testcases).",
            metavar="FILE",
        ),
        Setting(
            "releases",
            Path,
            "Where the default kernel and initrds are looked for.",
            Path("releases"),
            metavar="DIR",
        ),
        Setting(
            "append",
            str,
            "Raw kernel command-line parameters.",
            "",
            metavar="CMDLINE",
            repeatable=True,
            join=" ",
        ),
        Setting("arch", Arch, "Guest architecture.", Arch.amd64),
        Setting("accel", Accel, "auto probes /dev/kvm for real and falls back to tcg.", Accel.auto),
        Setting("memory", str, "Guest memory, as QEMU's -m.", "2G", metavar="SIZE"),
        # One vCPU: with several, multi-threaded TCG races the kernel's int3-based code
        # patching (seen here: 'Oops: int3' in secure_tcp_seq_and_ts_off in 1 boot of 2
        # with -smp 2).
        Setting("cpus", int, "Guest CPUs (more than 1 is unstable under TCG).", 1, metavar="N"),
        Setting(
            "machine",
            str,
            "QEMU machine type. microvm (amd64): no PCI bus and a minimal firmware, virtio "
            "devices on virtio-mmio; the kernel starts 0.9 s sooner (see the README), no "
            "--pxe, --cdrom or --firmware uefi.",
            shown_default="the architecture's: "
            + ", ".join(f"{facts.qemu_machine_name} ({arch})" for arch, facts in ARCHES.items()),
            metavar="NAME",
        ),
        Setting(
            "disks",
            Path,
            "A disk image (raw or qcow2, read from its first bytes). b2c.cache_device auto or "
            "reset needs one: run refuses them without a disk.",
            flag="--disk",
            parse=Disk.detect,
            repeatable=True,
            metavar="FILE",
        ),
        Setting(
            "timeout",
            float,
            "Seconds from QEMU's start before the guest is killed.",
            600.0,
            metavar="SECONDS",
        ),
        Setting("serial_log", Path, "Also write the serial console here.", metavar="FILE"),
        Setting(
            "qemu_args",
            str,
            "An extra QEMU argument, e.g. -rtc, appended as is.",
            flag="--qemu-arg",
            repeatable=True,
            metavar="ARG",
        ),
        Setting(
            "cache_dir",
            Path,
            "Cache for --modules-dir archives and uncompressed initrds.",
            factory=default_cache_dir,
            shown_default=_XDG_CACHE,
            metavar="DIR",
        ),
        Setting("dry_run", bool, "Print the QEMU command and exit.", False, flag="--dry-run"),
        Setting(
            "check",
            bool,
            "Refuse, before booting, a command line /init would reject (check-cmdline's "
            "errors); --no-check boots it anyway, to see the guest's own handling.",
            True,
            flag="--check/--no-check",
        ),
        Setting(
            "pxe",
            Path,
            "Boot from the network: QEMU's DHCP/TFTP server serves this folder, the NIC "
            "keeps its iPXE ROM (amd64; instead of --kernel).",
            metavar="DIR",
            panel=_FIRMWARE_BOOTS,
        ),
        Setting(
            "bootfile",
            str,
            "With --pxe: the DHCP boot file, a path in the folder or an http:// URL.",
            DEFAULT_BOOTFILE,
            metavar="FILE",
            panel=_FIRMWARE_BOOTS,
        ),
        Setting(
            "cdrom",
            Path,
            "Boot this ISO image (amd64; instead of --kernel).",
            metavar="FILE",
            panel=_FIRMWARE_BOOTS,
        ),
        Setting(
            "firmware",
            Firmware,
            "bios (SeaBIOS) or uefi (OVMF, Debian's ovmf package).",
            Firmware.bios,
            panel=_FIRMWARE_BOOTS,
        ),
        Setting(
            "command",
            str,
            "After --: the command of the last --image, argument by argument, byte for byte.",
            repeatable=True,
            argument=True,
            metavar="COMMAND",
        ),
    ],
)


def run_field(dest: str) -> Any:
    """``RUN_SETTINGS.field(dest)``: a config field with the default of setting ``dest``."""
    return RUN_SETTINGS.field(dest)


RELEASE_SETTINGS = SettingsTable(
    "release",
    [
        Setting(
            "arches",
            Arch,
            "An architecture to build (default: every architecture of the table).",
            flag="--arch",
            repeatable=True,
            shown_default=", ".join(ARCHES),
        ),
        Setting(
            "output",
            Path,
            "The release goes to DIR/<version>/ (project version + suite + the archive's "
            "date), replaced whole only once every architecture is built.",
            Path("releases"),
            metavar="DIR",
        ),
        *(
            BUILD_SETTINGS[dest]
            for dest in (
                "suite",
                "compression",
                "mirror",
                "keyring",
                "verify_signature",
                "cache_dir",
                "extra_packages",
                "max_size",
                "source_date_epoch",
                "modules",
                "default_cmdline",
                "podman",
            )
        ),
    ],
)


def release_field(dest: str) -> Any:
    """``RELEASE_SETTINGS.field(dest)``: a config field with the default of setting ``dest``."""
    return RELEASE_SETTINGS.field(dest)


@dataclass(frozen=True)
class ReleaseConfig:
    """``b2c-builder release``: one build per architecture (every row of ARCHES unless
    ``arches`` names some), each with Debian's kernel, into ``output/<version>/``. The other
    fields are BuildConfig's (one setting of RELEASE_SETTINGS each)."""

    arches: tuple[Arch, ...] = release_field("arches")
    output: Path = release_field("output")
    suite: str = release_field("suite")
    compression: Compression = release_field("compression")
    mirror: str | None = release_field("mirror")
    keyring: Path = release_field("keyring")
    verify_signature: bool = release_field("verify_signature")
    cache_dir: Path = release_field("cache_dir")
    extra_packages: tuple[str, ...] = release_field("extra_packages")
    max_size: int = release_field("max_size")
    source_date_epoch: int | None = release_field("source_date_epoch")
    modules: tuple[str, ...] = release_field("modules")
    default_cmdline: str = release_field("default_cmdline")
    podman: PodmanVariant = release_field("podman")

    def __post_init__(self) -> None:
        # The folder checks of BuildConfig, before the release creates --output; the builds'
        # own configs check the rest (their output is a staging folder inside --output).
        _check_folder(self.output, "--output")
        _check_folder(self.cache_dir, "--cache-dir")

    def targets(self) -> tuple[Arch, ...]:
        """The architectures to build, in table order, each once."""
        wanted = set(self.arches or ARCHES)
        return tuple(arch for arch in ARCHES if arch in wanted)

    def build_config(self, arch: Arch, output: Path) -> BuildConfig:
        """The build of ``arch`` into ``output``, with Debian's kernel: the metapackage of the
        architecture's default flavour (``ArchFacts.kernel_package``: linux-image-<arch>,
        but linux-image-powerpc64le for ppc64el). Raises ConfigError as BuildConfig does."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del fields["arches"]
        fields.update(arch=arch, output=output, kernel_package=arch.facts.kernel_package)
        return BuildConfig(**fields)
