"""`b2c-builder diff`: two small images written by the project's cpio writer (raw and
compressed), with manifest.json / spdx.json beside them, and two release folders; the CLI's
exit codes (0 identical, 1 different, 2 bad input) and its JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from b2c_builder.build import compress, diff, podman, spdx
from b2c_builder.build.cpio import write_cpio
from b2c_builder.build.rootfs import BUILDER, Origin, Rootfs
from b2c_builder.config import Arch, Compression
from b2c_builder.digest import file_sha256
from tests.conftest import b2c
from tests.test_spdx import trimmed_podman

EPOCH = 1_764_288_000

OLD_FILES: dict[str, tuple[bytes, Origin]] = {
    "usr/bin/busybox": (b"B" * 100, Origin("busybox-static", "1:1.37.0-6")),
    "usr/bin/crun": (b"C" * 50, Origin("crun", "1.21-1")),
    "usr/bin/gone": (b"G" * 7, Origin("gone", "1.0")),
    "etc/hosts": (b"127.0.0.1 localhost\n", BUILDER),
}
NEW_FILES: dict[str, tuple[bytes, Origin]] = {
    "usr/bin/busybox": (b"B" * 100, Origin("busybox-static", "1:1.37.0-6")),
    "usr/bin/crun": (b"C" * 64, Origin("crun", "1.22-1")),
    "usr/bin/new": (b"N" * 3, Origin("newpkg", "2.0")),
    "etc/hosts": (b"127.0.0.2 localhost\n", BUILDER),
}


def rootfs(files: dict[str, tuple[bytes, Origin]]) -> Rootfs:
    fs = Rootfs()
    for path, (data, origin) in files.items():
        fs.add_file(path, data, 0o755, origin=origin)
    return fs


def write_image(
    folder: Path,
    files: dict[str, tuple[bytes, Origin]],
    compression: Compression = Compression.zstd,
    *,
    sbom: str = "both",
    arch: str = "amd64",
    trimmed: podman.PodmanBuild | None = None,
) -> Path:
    """An image ``initramfs.linux_<arch>.cpio<ext>`` in ``folder`` with the SBOMs the build
    writes beside it (``sbom``: both, manifest, spdx or none)."""
    folder.mkdir(parents=True, exist_ok=True)
    fs = rootfs(files)
    image = folder / f"initramfs.linux_{arch}.cpio{compression.extension()}"
    with image.open("wb") as raw, compress.open_compressed(raw, compression, Arch.amd64) as out:
        write_cpio(fs, out, source_date_epoch=EPOCH)
    stem = f"initramfs.linux_{arch}"
    if sbom in ("both", "manifest"):
        items = [
            {"path": "/" + e.path, "package": e.origin.package, "version": e.origin.version}
            for e in fs
            if e.origin is not None
        ]
        section = trimmed.sbom() if trimmed else {"variant": "debian"}
        (folder / f"{stem}.manifest.json").write_text(
            json.dumps({"podman": section, "files": items})
        )
    if sbom in ("both", "spdx"):
        origins = {
            e.origin
            for e in fs
            if e.origin is not None and e.origin != BUILDER and ":" not in e.origin.package
        }
        packages = tuple(spdx.DebianPackage(o.package, o.version, arch) for o in origins)
        doc = spdx.document(
            name=stem,
            version="0.1.0+trixie.20251128",
            suite="trixie",
            epoch=EPOCH,
            files=[spdx.ReleaseFile(image.name, file_sha256(image), "image", packages)],
            trimmed=trimmed,
        )
        (folder / f"{stem}.spdx.json").write_text(spdx.to_json(doc))
    return image


def paths(items: list[dict[str, Any]]) -> list[str]:
    return [item["path"] for item in items]


def test_files_and_packages_that_changed(tmp_path: Path) -> None:
    old = write_image(tmp_path / "old", OLD_FILES)
    new = write_image(tmp_path / "new", NEW_FILES, Compression.xz)
    report = diff.diff(old, new)
    assert not report.identical()
    (image,) = report.images
    assert image.files.added == [{"path": "/usr/bin/new", "size": 3}]
    assert image.files.removed == [{"path": "/usr/bin/gone", "size": 7}]
    assert image.files.resized == [{"path": "/usr/bin/crun", "old_size": 50, "new_size": 64}]
    assert image.files.modified == [{"path": "/etc/hosts", "what": "contents"}]
    packages = image.packages
    assert (packages.available, packages.source) == (True, "spdx.json")
    assert packages.changed == [{"name": "crun", "old": "1.21-1", "new": "1.22-1"}]
    assert packages.added == [{"name": "newpkg", "version": "2.0"}]
    assert packages.removed == [{"name": "gone", "version": "1.0"}]
    text = diff.render_text(report)
    assert "  ~ /usr/bin/crun 50 B -> 64 B (+14 B; 50 -> 64 bytes)" in text
    assert "  + /usr/bin/new (3 B)" in text
    assert "  - /usr/bin/gone (7 B)" in text
    assert "  ~ crun 1.21-1 -> 1.22-1" in text
    assert text.endswith("different\n")


def test_the_manifest_serves_when_there_is_no_spdx(tmp_path: Path) -> None:
    old = write_image(tmp_path / "old", OLD_FILES, sbom="manifest")
    new = write_image(tmp_path / "new", NEW_FILES, Compression.none, sbom="both")
    packages = diff.diff(old, new).images[0].packages
    assert packages.source == "manifest.json"
    assert packages.changed == [{"name": "crun", "old": "1.21-1", "new": "1.22-1"}]


def test_without_sboms_the_package_view_is_unavailable(tmp_path: Path) -> None:
    old = write_image(tmp_path / "old", OLD_FILES, sbom="none")
    new = write_image(tmp_path / "new", OLD_FILES, Compression.gzip, sbom="both")
    report = diff.diff(old, new)
    assert report.identical()  # same files; no package view to disagree
    assert not report.images[0].packages.available
    assert "packages: unavailable (no initramfs.linux_amd64.spdx.json" in diff.render_text(report)


@pytest.mark.parametrize("sbom", ["spdx", "manifest"])
def test_a_trimmed_podman_is_a_version_change_and_its_build_inputs_stay_out(
    tmp_path: Path, sbom: str
) -> None:
    debian = {**OLD_FILES, "usr/bin/podman": (b"P" * 90, Origin("podman", "5.4.2+ds1-2+b2"))}
    trimmed = {**OLD_FILES, "usr/bin/podman": (b"T" * 60, Origin("src:podman", "5.4.2+ds1-2"))}
    old = write_image(tmp_path / "old", debian, sbom=sbom)
    new = write_image(tmp_path / "new", trimmed, sbom=sbom, trimmed=trimmed_podman(tmp_path))
    image = diff.diff(old, new).images[0]
    assert image.files.resized == [{"path": "/usr/bin/podman", "old_size": 90, "new_size": 60}]
    assert image.packages.source == f"{sbom}.json"
    assert image.packages.changed == [
        {"name": "podman", "old": "5.4.2+ds1-2+b2", "new": "5.4.2+ds1-2 (built from source)"}
    ]
    # The Go code, the toolchain and the C sysroot built it: they are not in the image.
    assert (image.packages.added, image.packages.removed) == ([], [])


def test_release_folders_pair_images_by_architecture(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for arch in ("amd64", "arm64"):
        write_image(old, OLD_FILES, arch=arch)
    write_image(new, OLD_FILES, arch="amd64")
    write_image(new, NEW_FILES, arch="arm64")
    (old / "linux-6.12.57.linux_amd64").write_bytes(b"k" * 10)
    (new / "linux-6.12.58.linux_amd64").write_bytes(b"k" * 11)
    report = diff.diff(old, new)
    assert report.release_files is not None
    assert paths(report.release_files.added) == ["linux-6.12.58.linux_amd64"]
    assert paths(report.release_files.removed) == ["linux-6.12.57.linux_amd64"]
    assert paths(report.release_files.resized) == [
        "initramfs.linux_arm64.cpio.zst",
        "initramfs.linux_arm64.manifest.json",
        "initramfs.linux_arm64.spdx.json",
    ]
    labels = {image.label: image for image in report.images}
    assert sorted(labels) == ["amd64 image", "arm64 image"]
    assert labels["amd64 image"].identical()
    assert paths(labels["arm64 image"].files.added) == ["/usr/bin/new"]


def write_pair(tmp_path: Path, same: bool) -> tuple[Path, Path]:
    old = write_image(tmp_path / "old", OLD_FILES)
    new = write_image(tmp_path / "new", OLD_FILES if same else NEW_FILES)
    return old, new


def test_cli_exit_codes_are_those_of_diff1(tmp_path: Path) -> None:
    old, new = write_pair(tmp_path, same=False)
    proc = b2c("diff", str(old), str(new))
    assert proc.returncode == 1, proc.stderr
    assert "~ crun 1.21-1 -> 1.22-1" in proc.stdout
    proc = b2c("diff", str(old), str(old))
    assert (proc.returncode, proc.stdout.splitlines()[-1]) == (0, "identical")
    proc = b2c("diff", "--json", str(old.parent), str(new.parent))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["identical"] is False
    (image,) = doc["images"]
    assert image["packages"]["removed"] == [{"name": "gone", "version": "1.0"}]


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (lambda d: d / "missing.cpio", "does not exist"),
        (lambda d: _write(d / "junk.cpio", b"not an archive at all"), "is not an image"),
        (lambda d: _write(d / "cut.cpio.zst", _cut(d)), "is not an image"),
        (lambda d: _write(d / "empty.cpio", b""), "is empty"),
    ],
)
def test_bad_input_is_exit_2_with_a_message(tmp_path: Path, make_bad: Any, message: str) -> None:
    good = write_image(tmp_path / "good", OLD_FILES)
    bad = make_bad(tmp_path)
    proc = b2c("diff", str(good), str(bad))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_image_and_a_folder_cannot_be_compared(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good", OLD_FILES)
    with pytest.raises(diff.DiffError, match="cannot compare an image"):
        diff.diff(good, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(diff.DiffError, match="holds no initramfs"):
        diff.diff(tmp_path / "empty", tmp_path / "good")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _cut(folder: Path) -> bytes:
    """A zstd image cut in the middle."""
    image = write_image(folder / "tocut", OLD_FILES)
    data = image.read_bytes()
    return data[: len(data) // 2]
