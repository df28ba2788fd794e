"""Select what goes into the image from the staging tree, and add the generated files.

The Depends closure extracted into the staging manifest is only the search space: the image
gets the named binaries, their ELF closure, busybox applet links and the data files listed
here, never whole packages.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from dataclasses import dataclass

import jinja2

from b2c_builder.build import elf
from b2c_builder.build.debian.index import Archive, Dependency
from b2c_builder.build.debian.resolve import candidates
from b2c_builder.build.podman import PodmanBuild
from b2c_builder.build.rootfs import BUILDER, Entry, Kind, Origin, Rootfs, normalize
from b2c_builder.config import Arch
from b2c_builder.errors import ResolveError, RootfsError
from b2c_builder.resources import data_path

CRUN_WRAPPER = "usr/local/bin/crun-no-pivot"
CONMON_WRAPPER = "usr/local/bin/conmon-no-exit-command"
NETAVARK_STUB = "usr/lib/podman/netavark"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class Binary:
    """A program the image needs: where it is in its package, and why."""

    package: str
    path: str
    reason: str
    links: tuple[str, ...] = ()  # extra names (symlinks in the image) for the program


BINARIES: tuple[Binary, ...] = (
    Binary("busybox-static", "usr/bin/busybox", "init, shell and core utilities"),
    Binary("podman", "usr/bin/podman", "pulls and runs the containers"),
    Binary("crun", "usr/bin/crun", "the OCI runtime podman drives"),
    Binary("conmon", "usr/bin/conmon", "podman's container monitor"),
    Binary("rdate", "usr/sbin/rdate", "sets the clock by SNTP (b2c.ntp_peer)"),
    Binary(
        "e2fsprogs",
        "usr/sbin/mke2fs",
        "formats the cache partition (b2c.cache_device)",
        links=("usr/sbin/mkfs.ext4",),
    ),
    Binary("fdisk", "usr/sbin/sfdisk", "partitions a blank cache disk (b2c.cache_device=auto)"),
)

# The packages whose binaries and data we take; their Depends closure is the search space.
PACKAGES: tuple[str, ...] = (
    *dict.fromkeys(b.package for b in BINARIES),
    "netbase",  # /etc/services
    "ca-certificates",  # the TLS trust store for registries
)

DATA_FILES: tuple[tuple[str, str], ...] = (
    # (staging path, image path)
    ("etc/services", "etc/services"),
    ("etc/protocols", "etc/protocols"),
)

# Applets that must also answer at the sbin path scripts expect.
# Not modprobe: /sbin/modprobe is the kernel's default CONFIG_MODPROBE_PATH, which it runs for
# every request_module() once the initramfs is unpacked, /init or not. On Debian's kernel that
# is about 24 requests during boot, all for crypto templates that are built in (hmac(sha256),
# cbc(aes), ctr(aes)...). With nothing there, each fails at the exec, as in a busybox-only
# boot; with busybox there, each is a busybox run that finds no module, about 4 ms under TCG.
# /init points /proc/sys/kernel/modprobe at /usr/bin/modprobe first thing (init/main.sh), so
# what the kernel asks for after that (fs-ext4, crypto-crc32c, 9p-virtio) is loaded as before.
SBIN_APPLETS = ("insmod", "rmmod", "poweroff", "reboot", "halt", "switch_root")

_APPLET_RE = re.compile(rb"[\w.\-\[\]]+")


def check_archive_has_packages(archive: Archive) -> None:
    """Raise ResolveError naming every package of PACKAGES (and what the image needs it for)
    that ``archive`` (one suite and architecture) has no package or provider for: an
    architecture the suite does not build podman, crun, conmon or busybox-static for cannot
    have an image, and the user hears it before any download."""
    missing = [name for name in PACKAGES if not candidates(archive, Dependency(name))]
    if not missing:
        return
    reasons = {b.package: b.reason for b in BINARIES}
    named = ", ".join(f"{name} ({reasons[name]})" if name in reasons else name for name in missing)
    raise ResolveError(
        f"{archive.suite}/{archive.arch} has no {named}: b2c-builder cannot build an image "
        f"for {archive.arch} from {archive.suite}",
        hint="pick an architecture (--arch) or a suite (--suite) that has them all: "
        f"{', '.join(PACKAGES)}",
    )


def busybox_applets(binary: bytes) -> list[str]:
    """Applet names from busybox's sorted, NUL-separated name table, without running it."""
    start = binary.find(b"[\0[[\0")
    if start < 0:
        raise RootfsError(
            "cannot find the applet table in the busybox binary",
            hint="is this a busybox binary? check the busybox-static package",
        )
    names: list[str] = []
    for raw in binary[start:].split(b"\0"):
        if not raw or not _APPLET_RE.fullmatch(raw):
            break
        name = raw.decode()
        if names and name <= names[-1]:
            break
        names.append(name)
    return names


