"""``b2c-builder run``: from what a developer typed to a QEMU boot and an exit status.

``prepare()`` is pure apart from reading the files it is given: it picks the kernel and
initrds (kernel.py), turns ``--image``/``--share``/the command after ``--``/the b2c option
flags into a job (job.py), and checks the command line and memory before anything starts.
``launch()`` writes the job initrd, boots (qemu.py) and writes the JUnit report.
"""

from __future__ import annotations

import os
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from b2c_builder.boot import job as jobs
from b2c_builder.boot import kernel as kernels
from b2c_builder.boot import qemu
from b2c_builder.build import kmod
from b2c_builder.config import Accel, Arch, Disk, Firmware, run_field
from b2c_builder.errors import ConfigError
from b2c_builder.guest import hostlint, options
from b2c_builder.log import log

# Options whose presence means the guest needs its network (values of the b2c flags, or
# parameters of --append).
_NETWORK_OPTIONS = (
    "b2c.container",
    "b2c.post_container",
    "b2c.service",
    "b2c.extra_args_url",
    "b2c.iface",
    "b2c.proxy",
)
# Parameters of --append (or their aliases) that, given a value, mean the same.
_APPEND_NETWORK_PARAMETERS = frozenset({*_NETWORK_OPTIONS, "b2c.ntp_peer", "b2c.network", "ip"})


# The module of microvm's virtio transport. Debian's kernel builds it as a module
# (CONFIG_VIRTIO_MMIO=m), in the modules archive as LoadWhen.demand (build/kmod.py), which
# /init does not load: nothing asks the kernel for it by name, so this job option does, on
# microvm boots only. Loaded after b2c.modules (init/modules.sh), it binds the NIC and the
# disks to the virtio drivers already loaded; q35 boots do not pay for it.
MICROVM_TRANSPORT = "virtio_mmio"


# The hardware drivers a boot of run needs, beyond the network's (virtio_net, its own class):
# run's QEMU devices are a virtio NIC, a virtio RNG, and its --disk images as virtio block
# devices. Told so (b2c.device_drivers), /init loads none of the others of the modules
# archive's device class (e1000, nvme, ahci...): each costs CPU under TCG, and ahci probing
# q35's six empty SATA ports holds the wait before the first container: first output came
# 0.75-0.85 s earlier than with the whole device class (3 interleaved boots each, TCG).
DISK_DRIVER = "virtio_blk"

# QEMU's user network (docs/system/devices/net.rst), the one run gives the guest: the guest
# is 10.0.2.15/24, the host (its gateway) 10.0.2.2 and its DNS forwarder 10.0.2.3, on every
# boot. The job gives /init those addresses as the kernel's ip= (the kernel's syntax; /init
# applies it, Debian's kernels lacking CONFIG_IP_PNP) on the first interface: no DHCP
# exchange, 0.12 s less of every boot with a network under TCG (the network section: 0.06 s
# instead of 0.18 s).
USER_NET_IP = "10.0.2.15::10.0.2.2:255.255.255.0:::off:10.0.2.3"

# Raw QEMU options that may give the guest a device of their own, whose driver /init must then
# look for as on any machine (b2c.device_drivers left to auto).
_DEVICE_OPTIONS = frozenset(
    {"-device", "-drive", "-net", "-nic", "-hda", "-hdb", "-hdc", "-hdd", "-cdrom", "-readconfig",
     "-usbdevice", "-blockdev", "-virtfs", "-fda", "-fdb", "-sd", "-mtdblock", "-pflash"}
)  # fmt: skip


