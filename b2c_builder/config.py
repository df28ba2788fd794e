"""Typed build configuration: enums that carry behaviour and a frozen BuildConfig."""

from __future__ import annotations

import lzma
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from b2c_builder.errors import ConfigError

MiB = 1024 * 1024


class Arch(StrEnum):
    """A Debian architecture we can build for and boot. Everything that differs between
    architectures is a field of its ``ArchFacts`` in ``ARCHES``: ``Arch.arm64.facts.loader``."""

    amd64 = "amd64"
    arm64 = "arm64"

    @property
    def facts(self) -> ArchFacts:
        """This architecture's row of ARCHES."""
        return ARCHES[self]

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
    qemu_nic: str  # the virtio NIC device
    qemu_tcg_cpu: str = "max"  # -cpu under TCG: every instruction TCG can emulate
    qemu_kvm_cpu: str = "host"  # -cpu under KVM


ARCHES: Mapping[Arch, ArchFacts] = MappingProxyType(
    {
        Arch.amd64: ArchFacts(
            uname_machine="x86_64",
            multiarch="x86_64-linux-gnu",
            loader="/lib64/ld-linux-x86-64.so.2",
            elf_machine="EM_X86_64",
            usrmerge=("bin", "sbin", "lib", "lib64"),
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
        ),
        Arch.arm64: ArchFacts(
            uname_machine="aarch64",
            multiarch="aarch64-linux-gnu",
            loader="/lib/ld-linux-aarch64.so.1",
            elf_machine="EM_AARCH64",
            usrmerge=("bin", "sbin", "lib"),  # no lib64: the loader is in /lib
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


DEFAULT_SUITE = "trixie"
DEFAULT_MAX_SIZE = 20 * MiB
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "b2c-builder"


def source_date_epoch_from_env() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    return parse_epoch(value, "SOURCE_DATE_EPOCH")


MAX_EPOCH = 0xFFFFFFFF  # cpio newc stores mtimes in 32 bits


def parse_epoch(value: str, what: str) -> int:
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


@dataclass(frozen=True)
class BuildConfig:
    """Everything one build depends on. CLI options map onto these fields one to one."""

    suite: str = DEFAULT_SUITE
    arch: Arch = Arch.amd64
    compression: Compression = Compression.zstd
    output: Path = Path("releases")
    mirror: str | None = None  # None: the first Debian mirror in the host's apt sources
    keyring: Path = DEFAULT_KEYRING
    verify_signature: bool = True
    cache_dir: Path = field(default_factory=default_cache_dir)
    extra_packages: tuple[str, ...] = ()
    max_size: int = DEFAULT_MAX_SIZE
    source_date_epoch: int | None = None  # None: the signed Release file's Date
    kernel_package: str | None = None
    modules_dir: Path | None = None
    modules: tuple[str, ...] = ()
    default_cmdline: str = ""

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


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'20MiB', '20M', '512KiB', '1048576' -> bytes (binary multiples)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ConfigError(f"cannot read {text!r} as a size", hint="e.g. 20MiB, 512KiB, 1048576")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    factor = {"B": 1, "K": 1024, "M": MiB, "G": 1024 * MiB}[unit[0]]
    return int(number * factor)
