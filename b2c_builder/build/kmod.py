"""Kernel modules: the dependency closure from each module's .modinfo, and the modules archive.

A Debian linux-image package ships lib/modules/<version>/ (usr/lib/modules/<version>/ since the
/usr merge) with compressed modules, modules.builtin and modules.order, but no modules.dep:
depmod runs in its postinst. We read ``depends=`` from the ``.modinfo`` section of the modules
we need, and write what busybox modprobe reads (in /lib/modules/`uname -r`/):

- modules.dep (required): ``path.ko: dep.ko ...`` with paths relative to that directory and
  *every* transitive dependency listed, last to load first (busybox reverses the list and
  loads it as is; kmod's depmod writes the same order);
- modules.builtin (optional): names that modprobe then skips without an error;
- modules.order, restricted to the shipped modules;
- modules.alias: ``alias PATTERN MODULE`` for every ``alias=`` of a shipped module, as depmod
  writes it: busybox modprobe resolves names it does not find in modules.dep through it, so the
  kernel's own requests (``fs-ext4`` on mount, ``crypto-crc32c``, ``9p-virtio``; see
  request_module() and /proc/sys/kernel/modprobe) and device modaliases find their module;
- b2c.modules: the requested modules, each with when /init loads it (``LoadWhen``,
  init/modules.sh).

The archive puts them under usr/lib/modules/<version>: it is unpacked over the base image,
where lib -> usr/lib, and the kernel's unpacker replaces an existing path whose type differs
(init/initramfs.c clean_path()), so a "lib" directory entry would delete that symlink.

The modules are shipped decompressed: busybox may not read .ko.xz, and the outer archive
compresses plain modules better. Softdeps (``softdep=pre: crypto-crc32c``) name aliases and
are not followed: put the module that provides one in the requested set (crc32c_generic).
"""

from __future__ import annotations

import difflib
import io
import os
import posixpath
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from b2c_builder.build import compress
from b2c_builder.build.compress import CompressError
from b2c_builder.build.cpio import CpioEntry
from b2c_builder.build.rootfs import Kind, Origin, Rootfs, normalize
from b2c_builder.build.tree import HostTree, Tree
from b2c_builder.config import Arch
from b2c_builder.errors import ExtractError, ResolveError
from b2c_builder.log import log


class LoadWhen(StrEnum):
    """When /init loads a module of b2c.modules (its second word; init/modules.sh).

    Every boot pays for what it loads before its first container (about 0.05-0.5 s each under
    TCG), so each module is loaded at the latest moment that still serves it.
    """

    boot = "boot"  # at once: what the user asked for (--module, b2c.insmods)
    network = "network"  # at once, when the boot brings the network up (QEMU's NIC driver)
    # In the background, waited for before the cache device, a swap device, volumes and
    # each container or service start (hardware drivers, whose probes take time; the network
    # setup waits for an interface to appear).
    device = "device"
    # Never by /init: the kernel asks for it when it is used (a mount asks for fs-NAME, the
    # crypto API for crypto-NAME, 9p for 9p-TRANSPORT), through modules.alias.
    demand = "demand"


# For QEMU (virtio, 9p, virtiofs) and common hardware, with when /init loads each. Members a
# kernel builds in are satisfied; members a kernel does not have at all (renamed, dropped) are
# skipped.
DEFAULT_MODULES: Mapping[str, LoadWhen] = MappingProxyType(
    {
        "virtio_pci": LoadWhen.boot,
        # The virtio transport of QEMU's microvm machine (run --machine microvm). Not "boot":
        # every q35 boot would pay a modprobe for a transport with no device; "demand" ships
        # it, and run's job loads it by name on microvm boots (b2c.insmods=virtio_mmio, see
        # launch.MICROVM_TRANSPORT), since no alias request ever names it.
        "virtio_mmio": LoadWhen.demand,
        "virtio_net": LoadWhen.network,
        # Real NICs load first in the background: /init waits for an interface to appear.
        "e1000": LoadWhen.device,
        "e1000e": LoadWhen.device,
        "virtio_blk": LoadWhen.device,
        "virtio_scsi": LoadWhen.device,
        "virtio_console": LoadWhen.device,
        "nvme": LoadWhen.device,
        "ahci": LoadWhen.device,
        "sd_mod": LoadWhen.device,
        "overlay": LoadWhen.demand,  # fs-overlay; /init's kernel check loads it first
        "ext4": LoadWhen.demand,  # fs-ext4; /init loads it with a cache device
        "crc32c_generic": LoadWhen.demand,  # crypto-crc32c, asked for by ext4
        "9p": LoadWhen.demand,  # fs-9p
        "9pnet_virtio": LoadWhen.demand,  # 9p-virtio
        "virtiofs": LoadWhen.demand,  # fs-virtiofs
    }
)

