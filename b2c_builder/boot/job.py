"""The job of ``b2c-builder run``: local images, exact commands and shared folders, delivered to
the guest in one extra (uncompressed newc) initrd instead of the kernel command line.

The kernel command line cannot carry a ``"``, a newline, or more than COMMAND_LINE_SIZE bytes;
the job can. The guest side is init/job.sh, which documents the layout under /etc/b2c/job:
``cmdline`` (b2c options parsed after /proc/cmdline), ``container/N/<i>`` (one podman create
argument a file, byte for byte), ``share/N/{tag,path}`` (9p shares), ``image/N...``
(OCI layouts and archives, referred to by the containers' arguments with podman's transports)
and ``nonce`` (the console contract's per-boot tag, read and deleted by the init first).

Image references use podman's transport syntax (containers-transports(5)): ``docker://REF``
(pulled by the guest), ``oci:DIR[:REF]``, ``oci-archive:FILE[:REF]``, ``docker-archive:FILE``
and ``containers-storage:NAME`` (exported by the host's skopeo or podman).
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO

import zstandard

from b2c_builder.build.cpio import write_cpio
from b2c_builder.build.rootfs import Rootfs
from b2c_builder.errors import ConfigError, ToolError
from b2c_builder.guest import options
from b2c_builder.log import log
from b2c_builder.run import run

JOB_DIR = "etc/b2c/job"  # in the guest, /etc/b2c/job (B2C_JOB in init/common.sh)
ARGV_DIR_OPTION = "--b2c-argv-dir="  # init/job.sh b2c_spec_argv_dir
MiB = 2**20


class Transport(StrEnum):
    """The podman transports ``--image`` accepts (containers-transports(5))."""

    docker = "docker"
    oci = "oci"
    oci_archive = "oci-archive"
    docker_archive = "docker-archive"
    containers_storage = "containers-storage"

    @property
    def local(self) -> bool:
        """True when the image is on this host and reaches the guest in the job."""
        return self is not Transport.docker


@dataclass(frozen=True)
class ImageRef:
    """One ``--image`` value: a transport, a location (path, name or registry reference) and,
    for oci layouts and archives, the optional reference inside them."""

    transport: Transport
    location: str
    reference: str = ""

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse ``TRANSPORT:LOCATION[:REF]``; local paths are checked to exist.

        As containers/image does, the path ends at the first ``:`` after the transport.
        Raises ConfigError naming the accepted transports.
        """
        transport_name, sep, rest = text.partition(":")
        try:
            transport = Transport(transport_name)
        except ValueError:
            transport = None
        if not sep or transport is None or not rest:
            accepted = ", ".join(f"{t}:" for t in Transport)
            raise ConfigError(
                f"--image {text!r}: expected TRANSPORT:LOCATION with a transport among {accepted}",
                hint="e.g. --image oci-archive:selftests.tar or --image docker://host:5000/img",
            )
        if transport is Transport.docker:
            if not rest.startswith("//") or len(rest) <= 2:
                raise ConfigError(
                    f"--image {text!r}: a registry image is docker://HOST/NAME[:TAG]",
                    hint="e.g. --image docker://10.0.2.2:5000/test:latest",
                )
            return cls(transport, rest[2:])
        if transport is Transport.containers_storage:
            return cls(transport, rest)
        path, _, reference = rest.partition(":")
        if transport is Transport.docker_archive and reference:
            raise ConfigError(
                f"--image {text!r}: docker-archive takes a file only",
                hint="pick the image inside with skopeo, or use oci-archive:FILE:REF",
            )
        expected_dir = transport is Transport.oci
        ok = Path(path).is_dir() if expected_dir else Path(path).is_file()
        if not ok:
            what = "an OCI layout directory" if expected_dir else "an archive file"
            raise ConfigError(
                f"--image {text!r}: {path} is not {what}", hint="check the path of the image"
            )
        return cls(transport, path, reference)

    def __str__(self) -> str:
        if self.transport is Transport.docker:
            return f"docker://{self.location}"
        ref = f":{self.reference}" if self.reference else ""
        return f"{self.transport}:{self.location}{ref}"


