"""The SPDX 2.3 SBOM: written with spdx-tools, checked by spdx-tools' own validator after a
round trip through its JSON parser, for its content (packages, versions, PURLs, checksums,
relationships, a trimmed podman's build inputs) and for reproducible bytes."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from spdx_tools.spdx.model.document import Document
from spdx_tools.spdx.model.relationship import RelationshipType
from spdx_tools.spdx.parser.json.json_parser import parse_from_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from b2c_builder import __version__
from b2c_builder.build import pipeline, podman, spdx
from b2c_builder.build.debian import index
from b2c_builder.build.rootfs import BUILDER, Origin, Rootfs
from tests.conftest import ROOT, require

EPOCH = 1_764_288_000  # 2025-11-28 00:00:00 UTC
BUSYBOX = spdx.DebianPackage("busybox-static", "1:1.37.0-6+b3", "amd64", "a" * 64)
CACERTS = spdx.DebianPackage("ca-certificates", "20250419", "all", "b" * 64)
KERNEL_PKG = spdx.DebianPackage("linux-image-6.12.57+deb13-amd64", "6.12.57-1", "amd64", None)


def files(image_sha: str = "1" * 64) -> list[spdx.ReleaseFile]:
    return [
        spdx.ReleaseFile("initramfs.linux_amd64.cpio.zst", image_sha, "image", (BUSYBOX, CACERTS)),
        spdx.ReleaseFile(
            "linux-6.12.57+deb13-amd64.linux_amd64", "2" * 64, "kernel", (KERNEL_PKG,)
        ),
        spdx.ReleaseFile(
            "modules-6.12.57+deb13-amd64.linux_amd64.cpio.zst", "3" * 64, "modules", (KERNEL_PKG,)
        ),
    ]


def trimmed_podman(tmp_path: Path) -> podman.PodmanBuild:
    binary = tmp_path / "podman"
    binary.write_bytes(b"\x7fELF fake podman")
    return podman.PodmanBuild(
        binary=binary,
        sha256="c" * 64,
        source="podman",
        source_version="5.4.2+ds1-2",
        source_files=(
            index.FileRef("podman_5.4.2+ds1-2.dsc", "d" * 64, 10),
            index.FileRef("podman_5.4.2+ds1.orig.tar.xz", "e" * 64, 20),
        ),
        patches=("fix-a.patch",),
        toolchain=(podman.InputPackage("golang-1.24-go", "1.24.4-1", "f" * 64, "amd64"),),
        go_dependencies=(
            podman.InputPackage("golang-github-containers-storage-dev", "1.57.2+ds1-1", "9" * 64),
        ),
        go_unlinked=(podman.InputPackage("golang-github-unused-dev", "0.1-1", "8" * 64, "all"),),
        c_sysroot=(podman.InputPackage("libc6-dev", "2.41-12", "7" * 64, "amd64"),),
        c_compiler="x86_64-linux-gnu-gcc (Debian 14.2.0-19) 14.2.0",
        recipe=podman.RECIPE,
        goarch="amd64",
        dropped_commands=("kube",),
        cached=True,
    )


def write(tmp_path: Path, doc: Document, name: str = "sbom.spdx.json") -> Path:
    path = tmp_path / name
    path.write_text(spdx.to_json(doc))
    return path


def make(trimmed: podman.PodmanBuild | None = None, image_sha: str = "1" * 64) -> Document:
    return spdx.document(
        name="initramfs.linux_amd64",
        version="0.1.0+trixie.20251128",
        suite="trixie",
        epoch=EPOCH,
        files=files(image_sha),
        trimmed=trimmed,
    )


def relations(doc: Document) -> set[tuple[str, str, str]]:
    """(element name, relationship, related element name) of every relationship."""
    names = {p.spdx_id: p.name for p in doc.packages} | {"SPDXRef-DOCUMENT": "DOCUMENT"}
    return {
        (
            names[r.spdx_element_id],
            r.relationship_type.name,
            names[str(r.related_spdx_element_id)],
        )
        for r in doc.relationships
    }


def test_the_written_document_validates_and_names_every_package(tmp_path: Path) -> None:
    path = write(tmp_path, make())
    doc = parse_from_file(str(path))
    assert validate_full_spdx_document(doc) == []
    assert doc.creation_info.spdx_version == "SPDX-2.3"
    assert doc.creation_info.created.isoformat() == "2025-11-28T00:00:00"
    assert [str(c) for c in doc.creation_info.creators] == [f"Tool: b2c-builder-{__version__}"]
    by_name = {p.name: p for p in doc.packages}
    busybox = by_name["busybox-static"]
    assert busybox.version == "1:1.37.0-6+b3"
    assert [(c.algorithm.name, c.value) for c in busybox.checksums] == [("SHA256", "a" * 64)]
    assert [r.locator for r in busybox.external_references] == [
        "pkg:deb/debian/busybox-static@1%3A1.37.0-6%2Bb3?arch=amd64&distro=trixie"
    ]
    assert [r.locator for r in by_name["ca-certificates"].external_references] == [
        "pkg:deb/debian/ca-certificates@20250419?arch=all&distro=trixie"
    ]
    kernel_pkg = by_name["linux-image-6.12.57+deb13-amd64"]
    assert kernel_pkg.checksums == []  # no .deb hash known: none claimed
    image = by_name["initramfs.linux_amd64.cpio.zst"]
    assert image.version == "0.1.0+trixie.20251128"
    assert [c.value for c in image.checksums] == ["1" * 64]
    assert relations(doc) == {
        ("DOCUMENT", "DESCRIBES", "initramfs.linux_amd64.cpio.zst"),
        ("DOCUMENT", "DESCRIBES", "linux-6.12.57+deb13-amd64.linux_amd64"),
        ("DOCUMENT", "DESCRIBES", "modules-6.12.57+deb13-amd64.linux_amd64.cpio.zst"),
        ("initramfs.linux_amd64.cpio.zst", "CONTAINS", "busybox-static"),
        ("initramfs.linux_amd64.cpio.zst", "CONTAINS", "ca-certificates"),
        ("linux-6.12.57+deb13-amd64.linux_amd64", "CONTAINS", "linux-image-6.12.57+deb13-amd64"),
        (
            "modules-6.12.57+deb13-amd64.linux_amd64.cpio.zst",
            "CONTAINS",
            "linux-image-6.12.57+deb13-amd64",
        ),
        ("b2c-builder", "GENERATES", "initramfs.linux_amd64.cpio.zst"),
        ("b2c-builder", "GENERATES", "linux-6.12.57+deb13-amd64.linux_amd64"),
        ("b2c-builder", "GENERATES", "modules-6.12.57+deb13-amd64.linux_amd64.cpio.zst"),
    }
    # The kernel package is one element, contained by two release files.
    assert [p.name for p in doc.packages].count("linux-image-6.12.57+deb13-amd64") == 1


def test_a_trimmed_podman_names_its_source_and_build_inputs(tmp_path: Path) -> None:
    doc = parse_from_file(str(write(tmp_path, make(trimmed_podman(tmp_path)))))
    assert validate_full_spdx_document(doc) == []
    by_id = {p.spdx_id: p for p in doc.packages}
    (binary,) = [p for p in doc.packages if p.file_name == "/usr/bin/podman"]
    assert (binary.version, [c.value for c in binary.checksums]) == ("5.4.2+ds1-2", ["c" * 64])
    (source,) = [
        by_id[str(r.related_spdx_element_id)]
        for r in doc.relationships
        if r.spdx_element_id == binary.spdx_id
        and r.relationship_type is RelationshipType.GENERATED_FROM
    ]
    assert (source.name, source.version, source.file_name) == (
        "podman",
        "5.4.2+ds1-2",
        "podman_5.4.2+ds1-2.dsc",
    )
    assert [c.value for c in source.checksums] == ["d" * 64]
    assert [r.locator for r in source.external_references] == [
        "pkg:deb/debian/podman@5.4.2%2Bds1-2?arch=source&distro=trixie"
    ]
    assert "fix-a.patch" in str(source.source_info)
    found = {t for t in relations(doc) if "podman" in (t[0], t[2]) or t[2] == "podman"}
    assert found >= {
        ("initramfs.linux_amd64.cpio.zst", "CONTAINS", "podman"),
        ("golang-github-containers-storage-dev", "BUILD_DEPENDENCY_OF", "podman"),
        ("podman", "STATIC_LINK", "golang-github-containers-storage-dev"),
        ("golang-github-unused-dev", "BUILD_DEPENDENCY_OF", "podman"),
        ("golang-1.24-go", "BUILD_TOOL_OF", "podman"),
        ("libc6-dev", "BUILD_DEPENDENCY_OF", "podman"),
    }
    # Not linked: no STATIC_LINK. Unknown architecture: no arch qualifier.
    assert ("podman", "STATIC_LINK", "golang-github-unused-dev") not in relations(doc)
    (storage,) = [p for p in doc.packages if p.name == "golang-github-containers-storage-dev"]
    assert [r.locator for r in storage.external_references] == [
        "pkg:deb/debian/golang-github-containers-storage-dev@1.57.2%2Bds1-1?distro=trixie"
    ]


def test_the_bytes_are_reproducible_and_the_namespace_follows_the_content(
    tmp_path: Path,
) -> None:
    first, second = spdx.to_json(make()), spdx.to_json(make())
    assert first == second
    other = spdx.to_json(make(image_sha="4" * 64))
    namespace = json.loads(first)["documentNamespace"]
    assert namespace.startswith(spdx.NAMESPACE_BASE + "/initramfs.linux_amd64-")
    assert namespace != json.loads(other)["documentNamespace"]
    assert json.loads(first)["creationInfo"]["created"] == "2025-11-28T00:00:00Z"


def test_the_build_names_the_packages_that_gave_files() -> None:
    rootfs = Rootfs()
    rootfs.add_file("usr/bin/busybox", b"bb", 0o755, origin=Origin("busybox-static", "1:1.37.0-6"))
    rootfs.add_file("usr/bin/podman", b"pm", 0o755, origin=Origin("src:podman", "5.4.2+ds1-2"))
    rootfs.add_file("init", b"#!/bin/sh\n", 0o755, origin=BUILDER)
    rootfs.add_file("usr/lib/x.so", b"x", origin=Origin("libx1", "2.0"))
    fetched = {
        ("busybox-static", "1:1.37.0-6"): index.Package(
            "busybox-static", "1:1.37.0-6", "amd64", "pool/b.deb", 1, "a" * 64
        )
    }
    packages = pipeline.debian_packages(pipeline._origins(rootfs), fetched)
    assert packages == (
        spdx.DebianPackage("busybox-static", "1:1.37.0-6", "amd64", "a" * 64),
        spdx.DebianPackage("libx1", "2.0", "", None),
    )


def readme_validation_command() -> list[str]:
    """The README's command that validates an SBOM, as words (its file argument last)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    (line,) = [line for line in lines if line.startswith(".venv/bin/pyspdxtools ")]
    return shlex.split(line)


def test_the_readme_validates_the_sbom_with_pyspdxtools(tmp_path: Path) -> None:
    """The README's `.venv/bin/pyspdxtools -i FILE` (spdx-tools' own command): silent and 0
    for our document, 1 naming the problem once the document is broken."""
    *command, sbom = readme_validation_command()
    assert command == [".venv/bin/pyspdxtools", "-i"] and sbom.endswith(".spdx.json")
    tool = Path(sys.executable).parent / "pyspdxtools"  # .venv/bin/ of this checkout
    require(tool.is_file(), f"{tool} is missing (make deps-test installs spdx-tools)")
    good = write(tmp_path, make())
    proc = subprocess.run([str(tool), *command[1:], str(good)], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    doc = json.loads(good.read_text())
    doc["packages"][0]["SPDXID"] = "not an id"
    bad = tmp_path / "bad.spdx.json"
    bad.write_text(json.dumps(doc))
    proc = subprocess.run([str(tool), *command[1:], str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "The document is invalid" in proc.stderr and "not an id" in proc.stderr
