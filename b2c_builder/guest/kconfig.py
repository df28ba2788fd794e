"""The kernel options b2c-builder images need under QEMU: one declarative table.

Derived from ``KERNEL_OPTIONS``:

- ``fragment(arch)``: a config fragment in the format ``scripts/kconfig/merge_config.sh``
  merges (``CONFIG_FOO=y`` lines, ``#`` comments), as ``vng --kconfig`` prints one;
- ``check(config_text, arch)``: every missing or wrong option of a ``.config``, with why
  b2c needs it;
- ``init_checks()``: what /init checks at boot once its modules are loaded (rendered into
  /init by templates/init.sh.j2, run by init/kernel.sh), so that a kernel lacking overlayfs
  ends the boot with "the kernel lacks CONFIG_OVERLAY_FS" instead of a podman error.

A module (``=m``) is accepted only where the image loads it: the option names its module and
that module is in kmod.DEFAULT_MODULES (or is loaded as a dependency of one), which the
modules archive lists for /init (init/modules.sh). Options that must be built in (``y``):
what runs before /init can load anything (the initramfs decompressor, devtmpfs, the script
and ELF loaders, the serial console), booleans, and drivers the image does not load.

Symbol names and types were read from the kernel's Kconfig files (init/Kconfig, fs/*/Kconfig,
net/*/Kconfig, drivers/virtio/Kconfig, drivers/tty/serial/Kconfig, drivers/firmware/Kconfig)
and each one is present in Debian trixie's config of every architecture of config.ARCHES
(tests/test_kconfig.py).
Not listed, on purpose: mount namespaces (no option: always built), DEVTMPFS_MOUNT (it does
not act on an initramfs boot: /init mounts /dev itself), NETFILTER and bridges (every
container runs with --network=host), CGROUP_NS (containers.conf sets cgroupns = "host").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from b2c_builder import __version__
from b2c_builder.config import Arch
from b2c_builder.errors import ConfigError

ALL_ARCHES: frozenset[Arch] = frozenset(Arch)
AMD64: frozenset[Arch] = frozenset({Arch.amd64})
ARM64: frozenset[Arch] = frozenset({Arch.arm64})
RISCV64: frozenset[Arch] = frozenset({Arch.riscv64})
PPC64EL: frozenset[Arch] = frozenset({Arch.ppc64el})
S390X: frozenset[Arch] = frozenset({Arch.s390x})
# The machines whose virtio devices are PCI devices (s390x's sit on its channel subsystem).
PCI_MACHINES: frozenset[Arch] = ALL_ARCHES - S390X
# The machines with QEMU's fw_cfg device (q35 and the virt boards; not pseries nor s390x).
FW_CFG_MACHINES: frozenset[Arch] = ALL_ARCHES - PPC64EL - S390X
# The machines with an RTC: s390x's clock is the CPU's TOD clock, which QEMU starts at the
# host's time.
RTC_MACHINES: frozenset[Arch] = ALL_ARCHES - S390X
# QEMU's virt boards (arm64, riscv64): devices found through the device tree.
VIRT: frozenset[Arch] = ARM64 | RISCV64
# The boards whose console is an 8250/16550 UART named ttyS0.
TTYS0: frozenset[Arch] = AMD64 | RISCV64


class Level(StrEnum):
    """How much b2c needs an option: ``required`` ones fail ``check`` (and the CLI's exit
    status); ``recommended`` ones only serve some features and give a warning."""

    required = "required"
    recommended = "recommended"


class ProbeKind(StrEnum):
    """How /init sees at boot that the kernel has an option (init/kernel.sh b2c_kernel_has)."""

    filesystem = "filesystem"  # NAME is listed in /proc/filesystems
    controller = "controller"  # NAME is listed in /sys/fs/cgroup/cgroup.controllers
    path = "path"  # /NAME exists
    netdev = "netdev"  # an eth*/en* network interface appears (NAME unused)


# Probe.when: "always", "network" (the boot brings the network up), or the type= of a
# b2c.filesystem that needs the option (e.g. "9p": only boots that mount a 9p share).
ALWAYS = "always"
NETWORK = "network"


@dataclass(frozen=True)
class Probe:
    """A boot-time check of one option: ``kind`` + ``name`` say what to look at, ``label``
    names what is missing in the init's error line, ``when`` says which boots need it."""

    kind: ProbeKind
    name: str
    label: str
    when: str = ALWAYS


