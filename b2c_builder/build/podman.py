"""The trimmed podman: compiled from Debian's source package with Debian's Go toolchain and
Debian's packaged Go dependencies, all fetched and verified by our archive client.

It is built the way Debian's own build (dh-golang, ``GO111MODULE=off``) does it: the source
tree goes to ``$GOPATH/src/<Go-Import-Path>`` with Debian's patches applied, and the Go code
of the golang-*-dev build dependencies (``/usr/share/gocode/src``) is the rest of GOPATH.
What differs from Debian's build is the trimming (see RECIPE):

- build tags: the pure-Go OpenPGP code instead of gpgme, no btrfs/devicemapper/zfs/aufs
  graph drivers, no systemd/journald, no AppArmor, no libsubid, no ostree; ``seccomp``
  stays (libseccomp is in the image for crun anyway). Two tags that look useful break
  podman 4.3's build: ``exclude_disk_quota`` (containers/storage's cgo overlay code still
  calls the quota package) and ``containers_image_docker_daemon_stub`` (libimage imports
  the docker-daemon transport itself: two registrations, a panic at start);
- cgo only for what needs it: containers/storage registers its overlay driver only in cgo
  builds, and podman's SHM locks and seccomp profiles are C code. The C side is Debian's
  too: libc6-dev and libseccomp-dev from the archive, unpacked as a sysroot; the compiler
  is the host's gcc (``--sysroot``), the only host tool besides ``patch`` and ``pkg-config``;
- command groups the initramfs never runs (machine, kube, pods...) are left out of the
  binary by a Go ``-overlay`` that replaces ``cmd/podman/main.go`` with a copy without their
  blank imports: the source tree itself is not modified beyond Debian's patches;
- ``-trimpath -ldflags "-s -w -buildid="``, ``-g0`` for C, and a fixed environment, so that
  the same inputs give the same bytes wherever the build runs (two cold builds are compared
  by tests/test_podman_build.py). With -trimpath Go leaves the CGO_* flags, which name the
  build folder, out of the binary's build information.

The binary is cached under ``<cache>/podman/<key>/`` where the key hashes every input: the
source files' SHA256, every Debian package's name, version and SHA256 (toolchain and C
sysroot included), the C compiler's version, the recipe and the target architecture. A warm
build reads the indexes and copies the binary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from b2c_builder.build.debian import deb, download, index, resolve, srcpkg
from b2c_builder.config import Arch, BuildConfig
from b2c_builder.digest import file_sha256
from b2c_builder.errors import ResolveError, ToolError
from b2c_builder.log import log, step
from b2c_builder.run import run, which

BINARY_PACKAGE = "podman"
MAIN_PACKAGE = "cmd/podman"
RECIPE_VERSION = 2  # bump when the build steps change in a way the recipe does not show


@dataclass(frozen=True)
class Tag:
    """A Go build tag of the trimmed build and what it removes."""

    name: str
    effect: str


@dataclass(frozen=True)
class Recipe:
    """How the trimmed podman is compiled. Every field is part of the cache key."""

    tags: tuple[Tag, ...]
    drop_commands: tuple[str, ...]  # cmd/podman/<group> packages left out of main.go
    ldflags: tuple[str, ...] = ("-s", "-w", "-buildid=")
    cgo: bool = True
    c_packages: tuple[str, ...] = ("libc6-dev", "libseccomp-dev")  # the cgo sysroot
    cflags: tuple[str, ...] = ("-O2", "-g0")

    def key_data(self) -> dict[str, object]:
        return {
            "tags": [t.name for t in self.tags],
            "drop_commands": list(self.drop_commands),
            "ldflags": list(self.ldflags),
            "cgo": self.cgo,
            "c_packages": list(self.c_packages),
            "cflags": list(self.cflags),
        }


RECIPE = Recipe(
    tags=(
        Tag("seccomp", "seccomp profiles for unprivileged containers (libseccomp, as crun)"),
        Tag("containers_image_openpgp", "pure-Go signature checks instead of libgpgme"),
        Tag("exclude_graphdriver_btrfs", "no btrfs storage driver (libbtrfs)"),
        Tag("exclude_graphdriver_devicemapper", "no devicemapper storage driver (libdevmapper)"),
        Tag("exclude_graphdriver_zfs", "no zfs storage driver"),
        Tag("exclude_graphdriver_aufs", "no aufs storage driver (podman 4)"),
    ),
    drop_commands=(
        "completion",
        "generate",
        "healthcheck",
        "kube",
        "machine",
        "manifest",
        "networks",
        "pods",
        "secrets",
        "system/connection",
    ),
)


@dataclass(frozen=True)
class InputPackage:
    """A Debian package whose files the build reads: Go code, toolchain or C sysroot (SBOM)."""

    name: str
    version: str
    sha256: str
    architecture: str = ""  # the stanza's Architecture (amd64, all); "" when unknown


@dataclass(frozen=True)
class PodmanBuild:
    """A trimmed podman binary and what it was built from (for the SBOM)."""

    binary: Path  # in the cache; do not modify
    sha256: str
    source: str  # source package name, e.g. "podman" (trixie) or "libpod" (bookworm)
    source_version: str
    source_files: tuple[index.FileRef, ...]  # .dsc and tarballs, as the Sources index lists
    patches: tuple[str, ...]
    toolchain: tuple[InputPackage, ...]  # golang-X.Y-go, golang-X.Y-src...
    go_dependencies: tuple[InputPackage, ...]  # golang-*-dev packages compiled into the binary
    go_unlinked: tuple[InputPackage, ...]  # fetched (Build-Depends closure) but not compiled in
    c_sysroot: tuple[InputPackage, ...]  # libc6-dev & co: headers and libraries cgo linked with
    c_compiler: str  # the host's gcc, first line of --version ("" without cgo)
    recipe: Recipe
    goarch: str
    dropped_commands: tuple[str, ...]
    cached: bool  # True when no compile ran

    def sbom(self) -> dict[str, object]:
        """The ``podman`` section of manifest.json."""
        return {
            "variant": "trimmed",
            "sha256": self.sha256,
            "source": {
                "package": self.source,
                "version": self.source_version,
                "files": [
                    {"name": f.path, "size": f.size, "sha256": f.sha256} for f in self.source_files
                ],
                "patches": list(self.patches),
            },
            "toolchain": [dataclasses.asdict(p) for p in self.toolchain],
            "go_build_dependencies": [dataclasses.asdict(p) for p in self.go_dependencies],
            "go_build_dependencies_not_linked": [dataclasses.asdict(p) for p in self.go_unlinked],
            "c_build_dependencies": [dataclasses.asdict(p) for p in self.c_sysroot],
            "build": {
                "c_compiler": self.c_compiler,
                "goos": "linux",
                "goarch": self.goarch,
                "cgo": self.recipe.cgo,
                "tags": [t.name for t in self.recipe.tags],
                "ldflags": list(self.recipe.ldflags),
                "cflags": list(self.recipe.cflags),
                "trimpath": True,
                "dropped_commands": list(self.dropped_commands),
            },
        }


_TOOLCHAIN = re.compile(r"^golang-(\d+\.\d+-)?(go|src)$")


def is_toolchain(package: index.Package) -> bool:
    """golang-go, golang-src and their versioned golang-1.NN-go / -src."""
    return bool(_TOOLCHAIN.match(package.name))


def is_go_code(package: index.Package) -> bool:
    """A Debian Go library package: Architecture all, golang-*-dev (code in /usr/share/gocode)."""
    return (
        package.name.startswith("golang-")
        and package.name.endswith("-dev")
        and package.architecture == "all"
    )


def go_inputs(
    archive: index.Archive, source: srcpkg.SourcePackage
) -> tuple[list[index.Package], list[index.Package]]:
    """(toolchain packages, Go library packages) of ``source``'s Build-Depends closure.

    Only the Go part of the closure is followed: a golang-*-dev package's dependencies on C
    libraries (libseccomp-dev...) serve cgo code that the trimmed build compiles out.
    """
    wanted = [
        alt.name
        for group in source.build_depends
        for alt in group[:1]
        if alt.name.startswith("golang-")
    ]
    if "golang-go" not in wanted and not any(_TOOLCHAIN.match(n) for n in wanted):
        raise ResolveError(
            f"source package {source.name} {source.version} does not Build-Depend on golang-go",
            hint="is this a Go program? the trimmed build only knows Debian's Go packaging",
        )
    names = [n for n in wanted if n in archive or archive.providers(n)]
    closure = resolve.closure(archive, names, follow=lambda p: is_toolchain(p) or is_go_code(p))
    toolchain = [p for p in closure if is_toolchain(p)]
    code = [p for p in closure if is_go_code(p)]
    return toolchain, code


def host_toolchain(host: index.Archive, toolchain: list[index.Package]) -> list[index.Package]:
    """The same toolchain packages (same versions) from the build host's index."""
    found = []
    for package in toolchain:
        match = next((p for p in host.versions(package.name) if p.version == package.version), None)
        if match is None:
            raise ResolveError(
                f"{package.name} {package.version} is not in {host.suite}/{host.arch}",
                hint="the Go toolchain must run on this machine; the suite lacks it for it",
            )
        found.append(match)
    return found


