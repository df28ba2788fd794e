"""The shared-library closure of programs, found by parsing ELF inside a tree (never by running).

This follows what the dynamic loader (glibc's ld.so) does in the booted image, where there is
no ld.so.cache: PT_INTERP names the loader; DT_NEEDED entries are loaded breadth first, each
soname looked up in DT_RPATH of the object and of the chain of objects that loaded it (only
when the object has no DT_RUNPATH: an object with DT_RUNPATH has its DT_RPATH ignored), then
in the object's DT_RUNPATH, then in the system directories. ``$ORIGIN`` is the directory of the
object as found (of the resolved program for the executable itself). A candidate of another
ELF class or machine is skipped, as ld.so does. A name already loaded (as a requested name or
by its DT_SONAME, e.g. the loader's ld-linux-x86-64.so.2 needed by libc) is not searched again.
"""

from __future__ import annotations

import io
import posixpath
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from b2c_builder.build.tree import Tree
from b2c_builder.config import Arch
from b2c_builder.errors import ResolveError
from b2c_builder.log import log

_ELF_MAGIC = b"\x7fELF"
_ORIGIN_RE = re.compile(r"\$(ORIGIN\b|\{ORIGIN\})")
_STRING_TAGS = frozenset({"DT_NEEDED", "DT_SONAME", "DT_RPATH", "DT_RUNPATH"})


@dataclass(frozen=True)
class ElfInfo:
    """What the loader reads from one ELF file."""

    elfclass: int  # 32 or 64
    little_endian: bool
    machine: str  # e_machine as pyelftools names it, e.g. "EM_X86_64"
    interp: str | None  # PT_INTERP
    needed: tuple[str, ...]  # DT_NEEDED, in order
    soname: str | None
    rpath: tuple[str, ...]  # DT_RPATH entries (empty when the object has a DT_RUNPATH)
    runpath: tuple[str, ...]


@dataclass(frozen=True)
class Needed:
    """A file the image must contain for a program to start.

    ``path`` is where the loader looks for it (the PT_INTERP path, or a search directory joined
    with the soname): it must resolve to ``canonical`` in the image, so the symlinks met on
    the way (``lib -> usr/lib``, ``libfoo.so.1 -> libfoo.so.1.2.3``) are needed too.
    """

    path: str
    canonical: str
    soname: str  # the DT_NEEDED name, or the PT_INTERP path for the loader
    needed_by: str  # canonical path of the first object that asked for it


def parse(data: bytes, what: str = "a file") -> ElfInfo | None:
    """The loader-relevant fields of an ELF file, or None if ``data`` is not ELF at all.

    Data that starts with the ELF magic but cannot be parsed (truncated, offsets out of
    range...) raises ResolveError naming ``what``: it is a broken program or library, not
    one that needs no libraries.
    """
    if not data.startswith(_ELF_MAGIC):
        return None
    try:
        elf = ELFFile(io.BytesIO(data))
        interp: str | None = None
        needed: list[str] = []
        soname: str | None = None
        rpath: list[str] = []
        runpath: list[str] = []
        for segment in elf.iter_segments():
            if isinstance(segment, InterpSegment):
                interp = segment.get_interp_name()
            elif isinstance(segment, DynamicSegment):
                for tag in segment.iter_tags():
                    kind = tag.entry.d_tag
                    if kind not in _STRING_TAGS:
                        continue
                    # pyelftools sets the string as an attribute: DT_NEEDED -> .needed
                    value = str(getattr(tag, kind[3:].lower()))
                    if kind == "DT_NEEDED":
                        needed.append(value)
                    elif kind == "DT_SONAME":
                        soname = value
                    elif kind == "DT_RPATH":
                        rpath.extend(value.split(":"))
                    else:
                        runpath.extend(value.split(":"))
        return ElfInfo(
            elfclass=elf.elfclass,
            little_endian=elf.little_endian,
            machine=elf["e_machine"],
            interp=interp,
            needed=tuple(needed),
            soname=soname,
            rpath=() if runpath else tuple(rpath),
            runpath=tuple(runpath),
        )
    except Exception as exc:  # pyelftools raises many kinds on malformed input
        detail = str(exc) or type(exc).__name__
        raise ResolveError(
            f"{what} has the ELF magic but is not a valid ELF file ({detail})",
            hint="the package is corrupt or truncated; fetch it again or report it",
        ) from exc


def system_dirs(arch: Arch) -> tuple[str, ...]:
    """The loader's built-in search path on Debian (``ld.so --help``), without a leading /."""
    return (f"lib/{arch.facts.multiarch}", f"usr/lib/{arch.facts.multiarch}", "lib", "usr/lib")


def matches(info: ElfInfo, arch: Arch) -> bool:
    """Whether ld.so for ``arch`` would accept this object (class, byte order, machine)."""
    facts = arch.facts
    return (
        info.elfclass == 64
        and info.little_endian == facts.little_endian
        and info.machine == facts.elf_machine
    )


@dataclass
class _Object:
    """One loaded object in a simulated process."""

    path: str  # as found (the loader's l_name)
    canonical: str
    info: ElfInfo
    loader: _Object | None
    origin: str