@dataclass(frozen=True)
class KernelOption:
    """One kernel option (``symbol`` without its CONFIG_ prefix) and why b2c needs it.

    ``module``: the module's name when ``=m`` is accepted (the image loads it at boot);
    None means the option must be ``=y``.
    """

    symbol: str
    why: str
    module: str | None = None
    arches: frozenset[Arch] = ALL_ARCHES
    level: Level = Level.required
    probe: Probe | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z0-9_]+", self.symbol) or self.symbol.startswith("CONFIG_"):
            raise ValueError(f"bad Kconfig symbol {self.symbol!r}: write it without CONFIG_")
        if self.probe is not None and self.arches != ALL_ARCHES:
            raise ValueError(f"{self.symbol}: /init is the same on every architecture")

    @property
    def name(self) -> str:
        """The name as a .config spells it: CONFIG_OVERLAY_FS."""
        return f"CONFIG_{self.symbol}"

    @property
    def values(self) -> tuple[str, ...]:
        """The accepted values, the one ``fragment`` writes first."""
        return ("y", "m") if self.module else ("y",)

    def applies_to(self, arch: Arch) -> bool:
        return arch in self.arches


def _fs(name: str, when: str = ALWAYS) -> Probe:
    return Probe(ProbeKind.filesystem, name, f"{name} filesystem", when)


def _controller(name: str) -> Probe:
    return Probe(ProbeKind.controller, name, f"cgroup v2 {name} controller")


_R = Level.recommended

