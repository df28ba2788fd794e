"""The build pipeline, one stage per module:

config -> resolve -> fetch -> extract -> select -> render -> assemble -> archive -> compress
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from b2c_builder import __version__
from b2c_builder.build import dtb, image, kmod, podman, spdx
from b2c_builder.build.compress import open_compressed
from b2c_builder.build.cpio import write_cpio
from b2c_builder.build.debian import deb, download, index, resolve, sources
from b2c_builder.build.release import release_version
from b2c_builder.build.rootfs import BUILDER, Kind, Origin, Rootfs
from b2c_builder.config import Arch, BuildConfig, PodmanVariant, format_size, make_folder
from b2c_builder.digest import file_sha256
from b2c_builder.errors import B2CError, SizeError
from b2c_builder.guest import render
from b2c_builder.log import log, step


@dataclass(frozen=True)
class Artifact:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote into cfg.output, and what it was built from."""

    image: Artifact
    manifest: Path  # per-file detail (manifest.json)
    spdx: Path  # the SPDX 2.3 SBOM (spdx.json)
    version: str  # the release version (release_version: project, suite, archive date)
    archive_date: int  # the Date of the verified InRelease, seconds since 1970
    kernel: Artifact | None = None
    modules: Artifact | None = None
    kernel_version: str | None = None
    podman: podman.PodmanBuild | None = None  # the trimmed build, when --podman trimmed
    dtbs: Artifact | None = None  # the kernel package's device trees, when it has some


def build(cfg: BuildConfig) -> BuildResult:
    """Build the release described by ``cfg``; nothing reaches cfg.output unless all succeed."""
    init_settings = check_before_download(cfg)
    session = download.make_session()
    archive = read_index(session, cfg)
    epoch = cfg.source_date_epoch if cfg.source_date_epoch is not None else archive.date
    version = release_version(cfg.suite, archive.date)
    log.info("SOURCE_DATE_EPOCH=%d, release version %s", epoch, version)

    staged = stage_packages(session, archive, cfg)
    staging = staged.image
    trimmed = None
    if cfg.podman is PodmanVariant.trimmed:
        host_archive = None
        if cfg.arch is not Arch.host():  # cross build: the Go toolchain must run here
            host_archive = read_index(session, cfg, Arch.host())
        trimmed = podman.build_trimmed(session, archive, cfg, host_archive=host_archive)
        image.use_podman(staging, trimmed)
    with step("Selecting the image contents"):
        rootfs = image.new_image(cfg.arch)
        image.add_binaries(staging, rootfs, cfg.arch)
        image.add_busybox_links(rootfs)
        image.add_data_files(staging, rootfs)
        image.add_config(
            rootfs,
            {
                "version": __version__,
                "suite": cfg.suite,
                "crun_wrapper": image.CRUN_WRAPPER,
                "conmon_wrapper": image.CONMON_WRAPPER,
                "podman_cgo": trimmed is None or trimmed.recipe.cgo,
            },
        )
        for name in cfg.extra_packages:
            image.add_package_binaries(staging, rootfs, name, cfg.arch)
    with step("Rendering /init"):
        render.add_init(rootfs, init_settings)

    with staging_output(cfg.output) as tmp:
        with step("Writing the image"):
            result_image = write_archive(rootfs, tmp / cfg.image_name(), cfg, epoch)
            if result_image.size > cfg.max_size:
                raise SizeError(
                    f"the image is {result_image.size / 2**20:.2f} MiB ({result_image.size} "
                    f"bytes), above the --max-size of {format_size(cfg.max_size)}",
                    hint="drop --extra-package entries, use --compression xz, or raise --max-size",
                )
            manifest_path = tmp / f"initramfs.linux_{cfg.arch}.manifest.json"
            manifest_path.write_text(sbom(rootfs, cfg, epoch, trimmed))
        parts = None
        if cfg.kernel_package or cfg.modules_dir:
            parts = build_kernel_parts(staged.kernel, cfg, epoch, tmp)
        with step("Writing the SPDX SBOM"):
            files = [
                spdx.ReleaseFile(
                    result_image.path.name,
                    result_image.sha256,
                    "image",
                    debian_packages(_origins(rootfs), staged.packages),
                )
            ]
            if parts is not None:
                files += parts.release_files(staged.packages)
            doc = spdx.document(
                name=f"initramfs.linux_{cfg.arch}",
                version=version,
                suite=cfg.suite,
                epoch=epoch,
                files=files,
                trimmed=trimmed,
            )
            spdx_path = tmp / f"initramfs.linux_{cfg.arch}.spdx.json"
            spdx_path.write_text(spdx.to_json(doc))
    final = BuildResult(
        image=_moved(result_image, cfg.output),
        manifest=cfg.output / manifest_path.name,
        spdx=cfg.output / spdx_path.name,
        version=version,
        archive_date=archive.date,
        kernel=_moved(parts.kernel, cfg.output) if parts and parts.kernel else None,
        modules=_moved(parts.modules, cfg.output) if parts else None,
        kernel_version=parts.version if parts else None,
        podman=trimmed,
        dtbs=_moved(parts.dtbs, cfg.output) if parts and parts.dtbs else None,
    )
    log.info("image: %s (%.2f MiB)", final.image.path, final.image.size / 2**20)
    return final