def c_inputs(archive: index.Archive, recipe: Recipe) -> list[index.Package]:
    """The Depends closure of the recipe's C packages (none without cgo)."""
    return resolve.closure(archive, recipe.c_packages) if recipe.cgo else []


def c_compiler(arch: Arch) -> tuple[str, str]:
    """(path, first line of ``--version``) of the host's C compiler for ``arch``."""
    tool = arch.facts.cross_cc
    path = which(tool, reason=f"compile podman's C parts for {arch} (cgo)")
    version = run([path, "--version"], reason="identify the C compiler").stdout
    return path, version.decode(errors="replace").splitlines()[0].strip()


def cache_key(
    source: srcpkg.SourcePackage,
    toolchain: list[index.Package],
    code: list[index.Package],
    recipe: Recipe,
    arch: Arch,
    *,
    c_packages: Sequence[index.Package] = (),
    cc_version: str = "",
) -> str:
    """SHA256 over every input of the compile (see the module docstring)."""
    packages = [*toolchain, *code, *c_packages]
    data = {
        "recipe_version": RECIPE_VERSION,
        "source": [source.name, source.version, [(f.path, f.sha256) for f in source.files]],
        "packages": sorted((p.name, p.version, p.sha256) for p in packages),
        "cc": cc_version,
        "recipe": recipe.key_data(),
        "goos": "linux",
        "goarch": arch.facts.goarch,
        "main": MAIN_PACKAGE,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def build_trimmed(
    session: requests.Session,
    archive: index.Archive,
    cfg: BuildConfig,
    *,
    recipe: Recipe = RECIPE,
    host_archive: index.Archive | None = None,
) -> PodmanBuild:
    """The trimmed podman for ``cfg.arch``: from the cache, else compiled (minutes).

    ``archive`` is the target's index (the source package, the Go code, the C sysroot);
    ``host_archive`` is the build machine's when it differs (a cross build): the Go
    toolchain must run here. Go cross-compiles by itself (GOARCH); cgo needs the host's
    ``<triplet>-gcc`` cross compiler (Debian's gcc-aarch64-linux-gnu for arm64).
    """
    binary = archive[BINARY_PACKAGE]
    if archive.release is None:
        raise ResolveError("the archive was opened without its Release; cannot find Sources")
    sources = srcpkg.open_sources(
        session, archive.mirror, archive.suite, archive.release, cfg.cache_dir
    )
    source = sources.get(binary.source, binary.source_version)
    if not source.go_import_path:
        raise ResolveError(
            f"source package {source.name} {source.version} has no Go-Import-Path field",
            hint="the trimmed build follows Debian's dh-golang packaging, which sets it",
        )
    toolchain, code = go_inputs(archive, source)
    if host_archive is not None and host_archive.arch != archive.arch:
        toolchain = host_toolchain(host_archive, toolchain)
    c_packages = c_inputs(archive, recipe)
    cc, cc_version = c_compiler(cfg.arch) if recipe.cgo else ("", "")
    key = cache_key(
        source, toolchain, code, recipe, cfg.arch, c_packages=c_packages, cc_version=cc_version
    )
    folder = cfg.cache_dir / "podman" / key
    info_path = folder / "build.json"
    cached = (folder / "podman").is_file() and info_path.is_file()
    if cached:
        log.info("trimmed podman from the cache (%s)", folder)
        info = json.loads(info_path.read_text())
    else:
        with step(f"Compiling podman from {source.name} {source.version} (trimmed)"):
            inputs = _Inputs(toolchain, code, c_packages, cc)
            info = _compile(session, archive, sources, source, inputs, recipe, cfg, folder)
    path = folder / "podman"
    linked = set(info.get("linked_packages", [p.name for p in code]))
    return PodmanBuild(
        binary=path,
        sha256=file_sha256(path),
        source=source.name,
        source_version=source.version,
        source_files=source.files,
        patches=tuple(info["patches"]),
        toolchain=tuple(_input(p) for p in toolchain),
        go_dependencies=tuple(_input(p) for p in code if p.name in linked),
        go_unlinked=tuple(_input(p) for p in code if p.name not in linked),
        c_sysroot=tuple(_input(p) for p in c_packages),
        c_compiler=cc_version,
        recipe=recipe,
        goarch=cfg.arch.facts.goarch,
        dropped_commands=tuple(info["dropped_commands"]),
        cached=cached,
    )


def _input(package: index.Package) -> InputPackage:
    return InputPackage(package.name, package.version, package.sha256, package.architecture)


# What the Go build reads from the extracted packages: the toolchain and the Go code; and
# from the C packages, the sysroot for cgo (headers, crt*.o, libraries, pkg-config files).
_GO_FILES = ("usr/lib/go", "usr/share/go", "usr/share/gocode/")
_C_FILES = ("usr/include/", "usr/lib/", "usr/lib64/", "usr/share/pkgconfig/", "lib/", "lib64/")


@dataclass(frozen=True)
class _Inputs:
    toolchain: list[index.Package]
    code: list[index.Package]
    c_packages: list[index.Package]
    cc: str  # path of the C compiler ("" without cgo)


def _compile(
    session: requests.Session,
    archive: index.Archive,
    sources: srcpkg.SourceIndex,
    source: srcpkg.SourcePackage,
    inputs: _Inputs,
    recipe: Recipe,
    cfg: BuildConfig,
    folder: Path,
) -> dict[str, object]:
    (cfg.cache_dir / "podman").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cfg.cache_dir / "podman"))
    go_packages = [*inputs.toolchain, *inputs.code]
    try:
        with step("Fetching the source package, the Go and the C packages"):
            fetched = srcpkg.fetch(session, sources, source, cfg.cache_dir)
            debs = [
                (p, download.fetch(session, archive.url_for(p), p.sha256, p.size, cfg.cache_dir))
                for p in [*go_packages, *inputs.c_packages]
            ]
        with step(f"Unpacking {len(debs)} packages and the source"):
            root = work / "root"
            sysroot = work / "sysroot"
            owner: dict[str, str] = {}  # folder of .go files -> the package that shipped them
            for package, path in debs:
                if package in inputs.c_packages:
                    deb.extract_to_dir(path, sysroot, prefixes=_C_FILES)
                    continue
                for member in deb.extract_to_dir(path, root, prefixes=_GO_FILES):
                    if member.endswith(".go"):
                        owner.setdefault(posixpath.dirname(member), package.name)
            _usrmerge(sysroot)
            tree = work / "gopath/src" / source.go_import_path
            srcpkg.unpack(fetched, tree)
            patches = srcpkg.series(tree)
        goroot = _goroot(root)
        overlay, dropped = _overlay(tree, work, recipe.drop_commands)
        output = work / "podman"
        started = time.monotonic()
        env = _go_env(work, root, goroot, recipe, cfg.arch, sysroot, inputs.cc)
        with step(
            f"go build ({goroot.name}, {len(inputs.code)} Go packages, CGO_ENABLED="
            f"{int(recipe.cgo)}, GOARCH={cfg.arch.facts.goarch})"
        ):
            run(
                [
                    "nice",
                    "-n",
                    "10",
                    str(goroot / "bin/go"),
                    "build",
                    "-o",
                    str(output),
                    "-overlay",
                    str(overlay),
                    "-tags",
                    ",".join(t.name for t in recipe.tags),
                    "-ldflags",
                    " ".join(recipe.ldflags),
                    f"./{MAIN_PACKAGE}",
                ],
                reason="compile podman",
                env=env,
                cwd=tree,
                timeout=3600,
            )
        linked = _linked_packages(goroot, overlay, recipe, env, tree, root, owner)
        info: dict[str, object] = {
            "patches": [name for name, _ in patches],
            "linked_packages": linked,
            "dropped_commands": dropped,
            "compile_seconds": round(time.monotonic() - started, 1),
        }
        staged = work / "result"
        staged.mkdir()
        os.replace(output, staged / "podman")
        (staged / "build.json").write_text(json.dumps(info, indent=1) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staged, folder)
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _linked_packages(
    goroot: Path,
    overlay: Path,
    recipe: Recipe,
    env: dict[str, str],
    tree: Path,
    root: Path,
    owner: dict[str, str],
) -> list[str]:
    """The Debian packages whose Go code is compiled into the binary: the folders of every
    Go package in ``go list -deps`` (same tags, same overlay), mapped to who shipped them."""
    proc = run(
        [
            str(goroot / "bin/go"),
            "list",
            "-deps",
            "-overlay",
            str(overlay),
            "-tags",
            ",".join(t.name for t in recipe.tags),
            "-f",
            "{{.Dir}}",
            f"./{MAIN_PACKAGE}",
        ],
        reason="list the Go packages compiled into podman",
        env=env,
        cwd=tree,
        timeout=600,
    )
    linked = set()
    for line in proc.stdout.decode().splitlines():
        real = Path(os.path.realpath(line))
        if real.is_relative_to(root.resolve()):
            folder = real.relative_to(root.resolve()).as_posix()
            if folder in owner:
                linked.add(owner[folder])
    return sorted(linked)