# The table. Order: boot, init and processes, namespaces and cgroups, storage, virtio and
# sharing, network, console and machine. fragment() keeps it.
KERNEL_OPTIONS: tuple[KernelOption, ...] = (
    # --- boot: the kernel unpacks the image and runs /init --------------------------------
    KernelOption("BLK_DEV_INITRD", "the image is an initramfs (cpio archives the kernel unpacks)"),
    KernelOption("RD_ZSTD", "unpack zstd images and modules archives (the default compression)"),
    KernelOption("RD_XZ", "unpack images built with --compression xz", level=_R),
    KernelOption("RD_GZIP", "unpack images built with --compression gzip", level=_R),
    KernelOption("BINFMT_SCRIPT", "/init and the udhcpc hook are #!/bin/sh scripts"),
    KernelOption("BINFMT_ELF", "busybox, podman, crun and conmon are ELF programs"),
    KernelOption(
        "DEVTMPFS",
        "/init mounts devtmpfs on /dev: disk, console and tty nodes",
        probe=_fs("devtmpfs"),
    ),
    KernelOption("PROC_FS", "/proc: the command line, mounts, /proc/filesystems"),
    KernelOption("SYSFS", "/sys: network interfaces and block devices"),
    KernelOption("TMPFS", "/run, /tmp, /dev/shm and podman's storage when there is no cache disk"),
    KernelOption(
        "TMPFS_XATTR",
        "overlayfs on tmpfs (podman's storage without a cache disk) needs trusted.* xattrs",
    ),
    KernelOption(
        "UNIX98_PTYS",
        "/init mounts devpts on /dev/pts; crun mounts one in every container",
        probe=_fs("devpts"),
    ),
    # --- what podman, conmon and crun use ---------------------------------------------------
    KernelOption("FUTEX", "threads of podman (Go) and of every glibc program"),
    KernelOption("EPOLL", "podman's Go runtime and conmon's glib main loop wait on epoll"),
    KernelOption("SIGNALFD", "conmon and crun receive signals through signalfd"),
    KernelOption("TIMERFD", "timers of conmon's glib main loop and of container workloads"),
    KernelOption("EVENTFD", "conmon's glib main loop wakes up through eventfd"),
    KernelOption(
        "POSIX_MQUEUE",
        "crun mounts an mqueue filesystem on /dev/mqueue in every container",
        probe=_fs("mqueue"),
    ),
    KernelOption("SYSVIPC", "System V shared memory and semaphores inside containers", level=_R),
    KernelOption(
        "SECCOMP",
        "podman's default seccomp profile, for containers not run --privileged (b2c's are)",
        level=_R,
    ),
    KernelOption(
        "SECCOMP_FILTER",
        "podman's default seccomp profile, for containers not run --privileged (b2c's are)",
        level=_R,
    ),
    # --- namespaces and cgroups -------------------------------------------------------------
    KernelOption("NAMESPACES", "podman runs every container in its own namespaces"),
    KernelOption("UTS_NS", "every container has its own host name (UTS namespace)"),
    KernelOption("IPC_NS", "every container has its own IPC namespace"),
    KernelOption("PID_NS", "every container has its own PID namespace"),
    KernelOption(
        "NET_NS",
        "containers given their own network (b2c runs its containers with --network=host)",
        level=_R,
    ),
    KernelOption(
        "USER_NS", "containers run with --userns, and rootless podman inside a container", level=_R
    ),
    KernelOption(
        "CGROUPS",
        "podman puts every container in a cgroup of the v2 hierarchy on /sys/fs/cgroup",
        probe=_fs("cgroup2"),
    ),
    KernelOption(
        "MEMCG",
        "podman --memory limits (without it podman drops them with a warning)",
        level=_R,
        probe=_controller("memory"),
    ),
    KernelOption(
        "CGROUP_PIDS",
        "podman --pids-limit (containers.conf's default: 2048)",
        level=_R,
        probe=_controller("pids"),
    ),
    KernelOption(
        "CGROUP_SCHED", "podman --cpus and --cpu-shares", level=_R, probe=_controller("cpu")
    ),
    KernelOption("CPUSETS", "podman --cpuset-cpus", level=_R, probe=_controller("cpuset")),
    KernelOption(
        "BLK_CGROUP", "podman --device-read-bps and friends", level=_R, probe=_controller("io")
    ),
    KernelOption("BPF_SYSCALL", "crun's device rules on cgroup v2 are eBPF programs", level=_R),
    KernelOption("CGROUP_BPF", "crun's device rules on cgroup v2 are eBPF programs", level=_R),
    # --- storage ----------------------------------------------------------------------------
    KernelOption(
        "OVERLAY_FS",
        "podman's storage driver (storage.conf: driver = overlay)",
        module="overlay",
        probe=_fs("overlay"),
    ),
    KernelOption("BLOCK", "the block layer: disks and the cache partition"),
    KernelOption(
        "EXT4_FS",
        "the cache partition (b2c.cache_device), formatted by mkfs.ext4",
        module="ext4",
        probe=_fs("ext4", when="ext4"),
    ),
    KernelOption(
        "CRYPTO_CRC32C",
        "ext4's metadata checksums (mkfs.ext4's default metadata_csum)",
        module="crc32c_generic",
    ),
    KernelOption("SWAP", "b2c.swap: a swap file on the cache partition", level=_R),
    # --- virtio devices and shared folders ----------------------------------------------------
    KernelOption(
        "PCI", "QEMU's virtio devices are PCI devices (virtio-*-pci)", arches=PCI_MACHINES
    ),
    KernelOption(
        "PCI_HOST_GENERIC",
        "the PCI host bridge of QEMU's arm64 and riscv64 virt machines (pci-host-ecam-generic)",
        arches=VIRT,
    ),
    KernelOption("VIRTIO_MENU", "the menu holding the virtio drivers"),
    KernelOption(
        "VIRTIO_PCI",
        "the virtio transport of QEMU's -device virtio-*-pci",
        module="virtio_pci",
        arches=PCI_MACHINES,
    ),
    KernelOption(
        "VIRTIO_MMIO",
        "the virtio transport of QEMU's microvm machine (b2c-builder run --machine microvm: "
        "virtio-*-device, described in ACPI)",
        module="virtio_mmio",
        level=_R,
        arches=AMD64,
    ),
    KernelOption(
        "S390_GUEST",
        "the virtio transport of s390x's channel subsystem (virtio_ccw): QEMU's "
        "virtio-net-ccw, virtio-blk-ccw and virtio-rng-ccw",
        arches=S390X,
    ),
    KernelOption("BLK_DEV", "the menu holding VIRTIO_BLK"),
    KernelOption(
        "VIRTIO_BLK",
        "disks given to b2c-builder run --disk (QEMU -drive if=virtio): the cache partition",
        module="virtio_blk",
    ),
    KernelOption(
        "VIRTIO_CONSOLE",
        "virtio consoles and serial ports (hvc0, -device virtio-serial)",
        module="virtio_console",
        level=_R,
    ),
    KernelOption("HW_RANDOM", "the menu holding HW_RANDOM_VIRTIO", module="rng_core", level=_R),
    KernelOption(
        "HW_RANDOM_VIRTIO",
        "entropy from QEMU's virtio-rng-pci, which b2c-builder run adds (b2c.insmods=virtio_rng)",
        module="virtio_rng",
        level=_R,
    ),
    KernelOption("NETWORK_FILESYSTEMS", "the menu holding 9P_FS"),
    KernelOption("NET_9P", "the 9p protocol of shared host folders (QEMU -virtfs)", module="9pnet"),
    KernelOption(
        "9P_FS",
        "shared host folders mounted with a b2c.filesystem of type=9p",
        module="9p",
        probe=_fs("9p", when="9p"),
    ),
    KernelOption(
        "NET_9P_VIRTIO",
        "the virtio transport of 9p shares (mount -t 9p -o trans=virtio)",
        module="9pnet_virtio",
        probe=Probe(
            ProbeKind.path, "sys/bus/virtio/drivers/9pnet_virtio", "9p virtio transport", "9p"
        ),
    ),
    KernelOption("FUSE_FS", "virtiofs is built on FUSE", module="fuse", level=_R),
    KernelOption(
        "VIRTIO_FS",
        "shared host folders served by virtiofsd (a b2c.filesystem of type=virtiofs)",
        module="virtiofs",
        level=_R,
        probe=_fs("virtiofs", when="virtiofs"),
    ),
    KernelOption(
        "FW_CFG_SYSFS",
        "/sys/firmware/qemu_fw_cfg: files given with QEMU's -fw_cfg (b2c.insmods=qemu_fw_cfg)",
        module="qemu_fw_cfg",
        level=_R,
        arches=FW_CFG_MACHINES,
    ),
    # --- network ----------------------------------------------------------------------------
    KernelOption("NET", "networking: DHCP, DNS and image pulls"),
    KernelOption("INET", "IPv4: DHCP, DNS and image pulls"),
    KernelOption(
        "UNIX",
        "podman, conmon and crun talk over unix sockets",
        probe=Probe(ProbeKind.path, "proc/net/unix", "unix sockets"),
    ),
    KernelOption(
        "PACKET",
        "udhcpc sends its DHCP requests on an AF_PACKET socket",
        probe=Probe(ProbeKind.path, "proc/net/packet", "AF_PACKET sockets", NETWORK),
    ),
    KernelOption("NETDEVICES", "the menu holding the network card drivers"),
    KernelOption("NET_CORE", "the menu holding VIRTIO_NET"),
    KernelOption(
        "VIRTIO_NET",
        "DHCP and image pulls go through QEMU's virtio-net-pci card "
        "(on other machines: the card's own driver)",
        module="virtio_net",
        probe=Probe(ProbeKind.netdev, "", "no eth*/en* network interface appeared", NETWORK),
    ),
    # --- console and machine ------------------------------------------------------------------
    KernelOption("TTY", "terminals: the serial console and podman's -t"),
    KernelOption(
        "SERIAL_8250", "the serial console b2c-builder run reads (console=ttyS0)", arches=TTYS0
    ),
    KernelOption(
        "SERIAL_8250_CONSOLE",
        "kernel and /init messages on ttyS0 (console=ttyS0)",
        arches=TTYS0,
    ),
    KernelOption(
        "SERIAL_OF_PLATFORM",
        "the 8250 driver finds the riscv64 virt machine's NS16550A UART in the device tree",
        arches=RISCV64,
    ),
    KernelOption(
        "SERIAL_AMBA_PL011",
        "the serial console b2c-builder run reads: the virt machine's PL011 (console=ttyAMA0)",
        arches=ARM64,
    ),
    KernelOption(
        "SERIAL_AMBA_PL011_CONSOLE",
        "kernel and /init messages on ttyAMA0 (console=ttyAMA0)",
        arches=ARM64,
    ),
    KernelOption(
        "HVC_CONSOLE",
        "the serial console b2c-builder run reads: pseries' hypervisor terminal (console=hvc0)",
        arches=PPC64EL,
    ),
    KernelOption(
        "SCLP_VT220_TTY",
        "the serial console b2c-builder run reads: the SCLP VT220 terminal (console=ttysclp0)",
        arches=S390X,
    ),
    KernelOption(
        "SCLP_VT220_CONSOLE",
        "kernel and /init messages on ttysclp0 (console=ttysclp0)",
        arches=S390X,
    ),
    KernelOption(
        "ACPI",
        "poweroff -f turns QEMU's q35 machine off through ACPI (else the VM never exits)",
        arches=AMD64,
    ),
    KernelOption(
        "ARM_PSCI_FW",
        "poweroff -f turns QEMU's virt machine off through PSCI (else the VM never exits)",
        arches=ARM64,
    ),
    KernelOption(
        "PPC_PSERIES",
        "the pseries machine: its devices, and poweroff -f through RTAS (else the VM never exits)",
        arches=PPC64EL,
    ),
    KernelOption(
        "RISCV_SBI",
        "poweroff -f turns QEMU's riscv64 virt machine off through OpenSBI's system reset "
        "extension (else the VM never exits)",
        arches=RISCV64,
    ),
    KernelOption("MAGIC_SYSRQ", "the power-off fallback writes to /proc/sysrq-trigger", level=_R),
    KernelOption(
        "RTC_CLASS", "the clock at boot comes from QEMU's RTC", level=_R, arches=RTC_MACHINES
    ),
    KernelOption(
        "RTC_HCTOSYS",
        "set the clock from the RTC at boot: TLS certificates of registries are checked "
        "against it (else use b2c.ntp_peer)",
        level=_R,
        arches=RTC_MACHINES,
    ),
    KernelOption(
        "RTC_DRV_CMOS", "the RTC of QEMU's q35 machine (mc146818)", arches=AMD64, level=_R
    ),
    KernelOption("RTC_DRV_PL031", "the RTC of QEMU's virt machine (PL031)", arches=ARM64, level=_R),
    KernelOption(
        "RTC_DRV_GENERIC",
        "the RTC of QEMU's pseries machine (through RTAS)",
        arches=PPC64EL,
        level=_R,
    ),
    KernelOption(
        "RTC_DRV_GOLDFISH",
        "the RTC of QEMU's riscv64 virt machine (Goldfish)",
        arches=RISCV64,
        level=_R,
    ),
)