def copy_from(staging: Rootfs, image: Rootfs, path: str, *, dest: str | None = None) -> str:
    """Copy ``path`` (and every symlink met on the way) from staging into the image.

    Returns the canonical path of the file that was copied. With ``dest`` the file is added
    under another name (no symlinks copied).
    """

    def copy_link(link: Entry) -> None:
        if dest is None and image.get(link.path) is None:
            image.add(Entry(link.path, Kind.SYMLINK, 0o777, target=link.target, origin=link.origin))

    canonical = staging.resolve(path, on_link=copy_link)
    if canonical is None:
        raise RootfsError(f"/{normalize(path)} is not in the extracted packages")
    source = staging.entries[canonical]
    # mtimes are kept: the cpio writer clamps them to SOURCE_DATE_EPOCH.
    target = normalize(dest) if dest is not None else canonical
    image.add(dataclasses.replace(source, path=target, link_group=None))
    return canonical


def new_image(arch: Arch) -> Rootfs:
    """An empty image with the directory skeleton, usr-merge links and device nodes.

    The usr-merge links are the staging tree's (``arch.facts.usrmerge``): one per folder the
    architecture's ABI uses, so none dangles (arm64 has no lib64).
    """
    image = Rootfs()
    for link in arch.facts.usrmerge:
        image.add_symlink(link, f"usr/{link}")
    for directory in ("proc", "sys", "dev", "run", "mnt", "root", "etc", "usr/bin", "usr/sbin"):
        image.add_dir(directory, 0o700 if directory == "root" else 0o755)
    for directory in ("tmp", "var/tmp"):
        image.add_dir(directory, 0o1777)
    image.add_dir("var/lib/containers")
    # What mount(8) and podman read for the mount table; /init would otherwise fork ln for it.
    image.add_symlink("etc/mtab", "/proc/self/mounts")
    image.add_dir(f"usr/lib/{arch.facts.multiarch}")
    # The kernel opens /dev/console for init's stdio before anything is mounted.
    image.add_device("dev/console", Kind.CHAR, 5, 1, 0o600)
    image.add_device("dev/null", Kind.CHAR, 1, 3, 0o666)
    return image


def add_binaries(staging: Rootfs, image: Rootfs, arch: Arch) -> None:
    """Copy the programs, then the shared-library closure they need (parsed, never run)."""
    programs: list[str] = []
    for binary in BINARIES:
        if staging.resolve(binary.path) is None:
            raise ResolveError(
                f"/{binary.path} (needed: {binary.reason}) is not in package {binary.package}",
                hint="the package layout changed in this suite; update image.BINARIES",
            )
        programs.append(copy_from(staging, image, binary.path))
        for link in binary.links:
            image.add_symlink(link, posixpath.relpath(binary.path, posixpath.dirname(link)))
    for needed in elf.closure(staging, programs, arch):
        copy_from(staging, image, needed)


PODMAN = "usr/bin/podman"


def use_podman(staging: Rootfs, build: PodmanBuild) -> None:
    """Put the trimmed podman in place of Debian's binary in the staging tree. Its origin
    is the source package (``src:NAME``), as the SBOM's podman section details."""
    staging.add(
        Entry(
            PODMAN,
            Kind.FILE,
            0o755,
            data=build.binary.read_bytes(),
            origin=Origin(f"src:{build.source}", build.source_version),
        ),
        replace=True,
    )


