"""Which kernel, which modules: the release a kernel image belongs to, and the initrds for it.

``kernel_release(path)`` reads the release string (``uname -r``) from a kernel image without
running it: the x86 boot protocol's setup header points at it (Documentation/arch/x86/boot.rst,
``kernel_version`` at offset 0x20E); an s390x image's parmarea points at it too
(arch/s390/include/asm/setup.h: ``struct parmarea`` at 0x10400, its ``kernel_version`` field
at 0x10428, big-endian); other images (arm64/riscv64 ``Image``, ppc64el ``vmlinux``,
gzip-compressed or EFI zboot ``vmlinuz``) carry the ``Linux version <release> ...`` banner
in their payload.

``default_boot_files()`` picks the newest kernel of ``releases/`` and the modules archive whose
``usr/lib/modules/<release>`` matches it; ``modules_initrd()`` builds (and caches, keyed by the
tree's contents) a modules archive from a developer's ``lib/modules/<release>`` folder.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import zstandard
from debian.debian_support import Version

from b2c_builder import __version__
from b2c_builder.build import compress, kmod
from b2c_builder.build.cpio import iter_entries, write_cpio
from b2c_builder.build.rootfs import Rootfs
from b2c_builder.config import Arch, Compression
from b2c_builder.digest import file_sha256
from b2c_builder.errors import B2CError, ConfigError, ResolveError
from b2c_builder.log import log

# x86 boot protocol (Documentation/arch/x86/boot.rst): "HdrS" at 0x202, the protocol version
# at 0x206 and, since 2.00, kernel_version at 0x20E: the string's offset minus 0x200.
_X86_HDRS_OFFSET = 0x202
_X86_VERSION_PTR = 0x20E
# EFI zboot images (drivers/firmware/efi/libstub/zboot-header.S): "MZ", then "zimg", the
# payload's offset and size as little-endian u32 at 8 and 12, the compression's name at 24.
_ZBOOT_MAGIC = b"zimg"
# s390x: the parmarea's kernel_version, the file offset of "<release> (<builder>) <version>".
_S390_VERSION_PTR = 0x10428
_BANNER_RE = re.compile(rb"Linux version (\S+) \(")
_RELEASE_RE = re.compile(r"^[0-9][0-9A-Za-z.+_~-]*$")
MODULES_PREFIX = "usr/lib/modules/"


def kernel_release(path: Path) -> str:
    """The release (``uname -r``) of the kernel image at ``path``, e.g. ``6.12.57+deb13-amd64``.

    Raises ConfigError when the file cannot be read or carries no recognisable version.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--kernel {path}: {exc.strerror}", hint="check the path") from exc
    release = _x86_release(data) or _banner_release(data) or _s390_release(data)
    if release is None:
        raise ConfigError(
            f"--kernel {path}: no Linux version found in this file",
            hint="pass a kernel image (bzImage, Image, vmlinuz), or --initrd explicitly",
        )
    return release


def _x86_release(data: bytes) -> str | None:
    if data[_X86_HDRS_OFFSET : _X86_HDRS_OFFSET + 4] != b"HdrS" or len(data) < 0x210:
        return None
    pointer = int.from_bytes(data[_X86_VERSION_PTR : _X86_VERSION_PTR + 2], "little")
    start = pointer + 0x200
    if pointer == 0 or start >= len(data):
        return None
    end = data.find(b"\0", start, start + 512)
    words = data[start : end if end > 0 else start + 512].split()
    release = words[0].decode("ascii", "replace") if words else ""
    return release if _RELEASE_RE.match(release) else None


def _s390_release(data: bytes) -> str | None:
    """The release an s390x image's parmarea points at, when the file is one (its version
    string is in the decompressor: the banner is in the compressed payload)."""
    if len(data) < _S390_VERSION_PTR + 8:
        return None
    start = int.from_bytes(data[_S390_VERSION_PTR : _S390_VERSION_PTR + 8], "big")
    if start == 0 or start >= len(data):
        return None
    end = data.find(b" (", start, start + 256)
    if end < 0:
        return None
    release = data[start:end].decode("ascii", "replace")
    return release if _RELEASE_RE.match(release) else None


def _payloads(data: bytes) -> list[bytes]:
    """The image itself, then what it may carry compressed (gzip, EFI zboot gzip/zstd)."""
    found = [data]
    if data.startswith(b"\x1f\x8b"):
        with contextlib.suppress(OSError, EOFError, zlib.error):
            found.append(gzip.decompress(data))
    if data.startswith(b"MZ") and data[4:8] == _ZBOOT_MAGIC:
        offset = int.from_bytes(data[8:12], "little")
        size = int.from_bytes(data[12:16], "little")
        method = data[24:32].rstrip(b"\0")
        payload = data[offset : offset + size]
        try:
            if method == b"gzip":
                found.append(gzip.decompress(payload))
            elif method == b"zstd":
                found.append(zstandard.ZstdDecompressor().decompressobj().decompress(payload))
        except (OSError, EOFError, zlib.error, zstandard.ZstdError):
            pass
    return found