@dataclass(frozen=True)
class Share:
    """``--share HOST_DIR[:GUEST_DIR]``: a host folder shared read-write over 9p."""

    host: Path
    guest: str

    @classmethod
    def parse(cls, text: str) -> Share:
        """GUEST_DIR defaults to HOST_DIR's absolute path; it must be absolute and hold no
        ``:`` or ``,`` (podman's -v syntax). Raises ConfigError."""
        host_text, guest = text, ""
        left, sep, right = text.rpartition(":")
        if sep and left and right.startswith("/"):
            host_text, guest = left, right
        host = Path(host_text).resolve()
        if not host.is_dir():
            relative = sep and left and right and not right.startswith("/")
            raise ConfigError(
                f"--share {text!r}: {host} is not a directory",
                hint="GUEST_DIR must be absolute: HOST_DIR:/guest/dir"
                if relative and Path(left).is_dir()
                else "check the path",
            )
        guest = os.path.normpath(guest or str(host))
        if not guest.startswith("/") or guest == "/" or any(c in guest for c in ":,\n\0"):
            raise ConfigError(
                f"--share {text!r}: the guest folder {guest!r} must be an absolute path "
                "other than / without ':', ',' or a newline",
                hint="pass HOST_DIR:/some/guest/dir",
            )
        if (problem := _guest_folder_problem(guest)) is not None:
            raise ConfigError(
                f"--share {text!r}: the guest folder {guest} {problem}",
                hint=f"pass HOST_DIR:/some/guest/dir, e.g. {host_text}:/mnt/{host.name or 'share'}",
            )
        return cls(host, guest)


# The guest's own trees, which /init, podman, crun and their libraries live in or use: a
# share mounted on one of them, inside one or on a folder holding one (/var holds podman's
# storage) hides what the image put there. /proc and /sys hold no folder to mount on at all.
# A kernel tree under /usr/src (a usual host path, shared at that path by default) is fine:
# the image has no /usr/src.
GUEST_SYSTEM_FOLDERS = (
    "/bin", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr",
    "/var/lib/containers",
)  # fmt: skip
GUEST_FREE_FOLDERS = ("/usr/src",)


def _guest_folder_problem(guest: str) -> str | None:
    """Why a share cannot be mounted on the absolute, normalised guest folder ``guest``
    (see GUEST_SYSTEM_FOLDERS), else None."""
    if any(guest == free or guest.startswith(free + "/") for free in GUEST_FREE_FOLDERS):
        return None
    for folder in GUEST_SYSTEM_FOLDERS:
        if folder == guest or folder.startswith(guest + "/"):
            return f"would hide the guest's own {folder}"
        if guest.startswith(folder + "/"):
            return f"is inside the guest's own {folder}, which the boot needs as the image made it"
    return None


@dataclass(frozen=True)
class Container:
    """One pipeline container of the job: its podman create arguments, byte for byte."""

    argv: tuple[str, ...]
    title: str


@dataclass(frozen=True)
class Delivery:
    """A local image as the guest sees it: the reference its container uses, and the files."""

    guest_ref: str
    files: tuple[tuple[str, Path], ...]  # (path under the job's image/N, host file)

    @property
    def size(self) -> int:
        """Bytes the image adds to the job (and to the guest's RAM until it is unpacked)."""
        return sum(path.stat().st_size for _, path in self.files)


@dataclass
class Job:
    """Everything ``b2c-builder run`` hands to the guest beside the kernel command line."""

    cmdline: list[str] = field(default_factory=list)  # b2c parameters, already quoted
    containers: list[Container] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)
    images: list[Delivery] = field(default_factory=list)
    # The per-boot nonce of the console contract (console.py), "" for none.
    nonce: str = ""

    def manifest(self) -> Rootfs:
        """The job's files, under etc/b2c/job (see init/job.sh for the layout)."""
        tree = Rootfs()
        params = list(self.cmdline)
        for n, container in enumerate(self.containers, 1):
            base = f"{JOB_DIR}/container/{n}"
            for i, arg in enumerate(container.argv):
                tree.add_file(f"{base}/{i}", arg.encode(), 0o644)
            tree.add_file(f"{base}/title", container.title.encode() + b"\n", 0o644)
            params.append(options.compose("b2c.container", f"{ARGV_DIR_OPTION}/{base}"))
        for n, share in enumerate(self.shares, 1):
            tree.add_file(f"{JOB_DIR}/share/{n}/tag", share_tag(n).encode(), 0o644)
            tree.add_file(f"{JOB_DIR}/share/{n}/path", share.guest.encode(), 0o644)
        for n, image in enumerate(self.images, 1):
            for rel, path in image.files:
                tree.add_file(f"{JOB_DIR}/image/{n}/{rel}", path.read_bytes(), 0o644)
        tree.add_file(f"{JOB_DIR}/cmdline", (" ".join(params) + "\n").encode(), 0o644)
        if self.nonce:
            tree.add_file(f"{JOB_DIR}/nonce", self.nonce.encode() + b"\n", 0o600)
        return tree

    def write(self, path: Path) -> Path:
        """Write the job as an uncompressed newc archive at ``path`` (the kernel copies it)."""
        with path.open("wb") as out:
            write_cpio(self.manifest(), out, source_date_epoch=0)
        return path

    @property
    def image_bytes(self) -> int:
        return sum(image.size for image in self.images)