# Module file names; the data is decompressed by its magic (compress.unpack).
_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")
_MODULES_DIR_RE = re.compile(r"^(?:usr/)?lib/modules/([^/]+)$")
MODULES_DIR = "usr/lib/modules"  # /lib/modules in the usr-merged image
LOAD_LIST = "b2c.modules"  # read by init/modules.sh
ALIASES = "modules.alias"  # read by busybox modprobe


def canonical_name(name: str) -> str:
    """Module names treat '-' and '_' alike; the kernel spells them with '_'."""
    return name.replace("-", "_")


def name_of(path: str) -> str:
    """Module name from a file name, as modprobe derives it: ``kvm-intel.ko.xz`` -> kvm_intel."""
    return canonical_name(posixpath.basename(path).split(".", 1)[0])


def _suffix(path: str) -> str | None:
    return next((suffix for suffix in _SUFFIXES if path.endswith(suffix)), None)


@dataclass(frozen=True)
class Module:
    name: str
    path: str  # relative to lib/modules/<version>, as in the tree: kernel/fs/ext4/ext4.ko.xz
    depends: tuple[str, ...]  # direct dependencies (normalised names)
    softdeps: tuple[str, ...] = ()  # "pre: crypto-crc32c", informational
    vermagic: str = ""
    aliases: tuple[str, ...] = ()  # its alias= patterns: "fs-ext4", "pci:v00008086d...*"

    @property
    def plain_path(self) -> str:
        """Where the decompressed module goes: kernel/fs/ext4/ext4.ko."""
        suffix = _suffix(self.path) or ".ko"
        return self.path[: -len(suffix)] + ".ko"


def parse_modinfo(data: bytes, *, what: str) -> dict[str, list[str]]:
    """The ``.modinfo`` section of an (uncompressed) module: key -> values, in order."""
    # Imported here: `run` imports this module for its archives (boot/kernel.py) and pays
    # every import before QEMU starts; only a build or --modules-dir reads ELF.
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        section = ELFFile(io.BytesIO(data)).get_section_by_name(".modinfo")
    except ELFError as exc:
        raise ExtractError(f"{what} is not a valid kernel module: {exc}") from exc
    if section is None:
        raise ExtractError(f"{what} has no .modinfo section: is it a kernel module?")
    info: dict[str, list[str]] = {}
    for item in section.data().split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