def _banner_release(data: bytes) -> str | None:
    for payload in _payloads(data):
        if match := _BANNER_RE.search(payload):
            release = match.group(1).decode("ascii", "replace")
            if _RELEASE_RE.match(release):
                return release
    return None


def modules_release(path: Path) -> str | None:
    """The release whose modules the (possibly compressed) cpio at ``path`` carries, or None.

    Reads the archive's entries up to the first ``usr/lib/modules/<release>/`` path.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        for entry in iter_entries(data):
            name = entry.name.lstrip("/").removeprefix("./")
            if name.startswith(MODULES_PREFIX):
                release = name[len(MODULES_PREFIX) :].split("/", 1)[0]
                if release:
                    return release
    except B2CError:
        return None
    return None


@dataclass(frozen=True)
class BootFiles:
    """A kernel and the initrds to boot it with (the image, then the modules archive)."""

    kernel: Path
    initrds: tuple[Path, ...]
    release: str


def release_folder(releases: Path, arch: Arch) -> Path:
    """Where ``run`` looks for ``arch``'s boot files under ``releases``: ``releases`` itself
    when it holds an image for ``arch`` (``make build``), else its newest (by modification
    time) ``<version>/`` folder that does (``make release``), else ``releases`` (whose
    lookups then fail naming it)."""
    pattern = f"initramfs.linux_{arch}.cpio*"
    if _release_files(releases, pattern):
        return releases
    folders = [d for d in releases.glob("*/") if d.is_dir() and _release_files(d, pattern)]
    if not folders:
        return releases
    return max(folders, key=lambda d: (d.stat().st_mtime_ns, d.name))


def _release_files(releases: Path, pattern: str) -> list[Path]:
    return sorted(p for p in releases.glob(pattern) if p.suffix not in (".sha256", ".json"))


def default_kernel(releases: Path, arch: Arch) -> Path:
    """The newest ``linux-<release>.linux_<arch>`` in ``releases`` (Debian version order).

    Raises ConfigError naming ``make release`` when there is none.
    """
    kernels = _release_files(releases, f"linux-*.linux_{arch}")
    if not kernels:
        raise ConfigError(
            f"no kernel for {arch} in {releases}/ (linux-<release>.linux_{arch})",
            hint=f"pass --kernel, or build one with `make release` or `make build ARCH={arch}`",
        )
    prefix, suffix = "linux-", f".linux_{arch}"
    return max(kernels, key=lambda p: Version(p.name[len(prefix) : -len(suffix)]))


def default_image(releases: Path, arch: Arch) -> Path:
    """The release image ``initramfs.linux_<arch>.cpio[.zst|.xz|.gz]`` (the newest file)."""
    images = _release_files(releases, f"initramfs.linux_{arch}.cpio*")
    if not images:
        raise ConfigError(
            f"no image for {arch} in {releases}/ (initramfs.linux_{arch}.cpio*)",
            hint=f"pass --initrd, or build one with `make release` or `make build ARCH={arch}`",
        )
    return max(images, key=lambda p: p.stat().st_mtime_ns)


def default_modules(releases: Path, arch: Arch, release: str) -> Path:
    """The modules archive of ``releases`` whose contents are for kernel ``release``."""
    candidates = _release_files(releases, f"modules-*.linux_{arch}.cpio*")
    named = [p for p in candidates if p.name.startswith(f"modules-{release}.")]
    for path in named + [p for p in candidates if p not in named]:
        if modules_release(path) == release:
            return path
    found = ", ".join(p.name for p in candidates) or "none"
    raise ConfigError(
        f"no modules archive for kernel {release} in {releases}/ (found: {found})",
        hint="pass --modules-dir lib/modules/<release> (make modules_install writes one), "
        "or --initrd explicitly",
    )


def default_boot_files(
    releases: Path, arch: Arch, kernel: Path | None, modules_initrd: Path | None
) -> BootFiles:
    """The kernel (given or the newest in ``releases``) and the image + its modules archive.

    ``modules_initrd`` (built from --modules-dir) replaces the search for a modules archive.
    """
    kernel = kernel if kernel is not None else default_kernel(releases, arch)
    release = kernel_release(kernel)
    image = default_image(releases, arch)
    modules = modules_initrd or default_modules(releases, arch, release)
    return BootFiles(kernel, (image, modules), release)


# --- a modules archive from a developer's tree -----------------------------------------


def tree_digest(root: Path) -> str:
    """SHA-256 over every file under ``root``: relative path, symlink target or contents.

    Walked in sorted order, so the digest depends on the tree's contents only.
    """
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix().encode()
            if path.is_symlink():
                digest.update(b"L" + rel + b"\0" + os.readlink(path).encode() + b"\0")
                continue
            digest.update(b"F" + rel + b"\0" + str(path.stat().st_size).encode() + b"\0")
            with path.open("rb") as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def modules_initrd(
    modules_dir: Path, arch: Arch, cache_dir: Path, *, release: str | None = None
) -> Path:
    """An uncompressed modules archive for ``modules_dir`` (a ``lib/modules/<release>`` tree).

    Holds the closure of kmod.DEFAULT_MODULES found in the tree, under usr/lib/modules/<release>,
    as ``b2c-builder build --modules-dir`` writes it. Cached under ``cache_dir/modules/`` by
    the tree's content digest, so the second boot of the same tree builds nothing.
    Raises ConfigError/ResolveError for a missing tree or one for another kernel ``release``.
    """
    if not modules_dir.is_dir():
        raise ConfigError(
            f"--modules-dir {modules_dir} is not a directory",
            hint="point it at lib/modules/<release>, as `make modules_install "
            "INSTALL_MOD_PATH=DIR` writes it",
        )
    tree_root = modules_dir.resolve()
    if release is not None and tree_root.name != release:
        nested = tree_root / "lib/modules" / release
        if nested.is_dir():  # INSTALL_MOD_PATH itself was given
            tree_root = nested
        else:
            raise ConfigError(
                f"--modules-dir {modules_dir} is for kernel {tree_root.name!r}, "
                f"but the kernel is {release}",
                hint=f"point it at lib/modules/{release}",
            )
    schedule = [f"{name} {when}" for name, when in kmod.DEFAULT_MODULES.items()]
    key = hashlib.sha256(
        "\0".join([__version__, str(arch), *schedule, tree_digest(tree_root)]).encode()
    ).hexdigest()
    cached = cache_dir / "modules" / f"modules-{tree_root.name}-{key[:16]}.cpio"
    if cached.is_file():
        log.info("modules archive for %s: %s (cached)", tree_root, cached)
        return cached
    tree = kmod.ModuleTree.from_directory(tree_root)
    manifest = Rootfs()
    kmod.add_modules(manifest, tree, list(kmod.DEFAULT_MODULES), required=())
    _write_cached(manifest, cached)
    log.info("modules archive for %s: %s (%d entries)", tree_root, cached, len(manifest))
    return cached


def _write_cached(manifest: Rootfs, cached: Path) -> None:
    """Write ``manifest`` as a newc archive at ``cached``, whole or not at all."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + f".{os.getpid()}.part")
    try:
        with partial.open("wb") as out:
            write_cpio(manifest, out, source_date_epoch=0)
        os.replace(partial, cached)
    finally:
        partial.unlink(missing_ok=True)


