"""``b2c-builder diff OLD NEW``: what changed between two images or two release folders.

An image is read the way the kernel reads it (cpio.iter_entries: newc archives, raw or
compressed with gzip, xz or zstd, found by magic). Its files are compared by path: added,
removed, resized (a regular file or symlink whose size changed) and modified (same size,
other contents, mode, owner, kind or device numbers). Modification times are ignored: they
are SOURCE_DATE_EPOCH, which a rebuild may change on purpose.

The package view comes from the SBOMs beside an image (``<stem>.spdx.json``, else
``<stem>.manifest.json``, ``<stem>`` being the image's name up to ``.cpio``): Debian
package versions changed, added and removed. The same kind of SBOM must be there for both
sides, else the view is marked unavailable.

Two release folders are compared file by file (size and SHA256), then image by image and
modules archive by modules archive, paired by architecture.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from b2c_builder.build.cpio import CpioEntry, iter_entries
from b2c_builder.digest import file_sha256
from b2c_builder.errors import B2CError

_IMAGE = re.compile(r"^initramfs\.linux_(?P<arch>[a-z0-9]+)\.cpio(\.(zst|xz|gz))?$")
_MODULES = re.compile(r"^modules-.+\.linux_(?P<arch>[a-z0-9]+)\.cpio(\.(zst|xz|gz))?$")


class DiffError(B2CError):
    """An input of ``diff`` cannot be read or is not an image or a release folder."""

    exit_code = 2


@dataclass(frozen=True)
class FileInfo:
    """One member of an image: its kind bits, permissions, owner, size and content hash."""

    mode: int
    uid: int
    gid: int
    rdev: tuple[int, int]
    size: int
    sha256: str

    @classmethod
    def of(cls, entry: CpioEntry) -> FileInfo:
        return cls(
            entry.mode,
            entry.uid,
            entry.gid,
            entry.rdev,
            len(entry.data),
            hashlib.sha256(entry.data).hexdigest(),
        )


@dataclass
class Changes:
    """Files added, removed, resized and modified, by path; package versions."""

    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    resized: list[dict[str, Any]] = field(default_factory=list)
    modified: list[dict[str, Any]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.added or self.removed or self.resized or self.modified)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "resized": self.resized,
            "modified": self.modified,
        }


@dataclass
class PackageChanges:
    """Debian package versions: ``available`` False (with ``reason``) when no SBOM pair."""

    available: bool
    source: str = ""  # "spdx.json" or "manifest.json"
    reason: str = ""
    changed: list[dict[str, str]] = field(default_factory=list)
    added: list[dict[str, str]] = field(default_factory=list)
    removed: list[dict[str, str]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.changed or self.added or self.removed)

    def as_dict(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "reason": self.reason}
        return {
            "available": True,
            "source": self.source,
            "changed": self.changed,
            "added": self.added,
            "removed": self.removed,
        }


@dataclass
class ImageDiff:
    """The comparison of two images (``label``: the image's name, or its role and arch)."""

    label: str
    old: str
    new: str
    files: Changes
    packages: PackageChanges

    def identical(self) -> bool:
        return self.files.empty() and (not self.packages.available or self.packages.empty())

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "old": self.old,
            "new": self.new,
            "files": self.files.as_dict(),
            "packages": self.packages.as_dict(),
        }


@dataclass
class Report:
    """The whole comparison: release files (folders only) and each pair of images."""

    old: str
    new: str
    release_files: Changes | None
    images: list[ImageDiff]

    def identical(self) -> bool:
        return (self.release_files is None or self.release_files.empty()) and all(
            image.identical() for image in self.images
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "identical": self.identical(),
            "release_files": self.release_files.as_dict() if self.release_files else None,
            "images": [image.as_dict() for image in self.images],
        }


# ---------------------------------------------------------------------------------- reading