def _usrmerge(sysroot: Path) -> None:
    """Give a sysroot whose packages ship only /usr/lib the /lib -> usr/lib links that the
    libc.so linker script's absolute paths go through (ld prefixes them with the sysroot)."""
    if not sysroot.exists():
        return
    for name in ("lib", "lib64"):
        if not (sysroot / name).exists() and (sysroot / "usr" / name).is_dir():
            (sysroot / name).symlink_to(f"usr/{name}")


def _goroot(root: Path) -> Path:
    """The one GOROOT the toolchain packages unpacked (usr/lib/go-1.NN)."""
    found = sorted(p for p in (root / "usr/lib").glob("go-*") if (p / "bin/go").is_file())
    if len(found) != 1:
        raise ToolError(
            f"expected one Go toolchain under {root / 'usr/lib'}, found {len(found)}",
            hint="the suite's golang-go package layout changed; update podman._goroot",
        )
    return found[0]


_BLANK_IMPORT = re.compile(
    r'^[ \t]*_[ \t]+"[^"]+/cmd/podman/(?P<group>[a-z/]+)"[ \t]*\n', re.MULTILINE
)


def _overlay(tree: Path, work: Path, drop: tuple[str, ...]) -> tuple[Path, list[str]]:
    """A ``go build -overlay`` file that replaces cmd/podman/main.go with a copy lacking the
    blank imports of the ``drop`` command groups; and the groups actually dropped."""
    main = tree / MAIN_PACKAGE / "main.go"
    text = main.read_text()
    dropped = []

    def keep(match: re.Match[str]) -> str:
        if match.group("group") in drop:
            dropped.append(match.group("group"))
            return ""
        return match.group(0)

    trimmed = _BLANK_IMPORT.sub(keep, text)
    missing = sorted(set(drop) - set(dropped))
    if missing:
        log.warning("podman's main.go has no command group %s to leave out", ", ".join(missing))
    replacement = work / "main.go"
    replacement.write_text(trimmed)
    overlay = work / "overlay.json"
    overlay.write_text(json.dumps({"Replace": {str(main): str(replacement)}}))
    return overlay, sorted(dropped)