def check_before_download(cfg: BuildConfig) -> render.InitSettings:
    """What a build checks before its first download (a bad --default-cmdline or an
    unusable --cache-dir must not cost a fetch), and the /init settings it renders."""
    if not cfg.verify_signature:
        log.warning(
            "!!! --no-verify-signature: the archive index is NOT authenticated; "
            "anyone on the path to the mirror can change what goes into the image !!!"
        )
    init_settings = render.InitSettings(version=__version__, default_cmdline=cfg.default_cmdline)
    make_folder(cfg.cache_dir, "--cache-dir")
    return init_settings


def read_index(
    session: requests.Session, cfg: BuildConfig, arch: Arch | None = None
) -> index.Archive:
    """The verified index of ``cfg``'s mirror and suite for ``arch`` (default: cfg.arch)."""
    arch = arch or cfg.arch
    mirror = cfg.mirror or sources.default_mirror()
    with step(f"Reading the Debian archive index ({cfg.suite}/{arch})"):
        return index.open_archive(
            session,
            mirror,
            cfg.suite,
            arch,
            keyring=cfg.keyring,
            verify_signature=cfg.verify_signature,
            cache_dir=cfg.cache_dir,
        )


def prefetch(cfg: BuildConfig) -> Fetched:
    """What build(cfg) downloads before it extracts anything: the index, then every .deb of
    the image and of the kernel package, verified, into cfg.cache_dir (which the build then
    reads again without a download). A release fetches every architecture's first, so that
    a mirror lacking one architecture's files fails before any image is built."""
    check_before_download(cfg)
    with download.make_session() as session:
        return fetch_packages(session, read_index(session, cfg), cfg)


@dataclass(frozen=True)
class Fetched:
    """A build's packages, resolved and their .debs fetched and verified (in the cache)."""

    image: tuple[index.Package, ...]  # the image's search space
    kernel: tuple[index.Package, ...]  # the kernel package's (none without --kernel-package)
    debs: dict[str, Path]  # the cached .deb of each, by package name

    def packages(self) -> dict[tuple[str, str], index.Package]:
        """Every package fetched, by (name, version): the SBOM's .deb SHA256s."""
        return {(p.name, p.version): p for p in [*self.image, *self.kernel]}


@dataclass(frozen=True)
class Staged:
    """The extracted packages: the image's search space, and the kernel package's files."""

    image: Rootfs
    kernel: Rootfs | None  # None without --kernel-package
    # Every package fetched (and verified), by (name, version): the SBOM's .deb SHA256s.
    packages: dict[tuple[str, str], index.Package] = field(default_factory=dict)


def kernel_packages(archive: index.Archive, name: str) -> list[index.Package]:
    """``name`` and the linux-image packages of its Depends closure (a metapackage's
    versioned kernel); initramfs-tools and friends hold nothing we take."""
    return [
        p
        for p in resolve.closure(archive, [name])
        if p.name == name or p.name.startswith("linux-image-")
    ]


def fetch_packages(session: requests.Session, archive: index.Archive, cfg: BuildConfig) -> Fetched:
    """Resolve the image's packages and the kernel package together, then download and
    verify every .deb once (a cached one is only hashed again)."""
    with step("Resolving dependencies"):
        image.check_archive_has_packages(archive)
        image_packages = resolve.closure(archive, [*image.PACKAGES, *cfg.extra_packages])
        kernel = kernel_packages(archive, cfg.kernel_package) if cfg.kernel_package else []
        log.info(
            "%d packages in the search space%s",
            len(image_packages),
            f", {len(kernel)} for the kernel" if cfg.kernel_package else "",
        )
    with step("Fetching packages"):
        debs = {
            pkg.name: download.fetch(
                session, archive.url_for(pkg), pkg.sha256, pkg.size, cfg.cache_dir
            )
            for pkg in [*image_packages, *kernel]
        }
    return Fetched(tuple(image_packages), tuple(kernel), debs)