def read_image(path: Path) -> dict[str, FileInfo]:
    """The members of the image at ``path`` by absolute path (a later member of the same
    name replaces an earlier one, as when the kernel unpacks). Raises DiffError when the
    file cannot be read or is not a (compressed) newc cpio archive."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DiffError(f"cannot read {path}: {exc.strerror}", hint="check the path") from exc
    if not data:
        raise DiffError(f"{path} is empty, not an image")
    try:
        return {"/" + e.name.lstrip("/"): FileInfo.of(e) for e in iter_entries(data)}
    except B2CError as exc:
        raise DiffError(
            f"{path} is not an image: {exc.message}",
            hint="pass initramfs images (newc cpio, raw or gzip/xz/zstd) or release folders",
        ) from exc


def _stem(image: Path) -> str:
    name = image.name
    return name[: name.index(".cpio")] if ".cpio" in name else image.stem


def packages_of(image: Path) -> tuple[str, dict[str, str]] | None:
    """(SBOM kind, {package: version}) from the SBOM beside ``image``: the packages the
    SPDX document says the image CONTAINS, else those of manifest.json's files. None when
    neither file is there. Raises DiffError for one that cannot be read."""
    stem = _stem(image)
    spdx_path = image.with_name(f"{stem}.spdx.json")
    manifest_path = image.with_name(f"{stem}.manifest.json")
    found = {}
    if spdx_path.is_file():
        found["spdx.json"] = _spdx_packages(spdx_path, image.name)
    if manifest_path.is_file():
        found["manifest.json"] = _manifest_packages(manifest_path)
    if not found:
        return None
    kind = next(iter(found))
    return kind, found[kind]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DiffError(f"cannot read {path}: {exc}", hint="the SBOM is damaged") from exc


BUILT_FROM_SOURCE = " (built from source)"


def _spdx_packages(path: Path, image_name: str) -> dict[str, str]:
    """The packages the image CONTAINS (the described package whose file name is
    ``image_name``, else the first described one): Debian binary packages by name, and a
    trimmed podman as ``<source version> (built from source)``. Build inputs are left out."""
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise DiffError(f"{path} is not an SPDX JSON document")
    packages = {str(p.get("SPDXID")): p for p in doc.get("packages", [])}
    relationships = doc.get("relationships", [])

    def related(element: str, kind: str) -> list[str]:
        return [
            str(r.get("relatedSpdxElement"))
            for r in relationships
            if r.get("spdxElementId") == element and r.get("relationshipType") == kind
        ]

    described = related("SPDXRef-DOCUMENT", "DESCRIBES")
    image = next(
        (i for i in described if packages.get(i, {}).get("packageFileName") == image_name),
        described[0] if described else None,
    )
    found: dict[str, str] = {}
    built: dict[str, str] = {}
    for element in related(str(image), "CONTAINS") if image else []:
        package = packages.get(element, {})
        name, version = str(package.get("name")), str(package.get("versionInfo", ""))
        deb = any(
            str(ref.get("referenceLocator", "")).startswith("pkg:deb/")
            for ref in package.get("externalRefs", [])
        )
        if deb:
            found[name] = version
        else:
            built[name] = version + BUILT_FROM_SOURCE
    return _merge(found, built)


def _merge(binaries: dict[str, str], built: dict[str, str]) -> dict[str, str]:
    """Debian's binary packages and the programs built from source by name; a program that
    shares its name with a binary package still in the image gets its own key."""
    merged = dict(binaries)
    for name, version in built.items():
        merged[name + BUILT_FROM_SOURCE if name in merged else name] = version
    return merged


def _manifest_packages(path: Path) -> dict[str, str]:
    """The package + version of manifest.json's files (the builder's own files left out),
    and a trimmed podman as ``<source version> (built from source)``."""
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise DiffError(f"{path} is not a manifest.json")
    found: dict[str, str] = {}
    for item in doc.get("files", []):
        name, version = item.get("package"), item.get("version")
        if name and version and name != "b2c-builder" and not str(name).startswith("src:"):
            found[str(name)] = str(version)
    podman = doc.get("podman")
    if isinstance(podman, dict) and podman.get("variant") == "trimmed":
        version = str(podman.get("source", {}).get("version", ""))
        return _merge(found, {"podman": version + BUILT_FROM_SOURCE})
    return found


# -------------------------------------------------------------------------------- comparing


def compare_files(old: dict[str, FileInfo], new: dict[str, FileInfo]) -> Changes:
    """Paths added, removed, resized and modified (see the module docstring), sorted."""
    changes = Changes()
    for path in sorted(old.keys() - new.keys()):
        changes.removed.append({"path": path, "size": old[path].size})
    for path in sorted(new.keys() - old.keys()):
        changes.added.append({"path": path, "size": new[path].size})
    for path in sorted(old.keys() & new.keys()):
        a, b = old[path], new[path]
        if a == b:
            continue
        if a.size != b.size:
            changes.resized.append({"path": path, "old_size": a.size, "new_size": b.size})
        else:
            changes.modified.append({"path": path, "what": _what(a, b)})
    return changes


def _what(a: FileInfo, b: FileInfo) -> str:
    parts = []
    if stat.S_IFMT(a.mode) != stat.S_IFMT(b.mode):
        parts.append("type")
    if stat.S_IMODE(a.mode) != stat.S_IMODE(b.mode):
        parts.append(f"mode {stat.S_IMODE(a.mode):04o} -> {stat.S_IMODE(b.mode):04o}")
    if (a.uid, a.gid) != (b.uid, b.gid):
        parts.append(f"owner {a.uid}:{a.gid} -> {b.uid}:{b.gid}")
    if a.rdev != b.rdev:
        parts.append("device numbers")
    if a.sha256 != b.sha256:
        parts.append("contents")
    return ", ".join(parts)


def compare_packages(old: Path, new: Path) -> PackageChanges:
    """The package versions of the SBOMs beside ``old`` and ``new`` (same kind on both)."""
    a, b = packages_of(old), packages_of(new)
    if a is None or b is None:
        missing = old if a is None else new
        return PackageChanges(
            False, reason=f"no {_stem(missing)}.spdx.json or .manifest.json beside {missing}"
        )
    if a[0] != b[0]:  # an spdx.json on one side only: the manifests, if both have one
        a2, b2 = _manifest_or_none(old), _manifest_or_none(new)
        if a2 is None or b2 is None:
            return PackageChanges(
                False, reason="one side has only an spdx.json, the other only a manifest.json"
            )
        a, b = ("manifest.json", a2), ("manifest.json", b2)
    result = PackageChanges(True, source=a[0])
    for name in sorted(a[1].keys() | b[1].keys()):
        before, after = a[1].get(name), b[1].get(name)
        if before is None and after is not None:
            result.added.append({"name": name, "version": after})
        elif after is None and before is not None:
            result.removed.append({"name": name, "version": before})
        elif before != after:
            result.changed.append({"name": name, "old": str(before), "new": str(after)})
    return result


def _manifest_or_none(image: Path) -> dict[str, str] | None:
    path = image.with_name(f"{_stem(image)}.manifest.json")
    return _manifest_packages(path) if path.is_file() else None


def diff_images(old: Path, new: Path, label: str = "") -> ImageDiff:
    """Compare two images and their SBOMs."""
    files = compare_files(read_image(old), read_image(new))
    return ImageDiff(label or new.name, str(old), str(new), files, compare_packages(old, new))


def _release_files(folder: Path) -> dict[str, tuple[int, str]]:
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            found[path.name] = (path.stat().st_size, file_sha256(path))
    return found


def _by_arch(folder: Path, pattern: re.Pattern[str]) -> dict[str, Path]:
    return {
        match.group("arch"): path
        for path in sorted(folder.iterdir())
        if (match := pattern.match(path.name))
    }


def diff_folders(old: Path, new: Path) -> Report:
    """Compare two release folders: their files, then images and modules by architecture.
    Raises DiffError when a folder holds no image."""
    a, b = _release_files(old), _release_files(new)
    files = Changes()
    for name in sorted(a.keys() - b.keys()):
        files.removed.append({"path": name, "size": a[name][0]})
    for name in sorted(b.keys() - a.keys()):
        files.added.append({"path": name, "size": b[name][0]})
    for name in sorted(a.keys() & b.keys()):
        if a[name][0] != b[name][0]:
            files.resized.append({"path": name, "old_size": a[name][0], "new_size": b[name][0]})
        elif a[name][1] != b[name][1]:
            files.modified.append({"path": name, "what": "contents"})
    images = []
    for what, pattern in (("image", _IMAGE), ("modules", _MODULES)):
        old_by_arch, new_by_arch = _by_arch(old, pattern), _by_arch(new, pattern)
        if what == "image":
            for folder, found in ((old, old_by_arch), (new, new_by_arch)):
                if not found:
                    raise DiffError(
                        f"{folder} holds no initramfs.linux_<arch>.cpio* image",
                        hint="pass two release folders (releases/<version>) or two images",
                    )
        for arch in sorted(old_by_arch.keys() & new_by_arch.keys()):
            old_path, new_path = old_by_arch[arch], new_by_arch[arch]
            if what == "image":
                images.append(diff_images(old_path, new_path, f"{arch} image"))
            else:
                changes = compare_files(read_image(old_path), read_image(new_path))
                unused = PackageChanges(False, reason="see the image's SBOM")
                label = f"{arch} modules"
                images.append(ImageDiff(label, str(old_path), str(new_path), changes, unused))
    return Report(str(old), str(new), files, images)


def diff(old: Path, new: Path) -> Report:
    """Compare two images or two release folders. Raises DiffError for anything else (a
    missing path, an image against a folder, an unreadable image)."""
    for path in (old, new):
        if not path.exists():
            raise DiffError(f"{path} does not exist", hint="pass two images or two folders")
    if old.is_dir() != new.is_dir():
        raise DiffError(
            f"cannot compare {'a folder' if old.is_dir() else 'an image'} ({old}) with "
            f"{'a folder' if new.is_dir() else 'an image'} ({new})",
            hint="pass two images or two release folders",
        )
    if old.is_dir():
        return diff_folders(old, new)
    return Report(str(old), str(new), None, [diff_images(old, new)])


# ------------------------------------------------------------------------------- rendering


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 2**20:.2f} MiB"


def _delta(old: int, new: int) -> str:
    sign = "+" if new >= old else "-"
    return f"{sign}{_size(abs(new - old))}"


def _changes_lines(changes: Changes) -> list[str]:
    lines = [f"  + {c['path']} ({_size(c['size'])})" for c in changes.added]
    lines += [f"  - {c['path']} ({_size(c['size'])})" for c in changes.removed]
    lines += [
        f"  ~ {c['path']} {_size(c['old_size'])} -> {_size(c['new_size'])} "
        f"({_delta(c['old_size'], c['new_size'])}; {c['old_size']} -> {c['new_size']} bytes)"
        for c in changes.resized
    ]
    lines += [f"  * {c['path']} (same size: {c['what']})" for c in changes.modified]
    return lines


def render_text(report: Report) -> str:
    """The human-readable report: ``+`` added, ``-`` removed, ``~`` resized, ``*`` changed
    at the same size; package versions ``old -> new``."""
    lines = [f"--- {report.old}", f"+++ {report.new}"]
    if report.release_files is not None:
        lines.append("release files:")
        lines += _changes_lines(report.release_files) or ["  (no change)"]
    for image in report.images:
        lines.append(f"{image.label}: files:")
        lines += _changes_lines(image.files) or ["  (no change)"]
        if image.label.endswith("modules"):
            continue
        packages = image.packages
        if not packages.available:
            lines.append(f"{image.label}: packages: unavailable ({packages.reason})")
            continue
        lines.append(f"{image.label}: packages (from {packages.source}):")
        lines += [f"  ~ {p['name']} {p['old']} -> {p['new']}" for p in packages.changed]
        lines += [f"  + {p['name']} {p['version']}" for p in packages.added]
        lines += [f"  - {p['name']} {p['version']}" for p in packages.removed]
        if packages.empty():
            lines.append("  (no change)")
    lines.append("identical" if report.identical() else "different")
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    """The report as JSON (see Report.as_dict), for machines."""
    return json.dumps(report.as_dict(), indent=1) + "\n"
