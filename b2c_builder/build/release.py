"""The release folder: every architecture built into ``<output>/<version>/`` with one
``SHA256SUMS``.

    releases/0.1.0+trixie.20261128/
        initramfs.linux_<arch>.cpio.zst         the image
        initramfs.linux_<arch>.manifest.json    every file: mode, size, sha256, package
        initramfs.linux_<arch>.spdx.json        SPDX 2.3 SBOM: packages, versions, relations
        linux-<kver>.linux_<arch>               Debian's kernel
        modules-<kver>.linux_<arch>.cpio.zst    its modules, beside the image
        dtbs-<kver>.linux_<arch>.cpio.zst       its device trees (arm64, riscv64)
        SHA256SUMS                              every other file, for ``sha256sum -c``

The version is ``<project version>+<suite>.<YYYYMMDD>``, the date being the Date field of the
signed InRelease every build verified (UTC): a local version label in the sense of PEP 440
and a valid Debian version, so two releases sort by snapshot. The folder is assembled in a
hidden staging folder beside it and renamed into place only once every architecture is
built: a failed or interrupted release leaves the previous folder of that version whole.
Every architecture's packages are fetched before the first build (fetch_every_architecture):
a mirror that lacks some fails before any build, naming what it lacks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from b2c_builder import __version__
from b2c_builder.config import Arch, BuildConfig, ReleaseConfig, make_folder
from b2c_builder.digest import file_sha256
from b2c_builder.errors import B2CError, MissingError, VerifyError
from b2c_builder.log import log, step

if TYPE_CHECKING:
    from b2c_builder.build.pipeline import BuildResult

SUMS = "SHA256SUMS"


def release_version(suite: str, archive_date: int, project: str = __version__) -> str:
    """``0.1.0+trixie.20261128``: the project version, the suite and the UTC day of
    ``archive_date`` (the verified InRelease's Date, seconds since 1970)."""
    day = datetime.fromtimestamp(archive_date, UTC).strftime("%Y%m%d")
    return f"{project}+{suite}.{day}"


def sha256sums(folder: Path) -> str:
    """The SHA256SUMS text of every regular file directly in ``folder`` but SHA256SUMS
    itself, sorted by name, in the format ``sha256sum -c`` reads: ``<hex>  <name>``
    (two spaces: text mode, which is binary on GNU systems). Raises B2CError for a name
    ``sha256sum`` would have to escape (a backslash or a newline) or for a subfolder."""
    lines = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name == SUMS:
            continue
        if not path.is_file() or path.is_symlink():
            raise B2CError(
                f"{path} is not a regular file; a release folder holds files only",
                hint="remove it from the folder",
            )
        if "\\" in path.name or "\n" in path.name:
            raise B2CError(f"{path.name!r}: a release file name cannot hold '\\' or a newline")
        lines.append(f"{file_sha256(path)}  {path.name}\n")
    return "".join(lines)


@dataclass(frozen=True)
class ReleaseResult:
    """A finished release: its folder (``output/version``), version and file names."""

    folder: Path
    version: str
    files: tuple[str, ...]  # every file, SHA256SUMS included, sorted
    builds: tuple[BuildResult, ...]


Builder = Callable[[BuildConfig], "BuildResult"]
Fetcher = Callable[[BuildConfig], object]  # downloads, into the cache, what that build needs


def make_release(
    cfg: ReleaseConfig, builder: Builder | None = None, fetcher: Fetcher | None = None
) -> ReleaseResult:
    """Fetch the packages of every architecture of ``cfg`` (``fetcher``: pipeline.prefetch;
    see fetch_every_architecture), then build each (``builder``: pipeline.build, which finds
    them in the download cache) into ``cfg.output/<version>/``, write SHA256SUMS and put the
    folder in place, replacing a previous folder of the same version only then. Raises what
    a fetch or a build raises (nothing is left behind), or VerifyError when the archive
    changed between two architectures' builds (their InRelease dates differ: the release
    would mix two snapshots)."""
    from b2c_builder.build import pipeline

    builder = builder or pipeline.build
    fetcher = fetcher or pipeline.prefetch
    make_folder(cfg.cache_dir, "--cache-dir")
    make_folder(cfg.output, "--output")
    stage = Path(tempfile.mkdtemp(prefix=".b2c-release-", dir=cfg.output))
    try:
        configs = [cfg.build_config(arch, stage / f".build-{arch}") for arch in cfg.targets()]
        fetch_every_architecture(configs, fetcher)
        results = []
        for build_cfg in configs:
            with step(f"Release: building {build_cfg.arch}"):
                result = builder(build_cfg)
            for path in _files_of(result):
                os.replace(path, stage / path.name)
            shutil.rmtree(build_cfg.output)  # the per-file .sha256: SHA256SUMS says it
            results.append(result)
        dates = {r.archive_date for r in results}
        if len(dates) > 1:
            raise VerifyError(
                "the archive changed during the release: the builds read InRelease files "
                f"dated {', '.join(_day(d) for d in sorted(dates))}",
                hint="run the release again (the mirror was updated meanwhile)",
            )
        version = results[0].version
        (stage / SUMS).write_text(sha256sums(stage))
        stage.chmod(0o777 & ~_umask())  # mkdtemp made it 0700: a release folder is for all
        final = cfg.output / version
        _publish(stage, final)
        files = tuple(sorted(p.name for p in final.iterdir()))
        log.info("release %s: %d files in %s", version, len(files), final)
        return ReleaseResult(final, version, files, tuple(results))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def fetch_every_architecture(configs: Sequence[BuildConfig], fetcher: Fetcher) -> None:
    """Run ``fetcher`` for every build of a release before any is built. An architecture
    whose files the mirror lacks (HTTP 404: a mirror may list .debs in its index that it
    does not serve) does not stop the others' fetches, which tell the architectures it
    serves; then one MissingError names each lacking architecture with its missing file,
    and its hint the --arch options that release the others. Other errors stop at once."""
    missing: dict[Arch, MissingError] = {}
    for n, build_cfg in enumerate(configs, 1):
        try:
            with step(f"Release: fetching the packages of {build_cfg.arch}"):
                fetcher(build_cfg)
        except MissingError as exc:
            going_on = " (the other architectures are fetched, to tell which the mirror serves)"
            log.warning("%s: %s%s", build_cfg.arch, exc.message, going_on * (n < len(configs)))
            missing[build_cfg.arch] = exc
    if not missing:
        return
    served = " ".join(f"--arch {c.arch}" for c in configs if c.arch not in missing)
    raise MissingError(
        f"the mirror lacks files of {', '.join(missing)}, nothing was built: "
        + "; ".join(f"{arch}: {exc.message}" for arch, exc in missing.items()),
        hint=f'release the architectures it serves: {served} (make release RELEASE_ARGS="'
        f'{served}"), or pass another --mirror or --suite'
        if served
        else "pass another --mirror, or another --suite",
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _day(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _files_of(result: BuildResult) -> list[Path]:
    """What one build contributes to the release folder."""
    paths = [result.image.path, result.manifest, result.spdx]
    if result.kernel is not None:
        paths.append(result.kernel.path)
    if result.modules is not None:
        paths.append(result.modules.path)
    if result.dtbs is not None:
        paths.append(result.dtbs.path)
    return paths


def _publish(stage: Path, final: Path) -> None:
    """Rename the finished ``stage`` to ``final``. A folder already there is first renamed
    aside and removed after: ``final`` is always either the old folder or the new one,
    whole, never a mixture (it is briefly absent between the two renames)."""
    old = None
    if final.exists():
        gone = sorted({p.name for p in final.iterdir()} - {p.name for p in stage.iterdir()})
        log.warning(
            "replacing the release folder %s%s",
            final,
            f"; these files are not in the new one: {', '.join(gone)}" if gone else "",
        )
        old = Path(tempfile.mkdtemp(prefix=f".b2c-old-{final.name}-", dir=final.parent))
        os.replace(final, old / final.name)
    try:
        os.replace(stage, final)
    except OSError:
        if old is not None:
            os.replace(old / final.name, final)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