def options_for(arch: Arch) -> list[KernelOption]:
    """The table's rows that apply to ``arch``, in table order."""
    return [opt for opt in KERNEL_OPTIONS if opt.applies_to(arch)]


def lookup(symbol: str) -> KernelOption:
    """The row of ``symbol`` (with or without CONFIG_); KeyError if the table lacks it."""
    symbol = symbol.removeprefix("CONFIG_")
    for opt in KERNEL_OPTIONS:
        if opt.symbol == symbol:
            return opt
    raise KeyError(symbol)


# --- the fragment --------------------------------------------------------------------------


def fragment(arch: Arch) -> str:
    """The config fragment for ``arch``: one ``CONFIG_X=y`` line per option, after a comment
    with why it is needed. Every option is written ``=y`` (a kernel built with it runs the
    image with no modules archive); ``m`` is accepted by ``check`` where noted.

    The format is the one ``scripts/kconfig/merge_config.sh`` merges (a .config subset).
    """
    lines = [
        f"# Kernel options to run b2c-builder images under QEMU ({arch}).",
        f"# Generated by b2c-builder {__version__}: b2c-builder kconfig --arch {arch}",
        "# Merge it into a kernel tree's configuration:",
        "#   scripts/kconfig/merge_config.sh -m .config b2c.config && make olddefconfig",
        "# then check the result: b2c-builder kconfig --check .config",
    ]
    for opt in options_for(arch):
        notes = []
        if opt.level is Level.recommended:
            notes.append("recommended")
        if opt.module:
            notes.append(f"or m: module {opt.module}")
        suffix = f" ({'; '.join(notes)})" if notes else ""
        lines += ["", f"# {opt.why}{suffix}", f"{opt.name}={opt.values[0]}"]
    return "\n".join(lines) + "\n"