@dataclass
class ModuleTree:
    """The modules of one kernel: files under lib/modules/<version> of a tree.

    ``base`` is that directory's canonical path in ``tree`` ("" for a directory on disk).
    Only the modules that a closure needs are read (and decompressed).
    """

    tree: Tree
    base: str
    version: str  # the kernel release, `uname -r`
    files: dict[str, str]  # module name -> path relative to base
    builtin: frozenset[str]
    vmlinuz: str | None = None  # path of the kernel image in the tree, if it has one
    origin: Callable[[str], Origin | None] = lambda _path: None
    _modules: dict[str, Module] = field(default_factory=dict, repr=False)

    @classmethod
    def from_paths(
        cls,
        tree: Tree,
        base: str,
        version: str,
        paths: Iterable[str],
        *,
        vmlinuz: str | None = None,
        origin: Callable[[str], Origin | None] = lambda _path: None,
    ) -> ModuleTree:
        """Index module files (paths relative to ``base``); modules.builtin is read if there."""
        files: dict[str, str] = {}
        for path in sorted(paths):
            if _suffix(path) is None:
                continue
            name = name_of(path)
            # Like depmod's default "search updates built-in": updates/ wins.
            if name not in files or path.startswith("updates/"):
                files[name] = path
        modules = cls(tree, base, version, files, frozenset(), vmlinuz, origin)
        builtin = (modules.read_optional("modules.builtin") or b"").decode().split()
        modules.builtin = frozenset(name_of(line) for line in builtin)
        return modules

    @classmethod
    def from_directory(cls, path: Path, *, origin: Origin | None = None) -> ModuleTree:
        """A lib/modules/<version> directory on disk (--modules-dir); version is its name."""
        path = path.resolve()
        if not path.is_dir():
            raise ResolveError(
                f"{path} is not a directory", hint="point --modules-dir at lib/modules/<version>"
            )
        paths = []
        for dirpath, _dirs, filenames in os.walk(path):
            rel = os.path.relpath(dirpath, path)
            for name in filenames:
                if not os.path.islink(os.path.join(dirpath, name)):
                    paths.append(posixpath.normpath(posixpath.join(rel, name)))
        tree = cls.from_paths(HostTree(path), "", path.name, paths, origin=lambda _p: origin)
        if not tree.files:
            raise ResolveError(
                f"no kernel modules (*.ko, *.ko.xz, *.ko.zst, *.ko.gz) under {path}",
                hint="point --modules-dir at lib/modules/<version>",
            )
        return tree

    @classmethod
    def from_manifest(cls, manifest: Rootfs, arch: Arch) -> ModuleTree:
        """The one kernel in an extracted linux-image package for ``arch``: lib/ or
        usr/lib/modules/<version>, and the image where that architecture's package puts it
        (``arch.facts.kernel_image``). Raises ResolveError unless there is exactly one
        version."""
        dirs = kernel_versions(manifest)
        if len(dirs) != 1:
            found = ", ".join(sorted(dirs)) or "none"
            raise ResolveError(
                f"expected one kernel version under lib/modules, found: {found}",
                hint="pass a single linux-image package",
            )
        ((version, base),) = dirs.items()
        prefix = base + "/"
        paths = [
            path[len(prefix) :]
            for path, entry in manifest.entries.items()
            if path.startswith(prefix) and entry.kind is Kind.FILE
        ]
        vmlinuz = manifest.resolve(arch.facts.kernel_image.format(release=version))

        def origin(path: str) -> Origin | None:
            entry = manifest.entries.get(prefix + path)
            return entry.origin if entry is not None else None

        return cls.from_paths(manifest, base, version, paths, vmlinuz=vmlinuz, origin=origin)

    def kernel_image(self) -> bytes:
        """The bootable kernel of the package the modules came from (see from_manifest)."""
        if self.vmlinuz is None:
            raise ResolveError(
                f"no kernel image for {self.version} beside the modules",
                hint="use --kernel-package to take the kernel from Debian",
            )
        return self.tree.read(self.vmlinuz)

    def _path(self, rel: str) -> str:
        return posixpath.join(self.base, rel) if self.base else rel

    def read(self, rel: str) -> bytes:
        return self.tree.read(self._path(rel))

    def read_optional(self, rel: str) -> bytes | None:
        canonical = self.tree.resolve(self._path(rel))
        return None if canonical is None else self.tree.read(canonical)

    def names(self) -> list[str]:
        return sorted(self.files)

    def __contains__(self, name: str) -> bool:
        return canonical_name(name) in self.files

    def decompressed(self, module: Module) -> bytes:
        """The plain .ko of ``module``."""
        return self._plain(module.path)

    def _plain(self, path: str) -> bytes:
        try:
            return compress.unpack(self.read(path))
        except CompressError as exc:
            raise ExtractError(f"cannot decompress module {path}: {exc.message}") from exc

    def module(self, name: str) -> Module:
        """The module called ``name`` (its .modinfo read once); KeyError if it is not here."""
        name = canonical_name(name)
        if name not in self._modules:
            path = self.files[name]
            info = parse_modinfo(self._plain(path), what=path)
            depends = [
                canonical_name(d) for v in info.get("depends", []) for d in v.split(",") if d
            ]
            vermagic = (info.get("vermagic") or [""])[0]
            if vermagic and vermagic.split()[0] != self.version:
                log.warning("module %s was built for %s, not %s", path, vermagic, self.version)
            self._modules[name] = Module(
                name,
                path,
                tuple(depends),
                tuple(info.get("softdep", [])),
                vermagic,
                tuple(info.get("alias", [])),
            )
        return self._modules[name]