@dataclass(frozen=True)
class RunRequest:
    """What ``b2c-builder run`` was asked, before any default is resolved: one field per
    setting of config.RUN_SETTINGS (which gives its default), and the b2c option flags
    (``{option name: value}``, see b2c_parameters)."""

    kernel: Path | None = run_field("kernel")
    initrds: tuple[Path, ...] = run_field("initrds")
    modules_dir: Path | None = run_field("modules_dir")
    images: tuple[str, ...] = run_field("images")
    shares: tuple[str, ...] = run_field("shares")
    junit: Path | None = run_field("junit")
    releases: Path = run_field("releases")
    append: str = run_field("append")
    arch: Arch = run_field("arch")
    accel: Accel = run_field("accel")
    memory: str = run_field("memory")
    cpus: int = run_field("cpus")
    machine: str | None = run_field("machine")
    disks: tuple[Disk, ...] = run_field("disks")
    timeout: float = run_field("timeout")
    serial_log: Path | None = run_field("serial_log")
    qemu_args: tuple[str, ...] = run_field("qemu_args")
    cache_dir: Path = run_field("cache_dir")
    dry_run: bool = run_field("dry_run")
    check: bool = run_field("check")
    # Firmware boots: the boot entry (PXE, ISO) names the kernel, initrds and command line.
    pxe: Path | None = run_field("pxe")
    bootfile: str = run_field("bootfile")
    cdrom: Path | None = run_field("cdrom")
    firmware: Firmware = run_field("firmware")
    command: tuple[str, ...] = run_field("command")
    b2c: Mapping[str, str | bool | Sequence[str] | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A resolved run: the boot files, the job (None: nothing to hand over) and the shares;
    ``modules``, when the modules archive (the last initrd) is booted cut to them (see
    boot_needs; a dry run names them without cutting)."""

    kernel: Path
    initrds: tuple[Path, ...]
    job: jobs.Job | None
    shares: tuple[jobs.Share, ...]
    images: tuple[jobs.ImageRef, ...]
    modules: kmod.BootNeeds | None = None


def b2c_parameters(
    values: Mapping[str, str | bool | Sequence[str] | None],
    *,
    quote_hint: str = options.RUN_QUOTE_HINT,
) -> list[str]:
    """The kernel command-line parameters of the b2c option flags, in option-table order.

    ``values`` maps an option name (``b2c.container``) to a flag's bool, one value, or a list
    of values for a repeatable option. Raises ConfigError for a value no command line can
    carry (``quote_hint``: see options.compose).
    """
    params: list[str] = []
    for opt in options.OPTIONS:
        value = values.get(opt.name)
        if value is None or value is False or value == []:
            continue
        items = [None] if value is True else [value] if isinstance(value, str) else value
        params += [options.compose(opt.name, item, quote_hint=quote_hint) for item in items]
    return params


def _has_b2c_options(append: str) -> bool:
    return any(name.startswith("b2c.") for name, _ in options.parse_cmdline(append))


def _needs_network(request: RunRequest, images: Sequence[jobs.ImageRef]) -> bool:
    if any(not ref.transport.local for ref in images):
        return True
    if any(request.b2c.get(name) for name in _NETWORK_OPTIONS):
        return True
    ntp = request.b2c.get("b2c.ntp_peer")
    if ntp not in (None, "none"):
        return True
    # The kernel's own splitting rules (options.parse_cmdline), aliases folded by lookup;
    # a value that turns the option off (b2c.ntp_peer=none, ip=off) asks for nothing.
    for name, value in options.parse_cmdline(request.append):
        opt = options.lookup(name)
        if value in (None, "none", "off") or opt is None:
            continue
        if opt.name in _APPEND_NETWORK_PARAMETERS:
            return True
    return False


def overridden_in_append(request: RunRequest) -> list[options.Option]:
    """The single-valued b2c options (in --append order) that a run flag and --append set to
    different values (the last one in --append counts). The guest parses the job after the
    kernel command line (init/job.sh), so the flag's value wins."""
    # The flags' values as the job carries them (compose names each option canonically).
    flagged = dict(options.parse_cmdline(" ".join(b2c_parameters(request.b2c))))
    last: dict[options.Option, str | None] = {}
    for param, value in options.parse_cmdline(request.append):
        opt = options.lookup(param)
        if opt is not None and opt.name in flagged and not opt.repeatable:
            last[opt] = value
    return [opt for opt, value in last.items() if value != flagged[opt.name]]


def _adds_devices(qemu_args: Sequence[str]) -> bool:
    """True if the raw QEMU arguments may add a guest device (``-device``, ``--drive``...)."""
    return any("-" + arg.lstrip("-") in _DEVICE_OPTIONS for arg in qemu_args if arg[:1] == "-")


def _cache_device(request: RunRequest) -> str | None:
    """The guest's b2c.cache_device: the flag's (the job is parsed after the kernel command
    line, init/job.sh), else the last one in --append; None when neither sets it."""
    flagged = request.b2c.get("b2c.cache_device")
    if isinstance(flagged, str):
        return flagged
    value = None
    for param, given in options.parse_cmdline(request.append):
        opt = options.lookup(param)
        if opt is not None and opt.name == "b2c.cache_device":
            value = given
    return value


def _set_by_user(request: RunRequest, *names: str) -> bool:
    """True if the run options or --append set one of the options ``names`` (or an alias)."""
    if any(request.b2c.get(name) not in (None, False, []) for name in names):
        return True
    for param, _ in options.parse_cmdline(request.append):
        opt = options.lookup(param)
        if opt is not None and opt.name in names:
            return True
    return False


def device_drivers(request: RunRequest) -> str | None:
    """The b2c.device_drivers value for the job: ``virtio_blk`` with --disk, else ``none``;
    None (the image's auto) when the user sets the option, or raw QEMU arguments may add
    devices."""
    if _set_by_user(request, "b2c.device_drivers") or _adds_devices(request.qemu_args):
        return None
    return DISK_DRIVER if request.disks else "none"


# The modules of the archive's demand class (kmod.LoadWhen.demand: never loaded by /init, the
# kernel asks modprobe for them) that a boot of run may use: podman's overlay storage always;
# ext4, and the crc32c it asks for, for a cache or swap on --disk; 9p over virtio for --share;
# microvm's virtio transport, which the job names (MICROVM_TRANSPORT).
_DEMAND_ALWAYS = frozenset({"overlay"})
_DEMAND_DISK = frozenset({"ext4", "crc32c_generic"})
_DEMAND_SHARE = frozenset({"9p", "9pnet_virtio"})
# Options whose values may need modules that run cannot foresee: keep the whole archive.
_MODULE_OPTIONS = ("b2c.insmods", "b2c.device_drivers", "b2c.filesystem", "b2c.nbd")


def boot_needs(request: RunRequest, network: bool) -> kmod.BootNeeds | None:
    """The modules this boot can use (kmod.BootNeeds): its network driver unless the job
    turns the network off (``network`` False), the disk driver with --disk (see
    device_drivers) and the filesystems and transports of its disks, shares and machine.
    None (the whole modules archive) when the user names modules or filesystems, or raw QEMU
    arguments may add devices."""
    drivers = device_drivers(request)
    if drivers is None or _set_by_user(request, *_MODULE_OPTIONS):
        return None
    demand = set(_DEMAND_ALWAYS)
    if request.disks:
        demand |= _DEMAND_DISK
    if request.shares:
        demand |= _DEMAND_SHARE
    if request.arch.machine(request.machine).microvm:
        demand.add(MICROVM_TRANSPORT)
    devices = frozenset(drivers.split(",")) - {"none"}
    return kmod.BootNeeds(network=network, devices=devices, demand=frozenset(demand))


# What check_memory (boot/job.py) leaves the release's own initrds, when it judges a local
# image delivered uncompressed: its image and modules take 60-70 MiB.
_INITRDS_ROOM = 128 * jobs.MiB


def plain_limit(memory: str) -> int:
    """The unpacked size (bytes) up to which a local image's layers go to the guest
    uncompressed (jobs.plain_layout) for a guest of ``memory`` (QEMU's -m): the largest L
    that check_memory still lets boot, the job holding L, podman's tmpfs storage 2 L (the
    staged blobs and the unpacked layers, at most half the RAM), beside jobs.BASE_MEMORY
    and _INITRDS_ROOM. 0 (zstd layers) below about 700 MiB."""
    ram = jobs.parse_memory(memory)
    return max(0, min((ram - jobs.BASE_MEMORY - _INITRDS_ROOM) // 3, ram // 4))


def user_network_ip(request: RunRequest) -> str | None:
    """The kernel ip= value of QEMU's user network (USER_NET_IP) for a boot that brings the
    network up, unless the user configures the network (ip=, b2c.iface, b2c.network) or raw
    QEMU arguments may add a device; None otherwise."""
    if _set_by_user(request, "ip", "b2c.iface", "b2c.network") or _adds_devices(request.qemu_args):
        return None
    return USER_NET_IP


def _boot_files(request: RunRequest) -> tuple[Path, tuple[Path, ...], bool]:
    """The kernel, the initrds, and whether the last initrd is a modules archive run chose
    (the release's, or the one built from --modules-dir; not when --initrd names them all)."""
    kernel = request.kernel
    releases = kernels.release_folder(request.releases, request.arch)
    if kernel is None:
        kernel = kernels.default_kernel(releases, request.arch)
        log.info("kernel: %s (the newest in %s/)", kernel, releases)
    modules = None
    if request.modules_dir is not None:
        release = kernels.kernel_release(kernel)
        modules = kernels.modules_initrd(
            request.modules_dir, request.arch, request.cache_dir, release=release
        )
    if request.initrds:
        return kernel, (*request.initrds, *([modules] if modules else [])), modules is not None
    files = kernels.default_boot_files(releases, request.arch, kernel, modules)
    log.info("initrds for kernel %s: %s", files.release, ", ".join(map(str, files.initrds)))
    return kernel, files.initrds, True


def prepare(request: RunRequest, workdir: Path, *, uncompressed: bool = True) -> Plan:
    """Resolve ``request`` into a Plan; local images from containers-storage are exported
    into ``workdir``. With ``uncompressed``, compressed initrds are replaced by their cached
    plain copies (kernel.uncompressed_initrd). Raises ConfigError (or ToolError) before
    anything boots."""
    qemu.check_settings(request.memory, request.cpus, request.timeout)
    machine = request.arch.machine(request.machine)
    if request.command and not request.images:
        raise ConfigError(
            "a command after -- replaces an image's command, but no --image was given",
            hint="add --image TRANSPORT:IMAGE (e.g. oci-archive:test.tar)",
        )
    images = tuple(jobs.ImageRef.parse(text) for text in request.images)
    shares = tuple(jobs.Share.parse(text) for text in request.shares)
    guests = [share.guest for share in shares]
    if (twice := next((g for g in guests if guests.count(g) > 1), None)) is not None:
        raise ConfigError(
            f"two --share options mount on the guest folder {twice}: the second would hide "
            "the first",
            hint="give each share its own guest folder: HOST_DIR:/guest/dir",
        )
    cache_device = _cache_device(request)
    if (
        cache_device in ("auto", "reset")
        and not request.disks
        and not _adds_devices(request.qemu_args)
    ):
        raise ConfigError(
            f"b2c.cache_device={cache_device} asks for a cache disk, but this boot has "
            "no disk: the guest would look for one for 10 s, then go on without a cache",
            hint="add --disk FILE (a raw image: truncate -s 4G cache.img; the first boot "
            "partitions and formats it)",
        )
    kernel, initrds, run_modules = _boot_files(request)
    if uncompressed:
        initrds = tuple(kernels.uncompressed_initrd(p, request.cache_dir) for p in initrds)

    job = jobs.Job(cmdline=b2c_parameters(request.b2c))
    for opt in overridden_in_append(request):
        log.warning(
            "%s is set both by %s and in --append: %s's value wins (the guest reads run's "
            "job after the kernel command line); drop one of them",
            opt.name, opt.flag, opt.flag,
        )  # fmt: skip
    if machine.microvm:
        job.cmdline.append(options.compose("b2c.insmods", MICROVM_TRANSPORT))
    job.shares = list(shares)
    mounts: list[str] = []
    for share in shares:
        mounts += ["-v", f"{share.guest}:{share.guest}"]
    if shares:
        mounts += ["-w", shares[0].guest]
    for n, ref in enumerate(images, 1):
        if ref.transport.local:
            delivery = jobs.deliver(
                ref, len(job.images) + 1, workdir, plain_limit=plain_limit(request.memory)
            )
            job.images.append(delivery)
            guest_ref = delivery.guest_ref
        else:
            guest_ref = str(ref)
        command = list(request.command) if n == len(images) else []
        argv = (*mounts, guest_ref, *command)
        job.containers.append(jobs.Container(argv, jobs.title_of([str(ref), *command])))
    network = True
    if images and request.b2c.get("b2c.network") is None and not _needs_network(request, images):
        job.cmdline.append(options.compose("b2c.network", "none"))
        network = False
    # Only a boot that speaks to b2c's /init gets a job for it (not the bench's floor).
    b2c_boot = job.cmdline or job.containers or job.shares or _has_b2c_options(request.append)
    if b2c_boot and (drivers := device_drivers(request)) is not None:
        job.cmdline.append(options.compose("b2c.device_drivers", drivers))
    if b2c_boot and network and (address := user_network_ip(request)) is not None:
        job.cmdline.append(options.compose("ip", address))
    needs = boot_needs(request, network) if run_modules and b2c_boot else None
    if needs is not None and uncompressed:
        initrds = (
            *initrds[:-1],
            kernels.boot_modules_initrd(initrds[-1], needs, request.cache_dir),
        )
    empty = not (job.cmdline or job.containers or job.shares)
    return Plan(kernel, initrds, None if empty else job, shares, images, needs)


def new_nonce() -> str:
    """A per-boot nonce for the console contract: 128 random bits, in hexadecimal."""
    return secrets.token_hex(16)


def run_config(
    request: RunRequest, plan: Plan, job_initrd: Path | None, nonce: str | None = None
) -> qemu.RunConfig:
    """The QEMU boot of ``plan``: its kernel, initrds (+ the job's), shares and console nonce."""
    initrds = (*plan.initrds, *([job_initrd] if job_initrd else ()))
    shares = tuple((share.host, jobs.share_tag(n)) for n, share in enumerate(plan.shares, 1))
    return qemu.RunConfig(
        kernel=plan.kernel,
        initrds=initrds,
        append=request.append,
        arch=request.arch,
        accel=request.accel,
        memory=request.memory,
        cpus=request.cpus,
        machine=request.machine,
        disks=request.disks,
        timeout=request.timeout,
        serial_log=request.serial_log,
        qemu_args=request.qemu_args,
        shares=shares,
        firmware=request.firmware,
        nonce=nonce,
    )


def describe(plan: Plan) -> list[str]:
    """Comment lines for --dry-run: the modules the boot would keep, and what the job initrd
    would carry."""
    lines = []
    if (needs := plan.modules) is not None:
        kept = [*(["its network driver"] if needs.network else []), *sorted(needs.devices)]
        lines.append(
            f"# {plan.initrds[-1]}: only the modules this boot can load go to the guest: "
            + ", ".join([*kept, *sorted(needs.demand)])
            + ", with their dependencies and the archive's boot modules"
        )
    if plan.job is None:
        return lines
    lines += [f"# job cmdline: {' '.join(plan.job.cmdline) or '(none)'}"]
    lines += [
        f"# container {n}: {shlex.join(c.argv)}" for n, c in enumerate(plan.job.containers, 1)
    ]
    lines += [f"# share {s.host} -> {s.guest}" for s in plan.shares]
    return lines


def launch(request: RunRequest) -> int:
    """Boot ``request`` (or print its command for a ``dry_run``); returns the exit code of
    ``b2c-builder run``: the pipeline status, or one of console.ExitCode's."""
    if request.pxe is not None or request.cdrom is not None:
        return launch_firmware_boot(request)
    with jobs.workdir() as tmp:
        # A dry run decompresses nothing: it shows the initrds as given.
        plan = prepare(request, tmp, uncompressed=not request.dry_run)
        if plan.job is not None and plan.job.images:
            jobs.check_memory(
                request.memory,
                sum(path.stat().st_size for path in plan.initrds),
                plan.job,
                cache_disk=bool(request.disks),
            )
        job = plan.job
        if not request.dry_run:
            # The console contract's nonce rides in the job: every boot gets one (console.py).
            job = job if job is not None else jobs.Job()
            job.nonce = new_nonce()
        if request.check:  # what /init would reject: the line and the job's b2c options
            hostlint.refuse_errors(
                request.append,
                job=job.cmdline if job is not None else (),
                outcome="nothing was booted",
            )
        if request.junit is not None:
            check_writable(request.junit, "--junit")
        job_initrd = job.write(tmp / "job.cpio") if job is not None else None
        # A dry run's job has no nonce: nothing reads its console.
        cfg = run_config(
            request, plan, job_initrd, (job.nonce or None) if job is not None else None
        )
        if request.dry_run:
            lines = describe(plan)
            if job_initrd is not None:
                # The work folder goes when run exits: the listed path does not outlive it.
                lines.append(
                    f"# {job_initrd}: the job above as an initrd, written by each run and "
                    "removed when it exits"
                )
            print("\n".join([*lines, qemu.dry_run(cfg)]))
            return 0
        return boot_and_report(cfg, request.junit)


def check_writable(path: Path, what: str) -> None:
    """``path`` can be written once the boot is over: its folder exists and is writable,
    and it is not a folder. Raises ConfigError before anything boots."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder", hint="name a file")
    if not folder.is_dir():
        raise ConfigError(f"{what} {path}: no folder {folder}", hint="create it first")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{what} {path} cannot be written", hint="choose a writable path")


def boot_and_report(cfg: qemu.RunConfig, junit_path: Path | None) -> int:
    """Boot ``cfg`` with its console on stdout; write the JUnit report (one testsuite per
    container, see junit.py) when asked; return ``b2c-builder run``'s exit code."""
    from b2c_builder.boot import console, junit

    lines: list[str] = []
    result = qemu.boot(cfg, echo=qemu.echo_stdout, observe=lines.append)
    if junit_path is not None:
        # Raw lines and the nonce: a container's fake markers cannot make testcases.
        runs = console.container_runs(lines, nonce=cfg.nonce)
        junit.write(junit_path, runs)
        log.info("JUnit report: %s (%d containers)", junit_path, len(runs))
    return int(result.exit_code)


def firmware_run_config(request: RunRequest) -> qemu.RunConfig:
    """The QEMU boot of ``--pxe`` or ``--cdrom``: the firmware finds the boot entry, which
    names the kernel, initrds and command line. Raises ConfigError for the options that
    need a kernel boot (the job initrd, --kernel, --initrd, --append...)."""
    source = "--pxe" if request.pxe is not None else "--cdrom"
    kernel_only = {
        "--kernel": request.kernel is not None,
        "--initrd": bool(request.initrds),
        "--modules-dir": request.modules_dir is not None,
        "--image": bool(request.images),
        "--share": bool(request.shares),
        "a command after --": bool(request.command),
        "the b2c option flags": any(v not in (None, False, []) for v in request.b2c.values()),
        "--append": bool(request.append),
    }
    if given := [name for name, present in kernel_only.items() if present]:
        raise ConfigError(
            f"{', '.join(given)}: only for a kernel boot (--kernel), not with {source}",
            hint="with --pxe or --cdrom the boot entry names the kernel, initrds and command "
            "line (b2c-builder bootcfg / iso write them)",
        )
    return qemu.RunConfig(
        arch=request.arch,
        accel=request.accel,
        memory=request.memory,
        cpus=request.cpus,
        machine=request.machine,
        disks=request.disks,
        timeout=request.timeout,
        serial_log=request.serial_log,
        qemu_args=request.qemu_args,
        pxe=request.pxe,
        bootfile=request.bootfile,
        cdrom=request.cdrom,
        firmware=request.firmware,
    )


def launch_firmware_boot(request: RunRequest) -> int:
    """``launch`` for ``--pxe`` and ``--cdrom``: same exit status contract (the guest's
    kernel command line must send the console to ttyS0)."""
    cfg = firmware_run_config(request)
    if request.dry_run:
        print(qemu.dry_run(cfg))
        return 0
    return boot_and_report(cfg, request.junit)