def _go_env(
    work: Path, root: Path, goroot: Path, recipe: Recipe, arch: Arch, sysroot: Path, cc: str
) -> dict[str, str]:
    """The whole environment of ``go build``: nothing of the host's leaks in."""
    (work / "tmp").mkdir(exist_ok=True)
    c_env = {}
    if recipe.cgo:
        pkgconfig = [
            sysroot / "usr/lib" / arch.facts.multiarch / "pkgconfig",
            sysroot / "usr/share/pkgconfig",
        ]
        c_env = {
            "CC": cc,
            "CGO_CFLAGS": " ".join([*recipe.cflags, f"--sysroot={sysroot}"]),
            "CGO_LDFLAGS": f"--sysroot={sysroot}",
            "PKG_CONFIG": which("pkg-config", reason="find libseccomp's flags for cgo"),
            "PKG_CONFIG_SYSROOT_DIR": str(sysroot),
            "PKG_CONFIG_LIBDIR": ":".join(str(p) for p in pkgconfig),
            "PKG_CONFIG_PATH": "",
        }
    return {
        **c_env,
        "PATH": f"{goroot / 'bin'}:/usr/bin:/bin",
        "HOME": str(work),
        "GOROOT": str(goroot),
        "GOPATH": f"{work / 'gopath'}:{root / 'usr/share/gocode'}",
        "GO111MODULE": "off",  # Debian's dh-golang way: GOPATH, no go.mod, no downloads
        "GOPROXY": "off",
        "GOENV": "off",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-trimpath",
        "GOCACHE": str(work / "gocache"),
        "GOTMPDIR": str(work / "tmp"),
        "CGO_ENABLED": "1" if recipe.cgo else "0",
        "GOOS": "linux",
        "GOARCH": arch.facts.goarch,
        **dict(arch.facts.goarch_env),
    }