def kernel_versions(manifest: Rootfs) -> dict[str, str]:
    """Kernel version -> canonical path of its modules directory, in a staging manifest."""
    found: dict[str, str] = {}
    for path, entry in manifest.entries.items():
        match = _MODULES_DIR_RE.match(path)
        if match and entry.kind is Kind.DIR:
            found.setdefault(match.group(1), path)
    return found


def module_closure(
    modules: ModuleTree, names: Iterable[str], *, optional: Collection[str] = ()
) -> list[Module]:
    """The modules to load for ``names``, dependencies first, each once.

    Built-in names are satisfied. A name that is neither a module nor built in is an error
    (with close matches), unless it is ``optional`` (e.g. a DEFAULT_MODULES member that this
    kernel version renamed or dropped): then it is skipped with a debug message.
    """
    skippable = {canonical_name(n) for n in optional}
    order: list[Module] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done or name in modules.builtin:
            return
        if name in chain:
            raise ResolveError(f"circular module dependency: {' -> '.join((*chain, name))}")
        if name not in modules.files:
            if chain:
                raise ResolveError(
                    f"module {chain[-1]} depends on {name}, "
                    f"which is not in kernel {modules.version}"
                )
            raise _unknown(modules, name)
        module = modules.module(name)
        for dep in module.depends:
            visit(dep, (*chain, name))
        done.add(name)
        order.append(module)

    for requested in names:
        name = canonical_name(requested)
        if name in modules.builtin:
            log.debug("module %s is built into kernel %s", name, modules.version)
        elif name not in modules.files and name in skippable:
            log.debug("module %s does not exist in kernel %s, skipped", name, modules.version)
            continue
        visit(name, ())
    return order


def _unknown(modules: ModuleTree, name: str) -> ResolveError:
    close = difflib.get_close_matches(name, [*modules.files, *modules.builtin], n=5)
    hint = f"did you mean: {', '.join(close)}?" if close else "check the name with modinfo"
    return ResolveError(
        f"kernel {modules.version} has no module named {name!r} (neither a file nor built in)",
        hint=hint,
    )


def modules_dep(closure: Iterable[Module]) -> bytes:
    """modules.dep for ``closure`` (dependencies first): each line lists all its transitive
    dependencies, the last to be loaded first, with the paths of the decompressed modules."""
    by_name = {m.name: m for m in closure}
    position = {name: i for i, name in enumerate(by_name)}
    lines: list[str] = []
    for module in by_name.values():
        needed: set[str] = set()
        stack = list(module.depends)
        while stack:
            dep = stack.pop()
            if dep in by_name and dep not in needed:
                needed.add(dep)
                stack.extend(by_name[dep].depends)
        deps = sorted(needed, key=position.__getitem__, reverse=True)
        lines.append(f"{module.plain_path}:" + "".join(f" {by_name[d].plain_path}" for d in deps))
    return "".join(line + "\n" for line in sorted(lines)).encode()


def modules_alias(closure: Iterable[Module]) -> bytes:
    """modules.alias for ``closure``: ``alias PATTERN MODULE`` lines (depmod's format; the
    patterns are fnmatch globs, from each module's .modinfo), sorted."""
    lines = {f"alias {alias} {m.name}\n" for m in closure for alias in m.aliases}
    return "".join(sorted(lines)).encode()


