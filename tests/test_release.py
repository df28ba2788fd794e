"""The release folder: its version, its layout (every architecture of the table), a
SHA256SUMS that GNU ``sha256sum -c`` accepts, and a folder that is replaced whole or not at
all. Builds are stood in for by a fake builder writing small files, except in the one
network test that runs the real `b2c-builder release` for amd64."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.json.json_parser import parse_from_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from b2c_builder import __version__
from b2c_builder.build import image, release
from b2c_builder.build.debian import download
from b2c_builder.build.pipeline import Artifact, BuildResult
from b2c_builder.config import ARCHES, Arch, BuildConfig, ReleaseConfig
from b2c_builder.digest import file_sha256
from b2c_builder.errors import B2CError, MissingError, SizeError, VerifyError
from tests.conftest import ROOT, b2c, require, require_tool, shared_cache
from tests.localmirror import FakePackage, GpgKey, LocalMirror

DATE = 1_795_824_000  # 2026-11-28 00:00:00 UTC
KVER = "6.12.57+deb13"


def test_the_version_is_project_suite_and_the_archive_day() -> None:
    assert release.release_version("trixie", DATE) == f"{__version__}+trixie.20261128"
    assert release.release_version("trixie", DATE - 1) == f"{__version__}+trixie.20261127"
    assert release.release_version("bookworm", DATE + 86399, "2.0.1") == "2.0.1+bookworm.20261128"


def _artifact(path: Path, data: bytes) -> Artifact:
    path.write_bytes(data)
    # What the real build also leaves: a per-file .sha256 (the release drops them).
    path.with_name(path.name + ".sha256").write_text(f"{file_sha256(path)}  x\n")
    return Artifact(path, len(data), file_sha256(path))


def fake_builder(
    seen: list[BuildConfig],
    *,
    tag: bytes = b"v1",
    dates: dict[Arch, int] | None = None,
    fail: Arch | None = None,
    dtbs: bool = False,
) -> Callable[[BuildConfig], BuildResult]:
    """A builder writing a few bytes per file, as pipeline.build lays them out (with
    ``dtbs``, a device-tree archive too, as the arm64 and riscv64 kernels give)."""

    def build(cfg: BuildConfig) -> BuildResult:
        seen.append(cfg)
        if cfg.arch is fail:
            raise SizeError(f"the {cfg.arch} image is too large")
        date = (dates or {}).get(cfg.arch, DATE)
        out = cfg.output
        out.mkdir(parents=True)
        name = f"initramfs.linux_{cfg.arch}"
        manifest = out / f"{name}.manifest.json"
        manifest.write_text(json.dumps({"arch": str(cfg.arch), "tag": tag.decode()}))
        spdx_path = out / f"{name}.spdx.json"
        spdx_path.write_text("{}")
        return BuildResult(
            image=_artifact(out / cfg.image_name(), tag + b" image " + cfg.arch.encode()),
            manifest=manifest,
            spdx=spdx_path,
            version=release.release_version(cfg.suite, date),
            archive_date=date,
            kernel=_artifact(out / f"linux-{KVER}-{cfg.arch}.linux_{cfg.arch}", b"kernel"),
            modules=_artifact(
                out / f"modules-{KVER}-{cfg.arch}.linux_{cfg.arch}.cpio.zst", tag + b" modules"
            ),
            dtbs=_artifact(out / f"dtbs-{KVER}-{cfg.arch}.linux_{cfg.arch}.cpio.zst", b"dtbs")
            if dtbs
            else None,
        )

    return build


def fetch_nothing(cfg: BuildConfig) -> None:
    """A release's fetch of one architecture's packages, for fake builders that need none."""


def config(tmp_path: Path, *arches: Arch) -> ReleaseConfig:
    return ReleaseConfig(
        arches=arches,
        output=tmp_path / "releases",
        verify_signature=False,
        cache_dir=tmp_path / "cache",
        source_date_epoch=DATE,
    )


def expected_names(arches: list[Arch]) -> list[str]:
    names = ["SHA256SUMS"]
    for arch in arches:
        names += [
            f"initramfs.linux_{arch}.cpio.zst",
            f"initramfs.linux_{arch}.manifest.json",
            f"initramfs.linux_{arch}.spdx.json",
            f"linux-{KVER}-{arch}.linux_{arch}",
            f"modules-{KVER}-{arch}.linux_{arch}.cpio.zst",
        ]
    return sorted(names)


def sha256sum_check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("sha256sum"), "--check", "--strict", "SHA256SUMS"],
        cwd=folder,
        capture_output=True,
        text=True,
    )


def test_every_architecture_of_the_table_lands_in_the_version_folder(tmp_path: Path) -> None:
    seen: list[BuildConfig] = []
    result = release.make_release(config(tmp_path), fake_builder(seen), fetch_nothing)
    version = f"{__version__}+trixie.20261128"
    assert result.folder == tmp_path / "releases" / version
    assert [c.arch for c in seen] == list(ARCHES)
    assert [c.kernel_package for c in seen] == [a.facts.kernel_package for a in ARCHES]
    assert "linux-image-powerpc64le" in [c.kernel_package for c in seen]
    assert {c.source_date_epoch for c in seen} == {DATE}
    names = sorted(p.name for p in result.folder.iterdir())
    assert names == expected_names(list(ARCHES)) == list(result.files)
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(result.folder.stat().st_mode) == 0o777 & ~umask
    # Nothing else under releases/: no staging folder, no stray .sha256 files.
    assert sorted(p.name for p in (tmp_path / "releases").iterdir()) == [version]


def test_sha256sums_is_what_sha256sum_checks(tmp_path: Path) -> None:
    result = release.make_release(config(tmp_path), fake_builder([]), fetch_nothing)
    proc = sha256sum_check(result.folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checked = sorted(line.removesuffix(": OK") for line in proc.stdout.splitlines())
    assert checked == [n for n in expected_names(list(ARCHES)) if n != "SHA256SUMS"]
    # A changed file fails the check: the sums are of the bytes, not of the names.
    victim = result.folder / f"initramfs.linux_{next(iter(ARCHES))}.cpio.zst"
    victim.write_bytes(victim.read_bytes() + b"!")
    proc = sha256sum_check(result.folder)
    assert proc.returncode == 1
    assert f"{victim.name}: FAILED" in proc.stdout


def readme_release_table() -> list[str]:
    """The file names (with <arch>, <kver>) of the README's table of the release folder."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n### The release folder\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def test_the_readme_names_every_file_of_a_release(tmp_path: Path) -> None:
    """Each file of a release (device trees included) matches a row of the README's table."""
    result = release.make_release(config(tmp_path), fake_builder([], dtbs=True), fetch_nothing)
    rows = readme_release_table()
    patterns = {
        row: re.compile(
            re.escape(row).replace("<arch>", "(?P<arch>[a-z0-9]+)").replace("<kver>", ".+")
        )
        for row in rows
    }
    unnamed = [n for n in result.files if not any(p.fullmatch(n) for p in patterns.values())]
    assert unnamed == [], f"not in the README's release folder table: {unnamed}"
    assert any(name.startswith("dtbs-") for name in result.files)
    named = [row for row, p in patterns.items() if any(p.fullmatch(n) for n in result.files)]
    assert named == rows, "a row of the table names no file of a release"