def stage_packages(session: requests.Session, archive: index.Archive, cfg: BuildConfig) -> Staged:
    """Fetch the packages (fetch_packages) and extract the image's and the kernel package's
    each into its own staging manifest (in memory)."""
    fetched = fetch_packages(session, archive, cfg)
    with step("Extracting packages"):
        staging = deb.new_staging(cfg.arch)
        for pkg in fetched.image:
            deb.extract_into(staging, fetched.debs[pkg.name], Origin(pkg.name, pkg.version))
        kernel_staging = deb.new_staging(cfg.arch) if cfg.kernel_package else None
        for pkg in fetched.kernel:
            assert kernel_staging is not None
            deb.extract_into(kernel_staging, fetched.debs[pkg.name], Origin(pkg.name, pkg.version))
    return Staged(staging, kernel_staging, fetched.packages())


def write_archive(rootfs: Rootfs, path: Path, cfg: BuildConfig, epoch: int) -> Artifact:
    with path.open("wb") as raw, open_compressed(raw, cfg.compression, cfg.arch) as out:
        write_cpio(rootfs, out, source_date_epoch=epoch)
    return _artifact(path)


def sbom(
    rootfs: Rootfs, cfg: BuildConfig, epoch: int, trimmed: podman.PodmanBuild | None = None
) -> str:
    """Every file in the image with mode, size, sha256 and the package it came from; for a
    trimmed podman, a ``podman`` section naming its source package, patches, toolchain, Go
    build-dependencies (name, version, .deb SHA256) and build flags."""
    files = []
    for entry in rootfs:
        item: dict[str, object] = {
            "path": "/" + entry.path,
            "type": str(entry.kind),
            "mode": f"{entry.mode:04o}",
        }
        if entry.kind is Kind.FILE:
            item.update(size=entry.size, sha256=entry.sha256())
        elif entry.kind is Kind.SYMLINK:
            item["target"] = entry.target
        elif entry.kind in (Kind.CHAR, Kind.BLOCK):
            item["rdev"] = list(entry.rdev)
        if entry.origin is not None:
            item.update(package=entry.origin.package, version=entry.origin.version)
        files.append(item)
    doc = {
        "builder": f"b2c-builder {__version__}",
        "suite": cfg.suite,
        "arch": str(cfg.arch),
        "source_date_epoch": epoch,
        "podman": trimmed.sbom() if trimmed is not None else {"variant": str(cfg.podman)},
        "files": files,
    }
    return json.dumps(doc, indent=1, sort_keys=False) + "\n"


def _origins(rootfs: Rootfs) -> set[Origin]:
    """The Debian packages (name, version) whose files ``rootfs`` holds: not the builder's
    own files, not a source package (the trimmed podman, which the SBOM details)."""
    return {
        e.origin
        for e in rootfs
        if e.origin is not None and e.origin != BUILDER and not e.origin.package.startswith("src:")
    }


def debian_packages(
    origins: set[Origin], fetched: dict[tuple[str, str], index.Package]
) -> tuple[spdx.DebianPackage, ...]:
    """``origins`` as the SBOM names them: with the Architecture and the .deb SHA256 of the
    package the build fetched, sorted by name."""
    found = []
    for origin in sorted(origins, key=lambda o: (o.package, o.version)):
        package = fetched.get((origin.package, origin.version))
        found.append(
            spdx.DebianPackage(
                origin.package,
                origin.version,
                package.architecture if package else "",
                package.sha256 if package else None,
            )
        )
    return tuple(found)