def load_list(names: Iterable[str], when: Mapping[str, LoadWhen]) -> bytes:
    """b2c.modules: ``NAME WHEN`` lines for init/modules.sh; a name ``when`` does not list
    is loaded at boot (``LoadWhen.boot``)."""
    header = (
        "# Requested kernel modules and when /init loads them (boot, network, device, demand);\n"
        "# modprobe loads their dependencies (modules.dep).\n"
    )
    lines = [f"{n} {when.get(n, LoadWhen.boot)}\n" for n in names]
    return (header + "".join(lines)).encode()


def add_modules(
    manifest: Rootfs,
    modules: ModuleTree,
    names: Iterable[str],
    *,
    required: Collection[str],
    when: Mapping[str, LoadWhen] = DEFAULT_MODULES,
) -> list[Module]:
    """Add the closure of ``names`` to ``manifest``, ready for busybox modprobe and /init.

    Names in ``required`` (what the user asked for) must exist, and are loaded at boot; the
    others (the default set) are skipped when this kernel has no such module, and are loaded
    as ``when`` says. Files go under usr/lib/modules/<version> (see the module docstring).
    Returns the closure, in load order.
    """
    names = list(dict.fromkeys(canonical_name(n) for n in names))
    must = {canonical_name(n) for n in required}
    closure = module_closure(modules, names, optional=[n for n in names if n not in must])
    moddir = f"{MODULES_DIR}/{modules.version}"
    for module in closure:
        manifest.add_file(
            posixpath.join(moddir, module.plain_path),
            modules.decompressed(module),
            0o644,
            origin=modules.origin(module.path),
        )
    manifest.add_file(posixpath.join(moddir, "modules.dep"), modules_dep(closure))
    builtin = modules.read_optional("modules.builtin")
    if builtin is not None:
        manifest.add_file(
            posixpath.join(moddir, "modules.builtin"),
            builtin,
            origin=modules.origin("modules.builtin"),
        )
    manifest.add_file(posixpath.join(moddir, "modules.order"), _modules_order(modules, closure))
    manifest.add_file(posixpath.join(moddir, ALIASES), modules_alias(closure))
    shipped = {m.name for m in closure}
    load = [n for n in names if n in shipped]
    schedule = {canonical_name(n): w for n, w in when.items() if canonical_name(n) not in must}
    manifest.add_file(posixpath.join(moddir, LOAD_LIST), load_list(load, schedule))
    log.info(
        "%d kernel modules for %s (%d requested, built-in or absent ones skipped)",
        len(closure),
        modules.version,
        len(load),
    )
    return closure


def _modules_order(modules: ModuleTree, closure: list[Module]) -> bytes:
    """The kernel's modules.order restricted to the shipped modules (others appended)."""
    shipped = {m.name: m.plain_path for m in closure}
    order = (modules.read_optional("modules.order") or b"").decode().split()
    lines = [shipped.pop(name_of(line)) for line in order if name_of(line) in shipped]
    return "".join(f"{line}\n" for line in [*lines, *shipped.values()]).encode()


# --- one boot's share of a modules archive ---------------------------------------------------


@dataclass(frozen=True)
class BootNeeds:
    """The modules of an archive that one boot can load, by their class in b2c.modules
    (LoadWhen): every ``boot`` module, the ``network`` ones when ``network``, and the
    ``device`` and ``demand`` modules named in ``devices`` and ``demand``; each with the
    modules it depends on (modules.dep)."""

    network: bool
    devices: frozenset[str] = frozenset()
    demand: frozenset[str] = frozenset()

    def wants(self, name: str, when: LoadWhen) -> bool:
        """True if a module ``name`` that b2c.modules schedules ``when`` is for this boot."""
        match when:
            case LoadWhen.boot:
                return True
            case LoadWhen.network:
                return self.network
            case LoadWhen.device:
                return name in self.devices
            case LoadWhen.demand:
                return name in self.demand
        return True  # pragma: no cover - every LoadWhen is matched above

    def key(self) -> str:
        """A stable text of these needs, for cache keys."""
        return f"network={self.network};devices={sorted(self.devices)};demand={sorted(self.demand)}"


