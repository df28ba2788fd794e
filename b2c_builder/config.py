"""Typed build configuration: enums that carry behaviour and a frozen BuildConfig."""

from __future__ import annotations

import lzma
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from b2c_builder.errors import ConfigError

MiB = 1024 * 1024


class Arch(StrEnum):
    """A Debian architecture we can build for, with everything that depends on it."""

    amd64 = "amd64"
    arm64 = "arm64"

    @property
    def multiarch(self) -> str:
        return {Arch.amd64: "x86_64-linux-gnu", Arch.arm64: "aarch64-linux-gnu"}[self]

    @property
    def loader(self) -> str:
        """The ELF interpreter at its ABI path."""
        return {
            Arch.amd64: "/lib64/ld-linux-x86-64.so.2",
            Arch.arm64: "/lib/ld-linux-aarch64.so.1",
        }[self]

    @property
    def elf_machine(self) -> str:
        """e_machine as pyelftools names it."""
        return {Arch.amd64: "EM_X86_64", Arch.arm64: "EM_AARCH64"}[self]

    @property
    def xz_bcj(self) -> int | None:
        """The xz branch filter the kernel's decoder supports for this architecture."""
        return {Arch.amd64: lzma.FILTER_X86, Arch.arm64: None}[self]

    @property
    def goarch(self) -> str:
        """GOARCH for Go builds (the trimmed podman)."""
        return {Arch.amd64: "amd64", Arch.arm64: "arm64"}[self]

    @property
    def goarch_env(self) -> dict[str, str]:
        """The GOARCH-specific level variable, pinned so that the host cannot change it."""
        return {Arch.amd64: {"GOAMD64": "v1"}, Arch.arm64: {}}[self]

    @property
    def cross_cc(self) -> str:
        """The C compiler for cgo code of this architecture on an amd64 host (Debian's
        gcc-<triplet> cross packages install it under this name)."""
        return {Arch.amd64: "x86_64-linux-gnu-gcc", Arch.arm64: "aarch64-linux-gnu-gcc"}[self]

    @property
    def kernel_image(self) -> str:
        """Path of the bootable kernel inside the linux-image package (%s = version)."""
        return {Arch.amd64: "boot/vmlinuz-%s", Arch.arm64: "boot/vmlinuz-%s"}[self]

    @classmethod
    def host(cls) -> Arch:
        machine = os.uname().machine
        mapping = {"x86_64": cls.amd64, "aarch64": cls.arm64}
        if machine not in mapping:
            raise ConfigError(f"unsupported host machine {machine!r}", hint="pass --arch")
        return mapping[machine]


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


class PodmanVariant(StrEnum):
    """Where the image's /usr/bin/podman comes from."""

    debian = "debian"  # the binary of Debian's podman package
    trimmed = "trimmed"  # compiled from Debian's source package, trimmed (b2c_builder/podman.py)


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
    podman: PodmanVariant = PodmanVariant.debian

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