# --- reading and checking a .config ---------------------------------------------------------

_SET_RE = re.compile(r"CONFIG_([A-Za-z0-9_]+)=(.*)")
_UNSET_RE = re.compile(r"# CONFIG_([A-Za-z0-9_]+) is not set")
CONFIG_HINT = (
    "pass a kernel .config: the build tree's .config, /boot/config-<version>, "
    "or `b2c-builder kconfig` output"
)


def parse_config(text: str, *, source: str = "the .config") -> dict[str, str | None]:
    """A .config as ``symbol -> value``: ``y``, ``m``, a string with its quotes (``"abc"``),
    a number; None for ``# CONFIG_X is not set``. Symbols have no CONFIG_ prefix.

    Format (scripts/kconfig/confdata.c): ``CONFIG_X=value`` lines, ``# CONFIG_X is not set``
    lines, other comments and blank lines. Raises ConfigError on any other line, or when
    there is no option at all (not a .config).
    """
    values: dict[str, str | None] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if match := _SET_RE.fullmatch(line):
            values[match.group(1)] = match.group(2)
        elif match := _UNSET_RE.fullmatch(line):
            values[match.group(1)] = None
        elif line and not line.startswith("#"):
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise ConfigError(
                f"{source}, line {number}: {shown!r} is not a kernel configuration line",
                hint=CONFIG_HINT,
            )
    if not values:
        raise ConfigError(f"{source} sets no CONFIG_ option", hint=CONFIG_HINT)
    return values