def add_busybox_links(image: Rootfs) -> list[str]:
    """Symlink every applet into /usr/bin, never shadowing a real program already there."""
    applets = busybox_applets(image.read("usr/bin/busybox"))
    for applet in applets:
        if applet == "busybox":
            continue
        for directory in ("usr/bin", *(("usr/sbin",) if applet in SBIN_APPLETS else ())):
            path = f"{directory}/{applet}"
            if image.get(path) is None and image.resolve(path) is None:
                image.add_symlink(path, "/usr/bin/busybox")
    return applets


def add_data_files(staging: Rootfs, image: Rootfs) -> None:
    for source, dest in DATA_FILES:
        copy_from(staging, image, source, dest=dest)
    image.add_file(
        CA_BUNDLE, ca_bundle(staging), 0o644, origin=_origin_of(staging, "ca-certificates")
    )


def ca_bundle(staging: Rootfs) -> bytes:
    """Concatenate the Mozilla CA certificates (what update-ca-certificates would generate)."""
    prefix = "usr/share/ca-certificates/"
    certs = sorted(p for p in staging.entries if p.startswith(prefix) and p.endswith(".crt"))
    if not certs:
        raise ResolveError(
            "no CA certificates found in the ca-certificates package",
            hint="registries over TLS cannot be verified without them",
        )
    return b"".join(_ensure_newline(staging.read(p)) for p in certs)


def _ensure_newline(data: bytes) -> bytes:
    return data if data.endswith(b"\n") else data + b"\n"


def _origin_of(staging: Rootfs, package: str) -> Origin:
    for entry in staging.entries.values():
        if entry.origin is not None and entry.origin.package == package:
            return entry.origin
    raise ResolveError(f"nothing from package {package} was extracted")


# Generated configuration: (template under templates/rootfs or file under init/, image path, mode)
CONFIG_FILES: tuple[tuple[str, str, int], ...] = (
    ("templates/rootfs/containers.conf.j2", "etc/containers/containers.conf", 0o644),
    ("templates/rootfs/storage.conf.j2", "etc/containers/storage.conf", 0o644),
    ("templates/rootfs/registries.conf.j2", "etc/containers/registries.conf", 0o644),
    ("templates/rootfs/policy.json.j2", "etc/containers/policy.json", 0o644),
    ("templates/rootfs/passwd.j2", "etc/passwd", 0o644),
    ("templates/rootfs/group.j2", "etc/group", 0o644),
    ("templates/rootfs/hosts.j2", "etc/hosts", 0o644),
    ("templates/rootfs/nsswitch.conf.j2", "etc/nsswitch.conf", 0o644),
    ("templates/rootfs/os-release.j2", "etc/os-release", 0o644),
    ("init/crun-no-pivot", CRUN_WRAPPER, 0o755),
    ("init/conmon-no-exit-command", CONMON_WRAPPER, 0o755),
    ("init/netavark-stub", NETAVARK_STUB, 0o755),
)


def add_config(image: Rootfs, variables: dict[str, object]) -> None:
    """The static configuration: containers.conf & co, passwd, the crun and conmon wrappers, the
    netavark stub."""
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    for source, dest, mode in CONFIG_FILES:
        text = data_path(source).read_text()
        if source.endswith(".j2"):
            text = env.from_string(text).render(**variables)
        image.add_file(dest, text.encode(), mode, origin=BUILDER)


EXECUTABLE_DIRS = ("usr/bin/", "usr/sbin/", "usr/libexec/")


def add_package_binaries(staging: Rootfs, image: Rootfs, package: str, arch: Arch) -> None:
    """--extra-package: the package's programs (not its docs or data) and their libraries."""
    programs = [
        path
        for path, entry in sorted(staging.entries.items())
        if entry.origin is not None
        and entry.origin.package == package
        and path.startswith(EXECUTABLE_DIRS)
        and entry.kind in (Kind.FILE, Kind.SYMLINK)
    ]
    if not programs:
        raise ResolveError(
            f"package {package} has no programs in /usr/bin, /usr/sbin or /usr/libexec",
            hint="--extra-package adds a package's programs; data files are not copied",
        )
    elf_files = []
    for path in programs:
        if image.get(path) is not None:
            continue
        canonical = copy_from(staging, image, path)
        if staging.read(canonical)[:4] == b"\x7fELF":
            elf_files.append(canonical)
    for needed in elf.closure(staging, elf_files, arch):
        if image.get(needed) is None:
            copy_from(staging, image, needed)
