"""The release's SBOM in SPDX 2.3 JSON, written with the spdx-tools library.

One document per architecture (``initramfs.linux_<arch>.spdx.json``, beside the per-file
``manifest.json``). It describes the release files (the image, and the kernel and the
modules archive when the build wrote them) as SPDX packages, and names every Debian binary
package that contributed a file to one of them, with its version, its Package URL
(``pkg:deb/debian/<name>@<version>?arch=<arch>&distro=<suite>``, the purl spec's ``deb``
type) and the SHA256 of the .deb the archive client verified. Relationships (SPDX 2.3,
section 11):

- the document DESCRIBES each release file;
- a release file CONTAINS each Debian package that contributed a file to it;
- b2c-builder GENERATES each release file (it wrote /init and the configuration files);
- a trimmed podman (``--podman trimmed``) is its own package, CONTAINed by the image and
  GENERATED_FROM Debian's source package; its Go build-dependencies are BUILD_DEPENDENCY_OF
  it, and those whose code is compiled into it also STATIC_LINKed by it; the Go toolchain
  is BUILD_TOOL_OF it, the C sysroot (libc6-dev...) BUILD_DEPENDENCY_OF it.

The bytes are reproducible: the creation time is the build's SOURCE_DATE_EPOCH and the
document namespace ends with the SHA256 of the document written with a placeholder
namespace, so the same inputs give the same file and different contents a different
namespace.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from spdx_tools.spdx.model.actor import Actor, ActorType
from spdx_tools.spdx.model.checksum import Checksum, ChecksumAlgorithm
from spdx_tools.spdx.model.document import CreationInfo, Document
from spdx_tools.spdx.model.package import (
    ExternalPackageRef,
    ExternalPackageRefCategory,
    Package,
    PackagePurpose,
)
from spdx_tools.spdx.model.relationship import Relationship, RelationshipType
from spdx_tools.spdx.model.spdx_no_assertion import SpdxNoAssertion
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

from b2c_builder import __version__
from b2c_builder.build.podman import InputPackage, PodmanBuild
from b2c_builder.errors import B2CError

SPDX_VERSION = "SPDX-2.3"
NAMESPACE_BASE = "https://spdx.org/spdxdocs/b2c-builder"
_PLACEHOLDER = "0" * 64
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


class SbomError(B2CError):
    """The SPDX document the build assembled does not validate (a bug: the hint says so)."""


@dataclass(frozen=True, order=True)
class DebianPackage:
    """A Debian binary package as the SBOM names it.

    ``architecture`` is the stanza's Architecture (``amd64``, ``all``; "" when unknown, then
    the PURL has no arch qualifier); ``sha256`` the hex SHA256 of the .deb the archive client
    verified (None when the build did not fetch it, e.g. a --modules-dir tree).
    """

    name: str
    version: str
    architecture: str = ""
    sha256: str | None = None


@dataclass(frozen=True)
class ReleaseFile:
    """A file of the release, described by the document: its name, the hex SHA256 of its
    bytes, what it is (``image``, ``kernel``, ``modules``, ``dtbs``) and the Debian packages whose
    files it holds."""

    name: str
    sha256: str
    role: str
    packages: tuple[DebianPackage, ...] = field(default=())


_PURPOSE = {
    "image": PackagePurpose.OPERATING_SYSTEM,
    "kernel": PackagePurpose.OPERATING_SYSTEM,
    "modules": PackagePurpose.ARCHIVE,
    "dtbs": PackagePurpose.ARCHIVE,
}


def purl(package: DebianPackage, suite: str) -> str:
    """The Package URL of a Debian package (purl spec, type ``deb``, namespace ``debian``):
    ``pkg:deb/debian/busybox-static@1%3A1.37.0-6?arch=amd64&distro=trixie``. The version is
    percent-encoded (an epoch's ``:``, ``+``, ``~``); qualifiers are sorted by key."""
    qualifiers = ([f"arch={package.architecture}"] if package.architecture else []) + [
        f"distro={suite}"
    ]
    version = quote(package.version, safe=".-_")
    return f"pkg:deb/debian/{quote(package.name, safe='.-_+')}@{version}?{'&'.join(qualifiers)}"


class _Ids:
    """SPDX element ids (``SPDXRef-[A-Za-z0-9.-]+``), unique within the document."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def new(self, *parts: str) -> str:
        base = "SPDXRef-" + "-".join(_ID_UNSAFE.sub("-", p).strip("-") for p in parts if p)
        candidate, n = base, 1
        while candidate in self.used:
            n += 1
            candidate = f"{base}-{n}"
        self.used.add(candidate)
        return candidate


def _sha256(value: str) -> list[Checksum]:
    return [Checksum(ChecksumAlgorithm.SHA256, value)]


class _Builder:
    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.ids = _Ids()
        self.packages: list[Package] = []
        self.relationships: list[Relationship] = []
        self._debs: dict[DebianPackage, str] = {}

    def relate(self, a: str, kind: RelationshipType, b: str) -> None:
        self.relationships.append(Relationship(a, kind, b))

    def deb(self, package: DebianPackage, comment: str | None = None) -> str:
        """The element id of a Debian binary package, added once however often it is named."""
        if package in self._debs:
            return self._debs[package]
        spdx_id = self.ids.new("deb", package.name, package.architecture)
        self.packages.append(
            Package(
                spdx_id,
                package.name,
                SpdxNoAssertion(),
                version=package.version,
                supplier=Actor(ActorType.ORGANIZATION, "Debian"),
                files_analyzed=False,
                checksums=_sha256(package.sha256) if package.sha256 else [],
                external_references=[
                    ExternalPackageRef(
                        ExternalPackageRefCategory.PACKAGE_MANAGER,
                        "purl",
                        purl(package, self.suite),
                    )
                ],
                comment=comment,
            )
        )
        self._debs[package] = spdx_id
        return spdx_id


def _input(package: InputPackage) -> DebianPackage:
    return DebianPackage(package.name, package.version, package.architecture, package.sha256)


def _add_trimmed_podman(builder: _Builder, image_id: str, build: PodmanBuild) -> None:
    """The trimmed podman binary, its source package and every package its build read."""
    tags = ",".join(t.name for t in build.recipe.tags)
    binary = builder.ids.new("podman-trimmed")
    builder.packages.append(
        Package(
            binary,
            "podman",
            SpdxNoAssertion(),
            version=build.source_version,
            file_name="/usr/bin/podman",
            files_analyzed=False,
            checksums=_sha256(build.sha256),
            primary_package_purpose=PackagePurpose.APPLICATION,
            comment=f"compiled by b2c-builder from Debian's source package {build.source} "
            f"{build.source_version} (GOARCH={build.goarch}, cgo={build.recipe.cgo}, "
            f"tags {tags}, ldflags {' '.join(build.recipe.ldflags)}, left out: "
            f"{', '.join(build.dropped_commands) or 'nothing'}; C compiler: "
            f"{build.c_compiler or 'none'})",
        )
    )
    builder.relate(image_id, RelationshipType.CONTAINS, binary)
    dsc = next((f for f in build.source_files if f.path.endswith(".dsc")), None)
    source = builder.ids.new("src", build.source)
    source_package = DebianPackage(build.source, build.source_version, "source")
    builder.packages.append(
        Package(
            source,
            build.source,
            SpdxNoAssertion(),
            version=build.source_version,
            file_name=dsc.path if dsc else None,
            supplier=Actor(ActorType.ORGANIZATION, "Debian"),
            files_analyzed=False,
            checksums=_sha256(dsc.sha256) if dsc else [],
            source_info="Debian source package; patches applied: "
            + (", ".join(build.patches) or "none"),
            primary_package_purpose=PackagePurpose.SOURCE,
            external_references=[
                ExternalPackageRef(
                    ExternalPackageRefCategory.PACKAGE_MANAGER,
                    "purl",
                    purl(source_package, builder.suite),
                )
            ],
        )
    )
    builder.relate(binary, RelationshipType.GENERATED_FROM, source)
    for package in build.go_dependencies:
        dep = builder.deb(_input(package), "Go code compiled into the trimmed podman")
        builder.relate(dep, RelationshipType.BUILD_DEPENDENCY_OF, binary)
        builder.relate(binary, RelationshipType.STATIC_LINK, dep)
    for package in build.go_unlinked:
        dep = builder.deb(_input(package), "Go build-dependency, none of its code linked")
        builder.relate(dep, RelationshipType.BUILD_DEPENDENCY_OF, binary)
    for package in build.toolchain:
        tool = builder.deb(_input(package), "the Go toolchain that compiled podman")
        builder.relate(tool, RelationshipType.BUILD_TOOL_OF, binary)
    for package in build.c_sysroot:
        dep = builder.deb(_input(package), "C headers and libraries cgo compiled podman with")
        builder.relate(dep, RelationshipType.BUILD_DEPENDENCY_OF, binary)


def document(
    *,
    name: str,
    version: str,
    suite: str,
    epoch: int,
    files: Sequence[ReleaseFile],
    trimmed: PodmanBuild | None = None,
    namespace: str | None = None,
) -> Document:
    """The SPDX document of a release: ``files`` (the first is the image) with the Debian
    packages each holds and, for a trimmed podman, its build inputs. ``name`` names the
    document (``initramfs.linux_amd64``), ``version`` is the release version, ``epoch`` the
    creation time (SOURCE_DATE_EPOCH, seconds). ``namespace`` defaults to a placeholder:
    ``to_json`` replaces it with one derived from the content."""
    builder = _Builder(suite)
    tool = builder.ids.new("b2c-builder")
    builder.packages.append(
        Package(
            tool,
            "b2c-builder",
            SpdxNoAssertion(),
            version=__version__,
            files_analyzed=False,
            comment="the builder: wrote /init, the configuration files and the archives",
        )
    )
    described = []
    for release_file in files:
        file_id = builder.ids.new(release_file.role)
        described.append(file_id)
        builder.packages.append(
            Package(
                file_id,
                release_file.name,
                SpdxNoAssertion(),
                version=version,
                file_name=release_file.name,
                files_analyzed=False,
                checksums=_sha256(release_file.sha256),
                primary_package_purpose=_PURPOSE.get(release_file.role, PackagePurpose.FILE),
                built_date=datetime.fromtimestamp(epoch, UTC),
            )
        )
        builder.relate(tool, RelationshipType.GENERATES, file_id)
        for package in sorted(set(release_file.packages)):
            builder.relate(file_id, RelationshipType.CONTAINS, builder.deb(package))
    if trimmed is not None and described:
        _add_trimmed_podman(builder, described[0], trimmed)
    describes = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, i) for i in described]
    info = CreationInfo(
        spdx_version=SPDX_VERSION,
        spdx_id="SPDXRef-DOCUMENT",
        name=name,
        document_namespace=namespace or f"{NAMESPACE_BASE}/{name}-{_PLACEHOLDER}",
        creators=[Actor(ActorType.TOOL, f"b2c-builder-{__version__}")],
        created=datetime.fromtimestamp(epoch, UTC),
        creator_comment=f"Debian {suite}; the per-file detail is in {name}.manifest.json",
    )
    return Document(
        info, packages=builder.packages, relationships=describes + builder.relationships
    )


def _serialise(doc: Document) -> str:
    problems = validate_full_spdx_document(doc)
    if problems:
        raise SbomError(
            f"the SPDX document is not valid: {problems[0].validation_message}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint="a bug in b2c-builder's SBOM writer; please report it with --debug output",
        )
    out = io.StringIO()
    write_document_to_stream(doc, out, validate=False)
    return out.getvalue() + "\n"


def to_json(doc: Document) -> str:
    """The document as SPDX 2.3 JSON, validated by spdx-tools' own validator (SbomError
    otherwise), its namespace ``NAMESPACE_BASE/<name>-<SHA256 of the document written with
    a placeholder namespace>``."""
    name = doc.creation_info.name
    doc.creation_info.document_namespace = f"{NAMESPACE_BASE}/{name}-{_PLACEHOLDER}"
    draft = _serialise(doc)
    digest = hashlib.sha256(draft.encode()).hexdigest()
    doc.creation_info.document_namespace = f"{NAMESPACE_BASE}/{name}-{digest}"
    return _serialise(doc)