def parse_load_list(data: bytes) -> dict[str, LoadWhen]:
    """b2c.modules (load_list's format) -> {module name: when}; a missing or unknown WHEN is
    ``boot``, as init/modules.sh loads it."""
    schedule: dict[str, LoadWhen] = {}
    for line in data.decode(errors="replace").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        when = words[1] if len(words) > 1 else LoadWhen.boot
        schedule[canonical_name(words[0])] = (
            LoadWhen(when) if when in LoadWhen.__members__ else LoadWhen.boot
        )
    return schedule


def parse_modules_dep(data: bytes) -> dict[str, tuple[str, ...]]:
    """modules.dep (``path.ko: dep.ko ...``) -> {module name: names of all it depends on}."""
    deps: dict[str, tuple[str, ...]] = {}
    for line in data.decode(errors="replace").splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            deps[name_of(path.strip())] = tuple(name_of(dep) for dep in rest.split())
    return deps


def archive_subset(
    entries: Iterable[CpioEntry], needs: BootNeeds
) -> tuple[Rootfs, frozenset[str]] | None:
    """A modules archive (``entries``, as add_modules writes it) cut to the modules ``needs``
    selects and their dependencies: the other modules' files go, and so do their lines in
    modules.dep, modules.alias, modules.order and b2c.modules. Returns the new archive and the
    names of the modules it keeps; None when ``entries`` are not the modules archive of one
    kernel (a path outside usr/lib/modules/<version>, or no b2c.modules or modules.dep)."""
    by_path = {normalize(e.name): e for e in entries}
    by_path.pop("", None)
    versions = {p.split("/")[3] for p in by_path if p.startswith(f"{MODULES_DIR}/")}
    if len(versions) != 1:
        return None
    moddir = f"{MODULES_DIR}/{versions.pop()}"
    if any(not (f"{moddir}/".startswith(f"{p}/") or p.startswith(f"{moddir}/")) for p in by_path):
        return None
    listing, dep = by_path.get(f"{moddir}/{LOAD_LIST}"), by_path.get(f"{moddir}/modules.dep")
    if listing is None or dep is None:
        return None
    depends = parse_modules_dep(dep.data)
    keep: set[str] = set()
    for name, when in parse_load_list(listing.data).items():
        if name in depends and needs.wants(name, when):
            keep.update((name, *depends[name]))
    subset = Rootfs()
    for path, entry in by_path.items():
        if _suffix(path) is not None and name_of(path) not in keep:
            continue
        match entry.kind:
            case Kind.DIR:
                subset.add_dir(path, entry.perm)
            case Kind.SYMLINK:
                subset.add_symlink(path, entry.target)
            case Kind.FILE:
                subset.add_file(path, _kept_lines(path, moddir, entry.data, keep), entry.perm)
            case _:
                return None
    return subset, frozenset(keep)


def _kept_lines(path: str, moddir: str, data: bytes, keep: set[str]) -> bytes:
    """The lines of an index file of ``moddir`` that name a kept module (other files as is)."""
    name = posixpath.relpath(path, moddir)
    lines = data.decode(errors="replace").splitlines(keepends=True)
    if name == "modules.dep" or name == "modules.order":
        lines = [ln for ln in lines if name_of(ln.partition(":")[0].strip()) in keep]
    elif name == ALIASES:
        lines = [ln for ln in lines if ln.split()[2:3] and canonical_name(ln.split()[2]) in keep]
    elif name == LOAD_LIST:
        lines = [
            ln for ln in lines if not ln.split() or ln.startswith("#")
            or canonical_name(ln.split()[0]) in keep
        ]  # fmt: skip
    else:
        return data
    return "".join(lines).encode()