def test_sha256sums_lists_every_file_sorted(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(b"bee")
    (tmp_path / "a").write_bytes(b"")
    (tmp_path / "SHA256SUMS").write_text("stale\n")
    assert release.sha256sums(tmp_path) == (
        f"{hashlib.sha256(b'').hexdigest()}  a\n{hashlib.sha256(b'bee').hexdigest()}  b\n"
    )
    (tmp_path / "sub").mkdir()
    with pytest.raises(B2CError, match="not a regular file"):
        release.sha256sums(tmp_path)


def test_only_the_architectures_asked_for(tmp_path: Path) -> None:
    seen: list[BuildConfig] = []
    last = list(ARCHES)[-1]
    result = release.make_release(config(tmp_path, last, last), fake_builder(seen), fetch_nothing)
    assert [c.arch for c in seen] == [last]
    assert list(result.files) == expected_names([last])


def test_a_failed_rerun_leaves_the_previous_folder_whole(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    first = release.make_release(cfg, fake_builder([]), fetch_nothing)
    before = {p.name: p.read_bytes() for p in first.folder.iterdir()}
    with pytest.raises(SizeError):
        release.make_release(cfg, fake_builder([], tag=b"v2", fail=list(ARCHES)[-1]), fetch_nothing)
    assert {p.name: p.read_bytes() for p in first.folder.iterdir()} == before
    assert [p.name for p in (tmp_path / "releases").iterdir()] == [first.folder.name]
    # A successful re-run replaces every file of the folder at once.
    again = release.make_release(cfg, fake_builder([], tag=b"v2"), fetch_nothing)
    assert again.folder == first.folder
    after = {p.name: p.read_bytes() for p in again.folder.iterdir()}
    assert after.keys() == before.keys()
    assert after[f"initramfs.linux_{next(iter(ARCHES))}.cpio.zst"].startswith(b"v2 ")
    assert sha256_ok(again.folder)
    assert [p.name for p in (tmp_path / "releases").iterdir()] == [first.folder.name]


def sha256_ok(folder: Path) -> bool:
    return sha256sum_check(folder).returncode == 0


def test_two_archive_snapshots_in_one_release_are_refused(tmp_path: Path) -> None:
    # Two builds whose InRelease dates differ: the mirror was updated in between.
    arches = list(ARCHES)
    require(len(arches) > 1, "needs two architectures in config.ARCHES")
    first, last = arches[0], arches[-1]
    with pytest.raises(VerifyError, match="the archive changed during the release"):
        release.make_release(
            config(tmp_path, first, last),
            fake_builder([], dates={first: DATE, last: DATE + 86400}),
            fetch_nothing,
        )
    assert list((tmp_path / "releases").iterdir()) == []


def test_the_cli_refuses_an_unknown_architecture() -> None:
    proc = b2c("release", "--arch", "vax")
    assert proc.returncode == 2
    assert "vax" in proc.stderr


@pytest.mark.network
def test_a_real_release_of_amd64(tmp_path: Path) -> None:
    """`b2c-builder release --arch amd64`: the folder named after the verified InRelease's
    date, every file checked by sha256sum, the SPDX document valid and naming busybox-static
    at the manifest's version."""
    output = tmp_path / "releases"
    proc = b2c(
        "release", "--arch", "amd64", "--output", str(output), "--cache-dir", str(shared_cache())
    )
    assert proc.returncode == 0, proc.stderr
    (folder,) = output.iterdir()
    assert proc.stdout.strip() == str(folder)
    assert folder.name.startswith(f"{__version__}+trixie.")
    day = folder.name.rsplit(".", 1)[1]
    assert len(day) == 8 and day.isdigit()
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 6 and names[0] == "SHA256SUMS"
    assert sha256_ok(folder)
    manifest = json.loads((folder / "initramfs.linux_amd64.manifest.json").read_text())
    busybox = {f["version"] for f in manifest["files"] if f.get("package") == "busybox-static"}
    doc = parse_from_file(str(folder / "initramfs.linux_amd64.spdx.json"))
    assert validate_full_spdx_document(doc) == []
    (package,) = [p for p in doc.packages if p.name == "busybox-static"]
    assert {package.version} == busybox
    assert [c.algorithm.name for c in package.checksums] == ["SHA256"]
    image = next(p for p in doc.packages if p.name == "initramfs.linux_amd64.cpio.zst")
    assert image.version == folder.name
    assert [c.value for c in image.checksums] == [
        file_sha256(folder / "initramfs.linux_amd64.cpio.zst")
    ]


def test_a_rerun_with_fewer_architectures_says_what_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The version folder is replaced whole: a re-run for one architecture after a full
    release names the files of the others, which the new folder lacks."""
    first, *rest = list(ARCHES)
    release.make_release(config(tmp_path), fake_builder([]), fetch_nothing)
    with caplog.at_level(logging.WARNING, logger="b2c"):
        again = release.make_release(config(tmp_path, first), fake_builder([]), fetch_nothing)
    assert list(again.files) == expected_names([first])
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"replacing the release folder {again.folder}")
    for arch in rest:
        assert f"initramfs.linux_{arch}.cpio.zst" in warning
    assert f"initramfs.linux_{first}.cpio.zst" not in warning


# --- every architecture's packages are fetched before any is built ---------------------------


def test_every_architecture_is_fetched_before_any_is_built(tmp_path: Path) -> None:
    """The fetch of each build gets the very config its build gets, and all come first."""
    events: list[tuple[str, BuildConfig]] = []
    builder = fake_builder([])

    def fetch(cfg: BuildConfig) -> None:
        events.append(("fetch", cfg))

    def build(cfg: BuildConfig) -> BuildResult:
        events.append(("build", cfg))
        return builder(cfg)

    release.make_release(config(tmp_path), build, fetch)
    fetched = [cfg for what, cfg in events if what == "fetch"]
    built = [cfg for what, cfg in events if what == "build"]
    assert [what for what, _ in events] == ["fetch"] * len(ARCHES) + ["build"] * len(ARCHES)
    assert fetched == built
    assert [c.arch for c in built] == list(ARCHES)


def deb_url(arch: Arch) -> str:
    return f"http://mirror.invalid/debian/pool/main/c/crun/crun_1.21-1_{arch}.deb"


def lacking_fetcher(
    fetched: list[Arch], lacking: set[Arch], error: B2CError | None = None
) -> Callable[[BuildConfig], None]:
    """A fetch that meets HTTP 404 for a .deb of each architecture in ``lacking`` (as
    download.fetch raises it), or ``error`` for the first of them."""

    def fetch(cfg: BuildConfig) -> None:
        fetched.append(cfg.arch)
        if cfg.arch in lacking:
            if error is not None:
                raise error
            raise MissingError(f"cannot download {deb_url(cfg.arch)}: HTTP 404 Not Found")

    return fetch


def test_a_mirror_lacking_architectures_fails_before_any_build(tmp_path: Path) -> None:
    """Every architecture is tried, so the error names each one the mirror lacks with its
    missing .deb, and the hint the --arch options of those it serves."""
    arches = list(ARCHES)
    require(len(arches) > 2, "needs three architectures in config.ARCHES")
    lacking = set(arches[1::2])
    served = [a for a in arches if a not in lacking]
    seen: list[BuildConfig] = []
    fetched: list[Arch] = []
    with pytest.raises(MissingError) as err:
        release.make_release(
            config(tmp_path), fake_builder(seen), lacking_fetcher(fetched, lacking)
        )
    assert seen == [], "no image is built"
    assert fetched == arches
    message = err.value.message
    lacked = ", ".join(a for a in arches if a in lacking)
    assert message.startswith(f"the mirror lacks files of {lacked}, nothing was built: ")
    for arch in lacking:
        assert f"{arch}: cannot download {deb_url(arch)}: HTTP 404 Not Found" in message
    for arch in served:
        assert deb_url(arch) not in message
    args = " ".join(f"--arch {a}" for a in served)
    assert err.value.hint is not None
    assert f'{args} (make release RELEASE_ARGS="{args}")' in err.value.hint
    assert all(f"--arch {a}" not in err.value.hint for a in lacking)
    assert list((tmp_path / "releases").iterdir()) == []


def test_a_mirror_lacking_every_architecture_suggests_no_arch(tmp_path: Path) -> None:
    with pytest.raises(MissingError) as err:
        release.make_release(config(tmp_path), fake_builder([]), lacking_fetcher([], set(ARCHES)))
    assert err.value.hint is not None and "--arch" not in err.value.hint
    assert "--mirror" in err.value.hint


def test_another_fetch_error_stops_the_release_at_once(tmp_path: Path) -> None:
    """Only a file the mirror lacks lets the other architectures be tried: a .deb that does
    not match the signed index ends the release there."""
    arches = list(ARCHES)
    require(len(arches) > 1, "needs two architectures in config.ARCHES")
    fetched: list[Arch] = []
    tampered = VerifyError("crun_1.21-1.deb: SHA256 mismatch")
    with pytest.raises(VerifyError, match="SHA256 mismatch"):
        release.make_release(
            config(tmp_path), fake_builder([]), lacking_fetcher(fetched, {arches[0]}, tampered)
        )
    assert fetched == arches[:1]


@pytest.fixture(scope="module")
def key() -> Iterator[GpgKey]:
    for tool in ("gpg", "gpgv", "dpkg-deb"):
        require_tool(tool)
    with GpgKey() as k:
        yield k


def fake_archive(arch: Arch) -> list[FakePackage]:
    """What a release resolves for ``arch``: the image's packages and Debian's kernel (its
    metapackage and the linux-image it depends on), a doc file each and no programs (a real
    build of them stops at /usr/bin/busybox, after fetching and extracting them)."""
    kernel = f"linux-image-6.99.0-1-{arch}"
    names = [*image.PACKAGES, arch.facts.kernel_package, kernel]
    return [
        FakePackage(
            name,
            architecture=str(arch),
            depends=kernel if name == arch.facts.kernel_package else "",
            files={f"usr/share/doc/{name}/copyright": f"fake {name}\n".encode()},
        )
        for name in names
    ]


def deb_requests(mirror: LocalMirror) -> list[str]:
    return sorted(path.rsplit("/", 1)[-1] for path in mirror.requests if path.endswith(".deb"))


def test_a_mirror_that_404s_an_architectures_deb_fails_before_any_build(
    key: GpgKey, tmp_path: Path
) -> None:
    """The real fetch, on a mirror whose index lists arm64's busybox-static but answers 404
    for it: `release` exits 1 before building anything, naming arm64 and the .deb, with the
    --arch that releases the rest. amd64's .debs are in the download cache by then, verified,
    and a release of amd64 alone takes them from there (its fetch and its build download
    nothing)."""
    amd64, arm64 = Arch.amd64, Arch.arm64
    require({amd64, arm64} <= set(ARCHES), "needs amd64 and arm64 in config.ARCHES")
    out, cache = tmp_path / "releases", tmp_path / "cache"
    packages = [*fake_archive(amd64), *fake_archive(arm64)]
    with LocalMirror(tmp_path / "archive", packages, key=key, more_arches=[arm64]) as mirror:
        mirror.unserve_deb("busybox-static", arm64)
        lacking = f"{mirror.url}/{mirror.package('busybox-static', arm64).filename}"
        proc = b2c(
            "release", "--arch", "amd64", "--arch", "arm64", "--mirror", mirror.url,
            "--keyring", str(mirror.keyring), "--cache-dir", str(cache), "--output", str(out),
            timeout=300,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        error, hint = [line for line in proc.stderr.splitlines() if line.startswith("ERROR: ")]
        assert error.startswith(
            "ERROR: the mirror lacks files of arm64, nothing was built: "
            f"arm64: cannot download {lacking}: HTTP 404 "  # the server's reason follows
        ), error
        assert hint == (
            "ERROR: hint: release the architectures it serves: --arch amd64 (make release "
            'RELEASE_ARGS="--arch amd64"), or pass another --mirror or --suite'
        )
        assert "Release: building" not in proc.stderr
        assert list(out.iterdir()) == []
        amd64_debs = sorted(Path(p.filename).name for p in fake_archive(amd64))
        assert [d for d in deb_requests(mirror) if d.endswith("_amd64.deb")] == amd64_debs
        for package in fake_archive(amd64):
            data = mirror.deb_path(package.name, amd64).read_bytes()
            assert download.cached(cache, hashlib.sha256(data).hexdigest(), len(data))
        requested = deb_requests(mirror)
        cfg = ReleaseConfig(
            arches=(amd64,), output=out, mirror=mirror.url, keyring=mirror.keyring, cache_dir=cache
        )
        with pytest.raises(B2CError, match="/usr/bin/busybox"):
            release.make_release(cfg)  # the real fetch, then the real build
        assert deb_requests(mirror) == requested