@dataclass
class _Resolver:
    tree: Tree
    arch: Arch
    cache: dict[str, ElfInfo | None] = field(default_factory=dict)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (needed by, soname)

    def info(self, canonical: str) -> ElfInfo | None:
        if canonical not in self.cache:
            self.cache[canonical] = parse(self.tree.read(canonical), f"/{canonical}")
        return self.cache[canonical]

    def program(self, path: str) -> list[Needed]:
        """The closure of one program, as ld.so would load it in its own process."""
        canonical = self.tree.resolve(path)
        if canonical is None:
            raise ResolveError(f"/{path.lstrip('/')} is not in the tree, cannot read its ELF")
        info = self.info(canonical)
        if info is None:
            log.debug("/%s is not ELF, no libraries needed", canonical)
            return []
        if not matches(info, self.arch):
            raise ResolveError(
                f"/{canonical} is a {info.elfclass}-bit {info.machine} binary, not {self.arch}",
                hint=f"take the program from the {self.arch} package",
            )
        found: list[Needed] = []
        loaded: dict[str, _Object] = {}  # requested name, soname or canonical path -> object
        main = _Object(canonical, canonical, info, None, posixpath.dirname(canonical))
        loaded[canonical] = main
        if info.interp is not None:
            interp = self._load_interp(main, loaded)
            if interp is not None:
                found.append(Needed(interp.path, interp.canonical, info.interp, canonical))
        queue = deque([main])
        while queue:
            obj = queue.popleft()
            for name in obj.info.needed:
                if name in loaded:
                    continue
                hit = self._search(name, obj)
                if hit is None:
                    self.missing.append((obj.canonical, name))
                    continue
                found.append(Needed(hit.path, hit.canonical, name, obj.canonical))
                known = loaded.get(hit.canonical)
                if known is not None:  # the same file under another name
                    loaded[name] = known
                    continue
                for key in (name, hit.canonical, hit.info.soname):
                    if key:
                        loaded.setdefault(key, hit)
                queue.append(hit)
        return found

    def _load_interp(self, main: _Object, loaded: dict[str, _Object]) -> _Object | None:
        assert main.info.interp is not None
        path = main.info.interp.lstrip("/")
        canonical = self.tree.resolve(path)
        info = self.info(canonical) if canonical is not None else None
        if canonical is None or info is None:
            self.missing.append((main.canonical, main.info.interp))
            return None
        obj = _Object(path, canonical, info, main, posixpath.dirname(path))
        for key in (main.info.interp, canonical, info.soname):
            if key:
                loaded.setdefault(key, obj)
        return obj

    def _search(self, name: str, requester: _Object) -> _Object | None:
        if "/" in name:  # a path, used as is
            return self._try(name.lstrip("/"), requester)
        for directory in self._search_dirs(requester):
            hit = self._try(posixpath.join(directory, name), requester)
            if hit is not None:
                return hit
        return None

    def _search_dirs(self, requester: _Object) -> Iterable[str]:
        if not requester.info.runpath:
            chain: _Object | None = requester
            while chain is not None:
                yield from self._expand(chain.info.rpath, chain)
                chain = chain.loader
        yield from self._expand(requester.info.runpath, requester)
        yield from system_dirs(self.arch)

    def _expand(self, entries: tuple[str, ...], obj: _Object) -> Iterable[str]:
        for entry in entries:
            expanded = _ORIGIN_RE.sub(lambda _: "/" + obj.origin, entry)
            if "$" in expanded or not expanded.startswith("/"):
                log.debug("/%s: ignoring search path entry %r", obj.canonical, entry)
                continue
            directory = _physical(self.tree, expanded)
            if directory is not None:
                yield directory

    def _try(self, path: str, requester: _Object) -> _Object | None:
        canonical = self.tree.resolve(path)
        if canonical is None:
            return None
        info = self.info(canonical)
        if info is None or not matches(info, self.arch):
            log.debug("skipping /%s: not a %s shared object", canonical, self.arch)
            return None
        return _Object(path, canonical, info, requester, posixpath.dirname(path))


def _physical(tree: Tree, path: str) -> str | None:
    """``path`` with each '..' applied to the resolved directory before it, as the kernel does.

    Other components keep their spelling, so that symlinked directories stay visible to
    whoever copies the path into the image. None if a directory before a '..' is missing.
    """
    done: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            resolved = tree.resolve("/".join(done))
            if resolved is None:
                return None
            done = resolved.split("/")[:-1] if resolved else []
            continue
        done.append(part)
    return "/".join(done)


def needed_files(tree: Tree, programs: Iterable[str], arch: Arch) -> list[Needed]:
    """Every library and loader the ``programs`` need, each with the path it is loaded by.

    Sorted by path, one entry per path. Raises ResolveError naming every missing soname.
    """
    resolver = _Resolver(tree, arch)
    result: dict[str, Needed] = {}
    for program in programs:
        for needed in resolver.program(program):
            result.setdefault(needed.path, needed)
    if resolver.missing:
        lines = sorted({f"{name} (needed by /{by})" for by, name in resolver.missing})
        raise ResolveError(
            "shared libraries not found in the extracted packages: " + ", ".join(lines),
            hint="add the package that ships them with --extra-package NAME",
        )
    return [result[path] for path in sorted(result)]


def closure(tree: Tree, programs: Iterable[str], arch: Arch) -> list[str]:
    """Paths that must exist in the image (as symlink chains to files) for ``programs`` to run.

    Each path is how the loader reaches a file (e.g. ``lib64/ld-linux-x86-64.so.2``,
    ``lib/x86_64-linux-gnu/libc.so.6``); copy it with the symlinks on the way.
    """
    return [needed.path for needed in needed_files(tree, programs, arch)]