def config_arch(values: dict[str, str | None]) -> Arch | None:
    """The architecture a parsed .config is for (the symbol it sets, ``kconfig_symbol``), or
    None when it says nothing we know."""
    for arch in Arch:
        if values.get(arch.facts.kconfig_symbol) == "y":
            return arch
    return None


@dataclass(frozen=True)
class Problem:
    """An option of the table that a .config lacks (``found`` None) or sets to a value it
    does not accept (``found`` = that value)."""

    option: KernelOption
    found: str | None

    @property
    def severity(self) -> str:
        """``error`` for a required option, ``warning`` for a recommended one."""
        return "error" if self.option.level is Level.required else "warning"

    def __str__(self) -> str:
        opt = self.option
        state = " is not set" if self.found is None else f"={self.found}"
        if opt.module:
            needs = f"needs y, or m with module {opt.module} loaded at boot"
        else:
            needs = "needs y: built in"
        return f"{self.severity}: {opt.name}{state} ({needs}): {opt.why}"


def check(config_text: str, arch: Arch, *, source: str = "the .config") -> list[Problem]:
    """Every option of the table for ``arch`` that ``config_text`` lacks or sets wrong, in
    table order. ``=y`` always satisfies; ``=m`` only where a module is accepted.

    Raises ConfigError when the text is not a .config, or is for another architecture.
    """
    values = parse_config(config_text, source=source)
    found = config_arch(values)
    if found is not None and found is not arch:
        raise ConfigError(
            f"{source} is a configuration for {found}, not {arch}",
            hint=f"pass --arch {found}, or the .config of an {arch} kernel",
        )
    problems = []
    for opt in options_for(arch):
        value = values.get(opt.symbol)
        if value not in opt.values:
            problems.append(Problem(opt, value))
    return problems


def read_config(path: Path) -> str:
    """The text of the .config at ``path``; ConfigError (with a hint) if it cannot be read."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a .config", hint=CONFIG_HINT) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint=CONFIG_HINT) from exc
    if b"\0" in data:
        raise ConfigError(f"{path} is a binary file, not a .config", hint=CONFIG_HINT)
    return data.decode("utf-8", errors="replace")


def check_file(path: Path, arch: Arch | None = None) -> tuple[Arch, list[Problem]]:
    """Read and check the .config at ``path``: (the architecture checked, the problems).

    ``arch`` None: the architecture the .config says it is for. Raises ConfigError when the
    file cannot be read, is not a .config, or its architecture is unknown or not ``arch``.
    """
    text = read_config(path)
    if arch is None:
        arch = config_arch(parse_config(text, source=str(path)))
        if arch is None:
            wanted = " nor ".join(f"CONFIG_{a.facts.kconfig_symbol}=y" for a in Arch)
            raise ConfigError(
                f"cannot tell which architecture {path} is for (it sets neither {wanted})",
                hint=" or ".join(f"--arch {a}" for a in Arch),
            )
    return arch, check(text, arch, source=str(path))


# --- what /init checks at boot ----------------------------------------------------------------


@dataclass(frozen=True)
class InitCheck:
    """One ``b2c_kernel_probe`` call of the rendered /init (init/kernel.sh).

    ``severity``: ``error`` ends the boot (a required option, or one a requested filesystem
    needs), ``warning`` only prints. ``module``: the option's module ("" if it must be built
    in), which the probe loads before it decides (modules loaded on demand, kmod.LoadWhen).
    ``message`` follows "the kernel lacks " in the line.
    """

    severity: str
    when: str
    kind: ProbeKind
    name: str
    module: str
    message: str


def init_checks() -> list[InitCheck]:
    """The boot-time checks of every option that has a probe, in table order."""
    checks = []
    for opt in KERNEL_OPTIONS:
        probe = opt.probe
        if probe is None:
            continue
        fatal = opt.level is Level.required or probe.when not in (ALWAYS, NETWORK)
        checks.append(
            InitCheck(
                "error" if fatal else "warning",
                probe.when,
                probe.kind,
                probe.name,
                # A netdev probe waits for an interface: it is not loaded on demand.
                (opt.module or "") if probe.kind is not ProbeKind.netdev else "",
                f"{opt.name} ({probe.label}): {opt.why}",
            )
        )
    return checks