def share_tag(n: int) -> str:
    """The 9p mount tag of the n-th share (QEMU's -virtfs mount_tag=, 31 bytes at most)."""
    return f"b2c_share{n}"


# --- local images ----------------------------------------------------------------------


def _layout_files(root: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_symlink():
                raise ConfigError(
                    f"the OCI layout {root} holds a symbolic link {path}",
                    hint="copy the image to a plain layout: skopeo copy oci:SRC oci:DEST",
                )
            yield path.relative_to(root).as_posix(), path


def deliver(ref: ImageRef, n: int, workdir: Path, *, plain_limit: int = 0) -> Delivery:
    """How the local image ``ref`` reaches the guest as the job's image ``n``.

    containers-storage images are exported with the host's skopeo (else podman) into
    ``workdir`` as an oci-archive. Compressed layers go uncompressed (plain_layout) when the
    image's layers unpack to at most ``plain_limit`` bytes, else gzip ones as zstd
    (zstd_layout). An OCI image given without a reference is named ``LOCAL_IMAGE_NAME`` +
    ``n`` in the guest (named_index). Raises ToolError naming the missing tool, ConfigError
    for a layout that cannot be delivered.
    """
    guest_base = f"/{JOB_DIR}/image/{n}"
    ref_suffix = f":{ref.reference}" if ref.reference else ""
    if ref.transport is Transport.docker_archive:
        # Read in place by podman when uncompressed (as `docker save` writes it).
        return Delivery(
            f"docker-archive:{guest_base}/image.tar", (("image.tar", Path(ref.location)),)
        )
    if ref.transport is Transport.oci:
        layout = Path(ref.location)
    elif ref.transport is Transport.oci_archive:
        # podman would untar an oci-archive into /var/tmp first: the guest's RAM would hold
        # the image twice. Deliver its layout instead.
        layout = extract_oci_archive(Path(ref.location), workdir / f"image-{n}")
    elif ref.transport is Transport.containers_storage:
        layout = workdir / f"image-{n}"
        export_from_storage(ref.location, layout)
    else:
        raise ValueError(f"{ref} is not a local image")
    if not (layout / "index.json").is_file():
        raise ConfigError(
            f"--image {ref}: no index.json: not an OCI layout",
            hint="export one with: skopeo copy IMAGE oci:DIR:TAG",
        )
    plain = plain_layout(layout, ref.reference, workdir / f"image-{n}-plain", plain_limit)
    if plain is not None:
        layout = plain
    else:
        layout = zstd_layout(layout, ref.reference, workdir / f"image-{n}-zstd")
    files = tuple(_layout_files(layout))
    if not ref.reference:
        name = f"{LOCAL_IMAGE_NAME}{n}:latest"
        index = named_index(layout / "index.json", name, workdir / f"image-{n}-index.json")
        if index is not None:
            files = tuple((r, index if r == "index.json" else p) for r, p in files)
            ref_suffix = f":{name}"
    return Delivery(
        f"oci:{guest_base}/layout{ref_suffix}", tuple((f"layout/{r}", p) for r, p in files)
    )


# The name the guest's podman gives the job's image N when the user named none: podman
# stores an image pulled from an OCI layout without a reference under its id only, and on a
# cache disk the clean-up's `podman image prune` then removed it, so every boot unpacked its
# layers again. Named, it stays until another image takes the name.
LOCAL_IMAGE_NAME = "localhost/b2c-run/image-"

# The annotation that names an image in an OCI layout's index.json (image-spec,
# annotations.md); podman's oci: transport selects an image by it (oci:DIR:NAME).
REF_NAME = "org.opencontainers.image.ref.name"


def named_index(index: Path, name: str, dest: Path) -> Path | None:
    """Write ``index`` (an OCI layout's index.json) to ``dest`` with its one manifest
    descriptor annotated as ``name`` (REF_NAME, replacing any name it had) and return
    ``dest``; None, writing nothing, when the index has not exactly one manifest (a
    reference must then select the image). Raises ConfigError for an index that is not
    JSON."""
    try:
        document = json.loads(index.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{index}: not an OCI index: {exc}", hint="check the layout: skopeo inspect oci:DIR"
        ) from exc
    manifests = document.get("manifests") if isinstance(document, dict) else None
    if not isinstance(manifests, list) or len(manifests) != 1:
        return None
    (descriptor,) = manifests
    if not isinstance(descriptor, dict):
        return None
    annotations = descriptor.get("annotations") or {}
    descriptor["annotations"] = {**annotations, REF_NAME: name}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(document, separators=(",", ":")) + "\n")
    return dest