# Under TCG the kernel copies each byte of an initrd into the initramfs before /init starts,
# on the one vCPU the boot runs on: the release's modules archive holds 9.1 MiB of modules
# (NICs, disk controllers, ext4, 9p...), of which a registry boot of run loads 0.8 MiB
# (virtio_net and overlay). Cut to those, "Freeing initrd memory" came 15 ms sooner and the
# container's first output 30-70 ms sooner (8 interleaved boots each, TCG).
def boot_modules_initrd(archive: Path, needs: kmod.BootNeeds, cache_dir: Path) -> Path:
    """The uncompressed modules archive ``archive`` cut to what one boot can load (see
    kmod.BootNeeds and kmod.archive_subset), cached under ``cache_dir/initrd/`` by the
    SHA-256 of ``archive`` and ``needs``; ``archive`` itself when it is not the modules
    archive of one kernel. Raises OSError if it cannot be read."""
    key = hashlib.sha256(
        "\0".join([__version__, file_sha256(archive), needs.key()]).encode()
    ).hexdigest()
    cached = cache_dir / "initrd" / f"modules-{key}.cpio"
    if cached.is_file():
        return cached
    subset = kmod.archive_subset(iter_entries(archive.read_bytes()), needs)
    if subset is None:
        log.debug("%s is not a modules archive of one kernel: booted whole", archive)
        return archive
    manifest, kept = subset
    _write_cached(manifest, cached)
    log.info("modules for this boot: %s (%s)", cached, ", ".join(sorted(kept)) or "none")
    return cached


def uncompressed_initrd(path: Path, cache_dir: Path) -> Path:
    """``path`` itself when it is an uncompressed cpio, else its decompressed copy, cached
    under ``cache_dir/initrd/`` by the SHA-256 of the compressed file.

    Under TCG the kernel unpacks a zstd image in about a second and a half more than it
    copies the same archive uncompressed (measured: "Freeing initrd memory" at 2.5-2.7 s
    instead of 3.7-5.5 s, b2c-builder run, 2 boots each), so ``run`` hands QEMU plain cpio.
    Raises ConfigError for a missing file, ResolveError for a corrupt stream.
    """
    if not path.is_file():
        raise ConfigError(f"--initrd {path} is not a file", hint="check the path")
    with path.open("rb") as src:
        head = src.read(8)
    if compress.sniff(head) in (None, Compression.none):
        return path
    digest = file_sha256(path)
    cached = cache_dir / "initrd" / f"{digest}.cpio"
    if cached.is_file():
        return cached
    try:
        plain = compress.decompress(path.read_bytes())
    except B2CError as exc:
        raise ResolveError(f"{path}: {exc.message}", hint="pass a valid initrd") from exc
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.part")
    try:
        partial.write_bytes(plain)
        os.replace(partial, cached)
    finally:
        partial.unlink(missing_ok=True)
    return cached