@dataclass(frozen=True)
class KernelParts:
    """What a build writes beside the image for one kernel ``version`` (release), and the
    packages each holds files of."""

    kernel: Artifact | None  # linux-<release>.linux_<arch>: from a Debian package only
    modules: Artifact  # modules-<release>.linux_<arch>.cpio<ext>
    version: str
    kernel_origins: frozenset[Origin]
    modules_origins: frozenset[Origin]
    dtbs: Artifact | None = None  # dtbs-<release>.linux_<arch>.cpio<ext>: when it has some
    dtbs_origins: frozenset[Origin] = frozenset()

    def release_files(
        self, fetched: dict[tuple[str, str], index.Package]
    ) -> list[spdx.ReleaseFile]:
        """The kernel and the modules archive as the SBOM describes them."""
        files = []
        if self.kernel is not None:
            packages = debian_packages(set(self.kernel_origins), fetched)
            files.append(
                spdx.ReleaseFile(self.kernel.path.name, self.kernel.sha256, "kernel", packages)
            )
        packages = debian_packages(set(self.modules_origins), fetched)
        files.append(
            spdx.ReleaseFile(self.modules.path.name, self.modules.sha256, "modules", packages)
        )
        if self.dtbs is not None:
            packages = debian_packages(set(self.dtbs_origins), fetched)
            files.append(spdx.ReleaseFile(self.dtbs.path.name, self.dtbs.sha256, "dtbs", packages))
        return files


def build_kernel_parts(
    kernel_staging: Rootfs | None, cfg: BuildConfig, epoch: int, tmp: Path
) -> KernelParts:
    """The modules archive; when the kernel comes from a Debian package (already extracted
    into ``kernel_staging``), the kernel itself and its device trees (dtb.device_trees),
    each archive compressed as the image and its mtimes clamped to ``epoch``."""
    with step("Preparing kernel modules"):
        if kernel_staging is not None:
            tree = kmod.ModuleTree.from_manifest(kernel_staging, cfg.arch)
        else:
            assert cfg.modules_dir is not None
            tree = kmod.ModuleTree.from_directory(cfg.modules_dir)
        wanted = [*kmod.DEFAULT_MODULES, *cfg.modules]
        modules = Rootfs()
        kmod.add_modules(modules, tree, wanted, required=cfg.modules)
        name = f"modules-{tree.version}.linux_{cfg.arch}.cpio{cfg.compression.extension()}"
        modules_art = write_archive(modules, tmp / name, cfg, epoch)
        kernel_art = dtbs_art = None
        kernel_origins: set[Origin] = set()
        trees = Rootfs()
        if kernel_staging is not None:
            vmlinuz = tree.kernel_image()
            kernel_path = tmp / f"linux-{tree.version}.linux_{cfg.arch}"
            kernel_path.write_bytes(vmlinuz)
            kernel_art = _artifact(kernel_path)
            entry = kernel_staging.get(tree.vmlinuz) if tree.vmlinuz else None
            if entry is not None and entry.origin is not None:
                kernel_origins.add(entry.origin)
            trees = dtb.device_trees(kernel_staging, tree.version)
            if count := sum(entry.kind is Kind.FILE for entry in trees):
                name = f"dtbs-{tree.version}.linux_{cfg.arch}.cpio{cfg.compression.extension()}"
                dtbs_art = write_archive(trees, tmp / name, cfg, epoch)
                log.info("%d device trees in %s", count, name)
    return KernelParts(
        kernel_art,
        modules_art,
        tree.version,
        frozenset(kernel_origins),
        frozenset(_origins(modules)),
        dtbs_art,
        frozenset(_origins(trees)),
    )


@contextmanager
def staging_output(output: Path) -> Iterator[Path]:
    """A temporary folder beside ``output``; on failure it is removed and output is untouched."""
    parent = output.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".b2c-build-", dir=parent))
    try:
        yield tmp
        for item in sorted(tmp.iterdir()):
            if not item.name.endswith(".json"):
                _write_checksum(item)
        output.mkdir(parents=True, exist_ok=True)
        for item in sorted(tmp.iterdir()):
            os.replace(item, output / item.name)
    except OSError as exc:
        if exc.errno not in _FULL_OR_READ_ONLY:
            raise
        raise B2CError(
            f"cannot write the release into {output}: {exc.strerror}",
            hint=f"free some space in {parent}, or pass another --output",
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# Write errors that are about the output's file system, whichever file was being written.
_FULL_OR_READ_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def _write_checksum(path: Path) -> None:
    digest = file_sha256(path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def _artifact(path: Path) -> Artifact:
    return Artifact(path, path.stat().st_size, file_sha256(path))


def _moved(art: Artifact, output: Path) -> Artifact:
    return Artifact(output / art.path.name, art.size, art.sha256)