# The media types of gzip-compressed layers: OCI's (image-spec, media-types.md) and Docker's
# (image manifest v2, schema 2).
GZIP_LAYERS = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)


# skopeo copy's options that write every layer zstd-compressed (see zstd_layout).
ZSTD_LAYERS = ("--dest-compress-format", "zstd", "--dest-compress")


def gzip_layers(layout: Path) -> int:
    """How many gzip-compressed layers the images of the OCI layout ``layout`` have: walks
    index.json's manifests, nested indexes included (image-spec image-layout.md). A blob
    that is missing or not JSON counts for nothing (podman reports it in the guest)."""
    count = 0
    seen: set[str] = set()
    pending = [layout / "index.json"]
    while pending:
        try:
            document = json.loads(pending.pop().read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(document, dict):
            continue
        layers = document.get("layers") or ()
        count += sum(isinstance(x, dict) and x.get("mediaType") in GZIP_LAYERS for x in layers)
        for manifest in document.get("manifests") or ():
            digest = manifest.get("digest", "") if isinstance(manifest, dict) else ""
            blob = blob_path(layout, digest)
            if blob is not None and digest not in seen:
                seen.add(digest)
                pending.append(blob)
    return count


def blob_path(layout: Path, digest: object) -> Path | None:
    """Where the OCI layout ``layout`` keeps the blob of ``digest`` ("ALGORITHM:ENCODED",
    image-spec image-layout.md), or None when the digest is not of that form (letters and
    digits only on each side: it never leaves blobs/)."""
    algorithm, _, encoded = str(digest).partition(":")
    if not (algorithm.isalnum() and encoded.isalnum()):
        return None
    return layout / "blobs" / algorithm / encoded


# The media types of compressed layers (image-spec media-types.md, and Docker's), which
# plain_layout stores uncompressed.
COMPRESSED_LAYERS = GZIP_LAYERS | {
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
}
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_IMAGE_MANIFESTS = frozenset(
    {_OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"}
)


def plain_layout(layout: Path, reference: str, dest: Path, limit: int) -> Path | None:
    """The image of ``layout`` (``reference`` selects it) in ``dest`` with every layer stored
    uncompressed, when it is one image manifest (not an index: the copy would pick the
    host's platform) whose layers unpack to at most ``limit`` bytes; the host's
    skopeo decompresses them (``copy --dest-decompress`` into a dir: image, then ``copy
    --dest-oci-accept-uncompressed-layers`` into ``dest``). None, writing nothing, when one
    of these does not hold, there is no layer to decompress, or skopeo is missing or fails
    (zstd_layout then takes the image, and says why it cannot read it).

    Podman in the guest then decompresses nothing: a 16 MiB gzip layer (38 MiB of files)
    came to the container's first output in 6.56 s instead of 6.92 s as zstd (TCG, 4 boots
    each). The cost is RAM: the job holds the layers uncompressed, hence the limit (run's:
    launch.plain_limit). Diff IDs and config stay the same; the manifest's digest does not.
    """
    if limit <= 0 or shutil.which("skopeo") is None:
        return None
    suffix = f":{reference}" if reference else ""
    try:
        raw = run(["skopeo", "inspect", "--raw", f"oci:{layout}{suffix}"], reason="read the image")
        manifest = json.loads(raw.stdout)
    except (ToolError, ValueError):
        return None
    # An OCI manifest may leave its mediaType out (image-spec manifest.md).
    if not isinstance(manifest, dict) or manifest.get("mediaType", _OCI_MANIFEST) not in (
        _IMAGE_MANIFESTS
    ):
        return None
    blobs, compressed = [], 0
    for layer in manifest.get("layers") or ():
        blob = blob_path(layout, layer.get("digest", "")) if isinstance(layer, dict) else None
        if blob is None:
            return None
        blobs.append(blob)
        compressed += layer.get("mediaType") in COMPRESSED_LAYERS
    if not compressed or not all(blob.is_file() for blob in blobs) or layers_size(blobs) > limit:
        return None
    staged = dest.with_name(dest.name + ".dir")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        for args, why in (
            (["--dest-decompress", f"oci:{layout}{suffix}", f"dir:{staged}"], "decompress"),
            (
                ["--dest-oci-accept-uncompressed-layers", f"dir:{staged}", f"oci:{dest}{suffix}"],
                "store the decompressed layers",
            ),
        ):
            run(["skopeo", "copy", "--quiet", *args], reason=f"{why} the image's layers")
    except ToolError as exc:
        log.debug("the image's layers stay compressed: %s", exc.message)
        shutil.rmtree(dest, ignore_errors=True)
        return None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    log.info("Decompressed the image's %d layer(s) for the guest", compressed)
    return dest


def zstd_layout(layout: Path, reference: str, dest: Path) -> Path:
    """``layout`` with its gzip layers recompressed as zstd in ``dest`` (the host's skopeo:
    ``skopeo copy --all --dest-compress-format zstd``), or ``layout`` itself when it has no
    gzip layer.

    Podman in the guest decompresses each layer twice (once for its digest, once to unpack
    it), under TCG as slowly as everything else: a 17 MiB gzip layer (40 MiB of programs)
    took 8.6 s to pull from a layout, 6.5 s as zstd. The host does it at native speed. The
    image's layers (diff IDs) and config are unchanged; its manifest digest is not. Without
    skopeo the layout is delivered as it is, with a note. Raises ConfigError when skopeo
    cannot read the image (a reference the layout lacks, a damaged blob): podman in the
    guest could not either, after a whole boot."""
    count = gzip_layers(layout)
    if count == 0:
        return layout
    if shutil.which("skopeo") is None:
        log.info(
            "skopeo is not installed: the image's %d gzip layer(s) go to the guest as they are, "
            "slower to unpack there than zstd (apt-get install skopeo)",
            count,
        )
        return layout
    suffix = f":{reference}" if reference else ""
    dest.parent.mkdir(parents=True, exist_ok=True)
    copy = ["skopeo", "copy", "--quiet", "--all", *ZSTD_LAYERS, f"oci:{layout}{suffix}"]
    try:
        run([*copy, f"oci:{dest}{suffix}"], reason="recompress the image's gzip layers as zstd")
    except ToolError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ConfigError(
            f"--image oci:{layout}{suffix}: skopeo cannot read it: {exc.message}",
            hint="check the image and its reference: skopeo inspect oci:DIR[:REF]",
        ) from exc
    log.info("Recompressed the image's %d gzip layer(s) as zstd for the guest", count)
    return dest


def extract_oci_archive(archive: Path, dest: Path) -> Path:
    """Unpack an oci-archive (a tar of an OCI layout) into ``dest``, refusing links, devices
    and paths outside it (tarfile's "data" filter). Raises ConfigError for a bad archive."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ConfigError(
            f"--image oci-archive:{archive}: cannot unpack it: {exc}",
            hint="check the archive (skopeo inspect oci-archive:FILE)",
        ) from exc
    return dest


def export_from_storage(name: str, dest: Path) -> None:
    """Write the host's containers-storage image ``name`` to ``dest`` as an OCI layout, with
    the host's skopeo (zstd layers, see zstd_layout), else podman. Raises ToolError naming
    them when neither is there."""
    reason = f"export the containers-storage image {name!r}"
    try:
        copy = ["skopeo", "copy", "--quiet", *ZSTD_LAYERS, f"containers-storage:{name}"]
        run([*copy, f"oci:{dest}:latest"], reason=reason)
        return
    except ToolError as skopeo_error:
        if "Could not find 'skopeo'" not in skopeo_error.message:
            raise
    try:
        run(
            ["podman", "save", "--quiet", "--format", "oci-dir", "-o", str(dest), name],
            reason=reason,
        )
    except ToolError as exc:
        if "Could not find 'podman'" in exc.message:
            raise ToolError(
                f"Could not find 'skopeo' or 'podman', which is required to {reason}",
                hint="install one: apt-get install skopeo",
            ) from exc
        raise


# --- memory --------------------------------------------------------------------------------

# What the guest needs besides the images: the kernel, the unpacked image and modules, podman's
# and the init's own use. Measured: the default release boots and runs a busybox container in
# 512 MiB, not in 384 MiB (b2c-builder run --memory N, TCG).
BASE_MEMORY = 512 * MiB


def parse_memory(text: str) -> int:
    """QEMU's ``-m`` size in bytes: a number with an optional K/M/G/T suffix (default MiB)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    suffix = text[-1:].upper()
    number = text[:-1] if suffix in units else text
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(f"--memory {text!r} is not a size", hint="e.g. 2G or 512M") from None
    return int(value * units.get(suffix, MiB))


def layers_size(files: Iterable[Path]) -> int:
    """The bytes of the tar layers inside the image files once decompressed (gzip, zstd, or
    plain tar members of an archive); an estimate of what podman's storage unpacks."""
    total = 0
    for path in files:
        if path.name.endswith(".tar") and tarfile.is_tarfile(path):
            with tarfile.open(path) as archive:
                for member in archive:
                    if member.isfile():
                        extracted = archive.extractfile(member)
                        assert extracted is not None
                        total += _expanded_size(extracted, member.size)
        else:
            with path.open("rb") as src:
                total += _expanded_size(src, path.stat().st_size)
    return total


def _expanded_size(stream: IO[bytes], size: int) -> int:
    head = stream.read(4)
    stream.seek(0)
    plain: IO[bytes]
    if head.startswith(b"\x1f\x8b"):
        plain = gzip.GzipFile(fileobj=stream)  # type: ignore[assignment]
    elif head.startswith(b"\x28\xb5\x2f\xfd"):
        plain = zstandard.ZstdDecompressor().stream_reader(stream)
    else:
        return size
    count = 0
    with plain:
        while chunk := plain.read(1 << 20):
            count += len(chunk)
    return count


def check_memory(memory: str, initrd_bytes: int, job: Job, *, cache_disk: bool) -> None:
    """Refuse before booting when the job's images cannot fit in ``memory`` (QEMU's -m).

    The guest holds the initrds (``initrd_bytes`` unpacked) and the images (as delivered),
    then podman unpacks the layers into its storage: a tmpfs of half the RAM unless a cache
    disk takes them. Raises ConfigError naming the sizes, --memory and the cache disk.
    """
    if not job.images:
        return
    total = parse_memory(memory)
    delivered = job.image_bytes
    layers = layers_size(path for image in job.images for _, path in image.files)
    # A pull stages each blob beside the storage (containers.conf image_copy_tmp_dir), then
    # unpacks it: both sit in the storage's tmpfs without a cache disk.
    storage = 0 if cache_disk else delivered + layers
    need = BASE_MEMORY + initrd_bytes + delivered + storage
    too_big_for_tmpfs = storage > total // 2
    if need <= total and not too_big_for_tmpfs:
        return
    raise ConfigError(
        f"the local images do not fit in --memory {memory}: {delivered / MiB:.0f} MiB delivered "
        f"(held in the job{'' if cache_disk else ', then staged by the pull'}) + "
        f"{layers / MiB:.0f} MiB unpacked + {(BASE_MEMORY + initrd_bytes) / MiB:.0f} MiB for "
        f"the system need about {need / MiB:.0f} MiB"
        + (" (podman's tmpfs storage gets half the RAM)" if too_big_for_tmpfs else ""),
        hint=f"raise --memory (e.g. --memory {max(need, 2 * storage) // MiB + 256}M), or give a "
        "cache disk (--disk FILE --cache-device auto) for podman's storage",
    )


@contextmanager
def workdir() -> Iterator[Path]:
    """A temporary folder for the job's files, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="b2c-job-") as tmp:
        yield Path(tmp)


def title_of(argv: Sequence[str]) -> str:
    """A one-line name for a container: its arguments quoted as a POSIX shell would read
    them (shlex.join), non-printable characters escaped first (``\\n``), so the title
    keeps ``sh -c 'echo hi'`` apart from ``sh -c echo hi``."""
    return shlex.join(
        a.encode("unicode_escape").decode("ascii") if not a.isprintable() else a for a in argv
    )
