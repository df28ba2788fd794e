"""A tiny signed Debian archive served over HTTP on 127.0.0.1, for tests.

    with GpgKey() as key, LocalMirror(tmp_path, [FakePackage("hello", files={...})],
                                      key=key) as mirror:
        archive = open_archive(session, mirror.url, mirror.suite, mirror.arch,
                               keyring=mirror.keyring, cache_dir=tmp_path / "cache")
        mirror.tamper_deb("hello")   # then fetching hello fails with VerifyError
        mirror.unserve_deb("hello")  # then fetching it fails with HTTP 404

``more_arches`` serves more architectures beside ``arch``: each architecture's Packages lists
the packages of that Architecture (and of ``all``).

The .debs are built by the real ``dpkg-deb --build``; InRelease is clearsigned by a
throwaway ed25519 key made by ``gpg --quick-gen-key`` in a private GNUPGHOME and exported
as a binary keyring that gpgv reads. Nothing here writes outside the given directory
except the short-lived GNUPGHOME (in /tmp: gpg-agent socket paths must be short).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.server
import io
import logging
import lzma
import posixpath
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from b2c_builder.log import log
from b2c_builder.run import run

DEFAULT_DATE = 1_754_697_600  # 2025-08-09 00:00:00 UTC: the Release Date of the fake suite


class GpgKey:
    """A throwaway signing key in its own GNUPGHOME, with its public keyring file."""

    def __init__(self, name: str = "b2c test archive") -> None:
        self.home = Path(tempfile.mkdtemp(prefix="b2c-gpg-"))
        self.home.chmod(0o700)
        gpg = self._gpg
        gpg(
            "--passphrase",
            "",
            "--quick-gen-key",
            f"{name} <test@mirror.invalid>",
            "ed25519",
            "sign",
            "never",
        )
        listing = gpg("--with-colons", "--list-secret-keys").stdout.decode()
        self.fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        self.keyring = self.home / "keyring.gpg"
        self.keyring.write_bytes(gpg("--export", self.fingerprint).stdout)

    def _gpg(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return run(
            ["gpg", "--homedir", str(self.home), "--batch", "--pinentry-mode", "loopback", *args],
            reason="make a throwaway archive signing key for the tests",
            timeout=120,
        )

    def clearsign(self, text: bytes) -> bytes:
        return bytes(
            run(
                [
                    "gpg",
                    "--homedir",
                    str(self.home),
                    "--batch",
                    "--local-user",
                    self.fingerprint,
                    "--clearsign",
                    "--output",
                    "-",
                ],
                reason="sign the test archive's InRelease",
                input=text,
                timeout=120,
            ).stdout
        )

    def close(self) -> None:
        run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            reason="stop the test gpg-agent",
            check=False,
        )
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> GpgKey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FakePackage:
    """A synthetic binary package. ``files`` maps image paths ("usr/bin/x") to contents."""

    name: str
    version: str = "1.0-1"
    architecture: str = "amd64"
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    multi_arch: str = ""
    files: Mapping[str, bytes] = field(default_factory=dict)
    # file or directory modes; files default to 0o755 under */bin/, else 0o644
    modes: Mapping[str, int] = field(default_factory=dict)
    symlinks: Mapping[str, str] = field(default_factory=dict)  # path -> target
    hardlinks: Mapping[str, str] = field(default_factory=dict)  # path -> existing file path
    compression: str = "xz"  # dpkg-deb -Z: xz, zstd, gzip, none

    @property
    def filename(self) -> str:
        """Pool path of the .deb, relative to the mirror URL."""
        prefix = self.name[:4] if self.name.startswith("lib") else self.name[0]
        version = self.version.split(":", 1)[-1]
        return f"pool/main/{prefix}/{self.name}/{self.name}_{version}_{self.architecture}.deb"

    def control(self) -> str:
        fields = {
            "Package": self.name,
            "Version": self.version,
            "Architecture": self.architecture,
            "Maintainer": "Test <test@mirror.invalid>",
            "Multi-Arch": self.multi_arch,
            "Pre-Depends": self.pre_depends,
            "Depends": self.depends,
            "Provides": self.provides,
            "Description": f"fake {self.name} for tests",
        }
        return "".join(f"{k}: {v}\n" for k, v in fields.items() if v)

    def build(self, out: Path, work: Path) -> Path:
        """Build the .deb at ``out`` with dpkg-deb, staging the tree under ``work``."""
        root = work / f"{self.name}_{self.version}"
        shutil.rmtree(root, ignore_errors=True)
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN/control").write_text(self.control())
        for path, data in self.files.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            default = 0o755 if "bin/" in path else 0o644
            target.chmod(self.modes.get(path, default))
        for path, link in self.symlinks.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(link)
        for path, mode in self.modes.items():
            if path not in self.files:  # a directory
                (root / path.lstrip("/")).chmod(mode)
        for path, existing in self.hardlinks.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.hardlink_to(root / existing.lstrip("/"))
        out.parent.mkdir(parents=True, exist_ok=True)
        run(
            [
                "dpkg-deb",
                "--root-owner-group",
                f"-Z{self.compression}",
                "--build",
                str(root),
                str(out),
            ],
            reason="build a synthetic .deb for the tests",
        )
        return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_xz(files: Mapping[str, bytes], *, top: str = "") -> bytes:
    """A deterministic .tar.xz of ``files`` (path -> bytes), under the folder ``top``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(posixpath.join(top, path) if top else path)
            info.size, info.mode, info.mtime = len(files[path]), 0o644, DEFAULT_DATE
            tar.addfile(info, io.BytesIO(files[path]))
    return lzma.compress(raw.getvalue())


@dataclass
class FakeSource:
    """A synthetic source package in format 3.0 (quilt): ``upstream`` files go into the
    .orig.tar.xz (under NAME-UPSTREAM/), ``debian`` files (paths under debian/, e.g.
    "patches/series") into the .debian.tar.xz; the .dsc names both."""

    name: str
    version: str = "1.0-1"
    upstream: Mapping[str, bytes] = field(default_factory=dict)
    debian: Mapping[str, bytes] = field(default_factory=dict)
    binaries: tuple[str, ...] = ()
    build_depends: str = ""
    go_import_path: str = ""

    @property
    def directory(self) -> str:
        prefix = self.name[:4] if self.name.startswith("lib") else self.name[0]
        return f"pool/main/{prefix}/{self.name}"

    def tarballs(self) -> dict[str, bytes]:
        upstream = self.version.split(":", 1)[-1].rsplit("-", 1)[0]
        debian = {"control": f"Source: {self.name}\n".encode(), **self.debian}
        return {
            f"{self.name}_{upstream}.orig.tar.xz": tar_xz(
                self.upstream, top=f"{self.name}-{upstream}"
            ),
            f"{self.name}_{self.version}.debian.tar.xz": tar_xz(
                {f"debian/{k}": v for k, v in debian.items()}
            ),
        }

    def fields(self) -> dict[str, str]:
        return {
            "Format": "3.0 (quilt)",
            "Source": self.name,
            "Binary": ", ".join(self.binaries or (self.name,)),
            "Architecture": "any",
            "Version": self.version,
            "Build-Depends": self.build_depends,
            "Go-Import-Path": self.go_import_path,
        }

    def dsc(self, tarballs: Mapping[str, bytes]) -> bytes:
        text = "".join(f"{k}: {v}\n" for k, v in self.fields().items() if v)
        text += "Checksums-Sha256:\n" + "".join(
            f" {_sha256(data)} {len(data)} {name}\n" for name, data in sorted(tarballs.items())
        )
        return text.encode()

    def dsc_name(self) -> str:
        return f"{self.name}_{self.version.split(':', 1)[-1]}.dsc"

    def build(self, root: Path) -> None:
        """Write the .dsc and the tarballs into the pool under ``root``."""
        folder = root / self.directory
        folder.mkdir(parents=True, exist_ok=True)
        tarballs = self.tarballs()
        for name, data in tarballs.items():
            (folder / name).write_bytes(data)
        (folder / self.dsc_name()).write_bytes(self.dsc(tarballs))

    def stanza(self, root: Path) -> str:
        """The Sources stanza for the files as they are now in the pool."""
        folder = root / self.directory
        names = sorted([*self.tarballs(), self.dsc_name()])
        fields = {**self.fields(), "Directory": self.directory}
        fields["Package"] = fields.pop("Source")
        text = "".join(f"{k}: {v}\n" for k, v in fields.items() if v)
        return (
            text
            + "Checksums-Sha256:\n"
            + "".join(
                f" {_sha256((folder / n).read_bytes())} {(folder / n).stat().st_size} {n}\n"
                for n in names
            )
        )


class LocalMirror:
    """A signed one-suite, one-component archive under ``directory/debian``, served on
    127.0.0.1 while the context is open. ``url`` ends in /debian like a real mirror. It
    serves ``arch`` and ``more_arches``."""

    def __init__(
        self,
        directory: Path,
        packages: Sequence[FakePackage],
        *,
        key: GpgKey | None = None,
        suite: str = "trixie",
        arch: str = "amd64",
        more_arches: Sequence[str] = (),
        date: int = DEFAULT_DATE,
        extra_release_fields: Mapping[str, str] | None = None,
        sources: Sequence[FakeSource] = (),
    ) -> None:
        self.root = directory / "debian"
        self.suite, self.arch, self.date = suite, arch, date
        self.arches = (arch, *more_arches)
        self.packages = {(p.name, p.architecture): p for p in packages}
        self.sources = {s.name: s for s in sources}
        self._own_key = key is None
        self.key = key or GpgKey()
        self.requests: list[str] = []  # paths served, in order (to tell a cache hit)
        self._extra = dict(extra_release_fields or {})
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        work = directory / "build"
        for package in packages:
            package.build(self.root / package.filename, work)
        for source in sources:
            source.build(self.root)
        shutil.rmtree(work, ignore_errors=True)
        self.publish()

    # --- layout ---------------------------------------------------------------------------

    @property
    def dists(self) -> Path:
        return self.root / "dists" / self.suite

    @property
    def packages_path(self) -> Path:
        """The Packages file of ``arch``."""
        return self.dists / f"main/binary-{self.arch}/Packages"

    @property
    def inrelease(self) -> Path:
        return self.dists / "InRelease"

    @property
    def keyring(self) -> Path:
        return self.key.keyring

    def package(self, name: str, arch: str | None = None) -> FakePackage:
        """The package ``name`` of ``arch`` (default: ``arch``), else of Architecture all."""
        found = self.packages.get((name, arch or self.arch)) or self.packages.get((name, "all"))
        assert found is not None, f"the mirror has no {name} for {arch or self.arch}"
        return found

    def deb_path(self, name: str, arch: str | None = None) -> Path:
        return self.root / self.package(name, arch).filename

    def packages_text(self, arch: str | None = None) -> str:
        """The Packages file of ``arch`` (default: ``arch``)."""
        stanzas = []
        for (_name, architecture), package in sorted(self.packages.items()):
            if architecture not in (arch or self.arch, "all"):
                continue
            data = (self.root / package.filename).read_bytes()
            stanzas.append(
                package.control().replace(
                    "Description:",
                    f"Filename: {package.filename}\nSize: {len(data)}\n"
                    f"SHA256: {_sha256(data)}\nDescription:",
                )
            )
        return "\n".join(stanzas)

    def publish(self) -> None:
        """(Re)write every Packages and Packages.xz, Release and a freshly signed InRelease."""
        files = {}
        for arch in self.arches:
            text = self.packages_text(arch).encode()
            xz = lzma.compress(text, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
            files[f"main/binary-{arch}/Packages"] = text
            files[f"main/binary-{arch}/Packages.xz"] = xz
        for path, data in files.items():
            (self.dists / path).parent.mkdir(parents=True, exist_ok=True)
            (self.dists / path).write_bytes(data)
        if self.sources:
            sources = "\n".join(
                self.sources[n].stanza(self.root) for n in sorted(self.sources)
            ).encode()
            (self.dists / "main/source").mkdir(parents=True, exist_ok=True)
            (self.dists / "main/source/Sources").write_bytes(sources)
            files["main/source/Sources"] = sources
            files["main/source/Sources.xz"] = lzma.compress(sources)
            (self.dists / "main/source/Sources.xz").write_bytes(files["main/source/Sources.xz"])
        fields = {
            "Origin": "Debian",
            "Label": "Debian",
            "Suite": "stable",
            "Codename": self.suite,
            "Date": email.utils.formatdate(self.date, usegmt=True).replace("GMT", "UTC"),
            "Architectures": " ".join(["all", *self.arches]),
            "Components": "main",
            "Description": "b2c-builder test archive",
            **self._extra,
        }
        release = "".join(f"{k}: {v}\n" for k, v in fields.items())
        release += "SHA256:\n" + "".join(
            f" {_sha256(data)} {len(data):>8} {path}\n" for path, data in files.items()
        )
        (self.dists / "Release").write_text(release)
        self.inrelease.write_bytes(self.key.clearsign(release.encode()))

    # --- tampering ------------------------------------------------------------------------

    def tamper_inrelease(self) -> None:
        """Change the signed text of InRelease (a Description) without signing it again."""
        data = self.inrelease.read_bytes()
        tampered = data.replace(b"b2c-builder test archive", b"b2c-builder EVIL archive!")
        assert tampered != data
        self.inrelease.write_bytes(tampered)

    def tamper_packages(self) -> None:
        """Replace Packages.xz with a valid xz whose content differs from what Release signs."""
        text = self.packages_path.read_bytes() + b"\nPackage: evil\nVersion: 6.6.6\n"
        self.packages_path.with_suffix(".xz").write_bytes(lzma.compress(text))

    def unserve_deb(self, name: str, arch: str | None = None) -> None:
        """Remove a .deb that the index still lists: the mirror answers 404 for it, as a
        partial mirror does for an architecture it lists but does not carry."""
        self.deb_path(name, arch).unlink()

    def tamper_deb(self, name: str) -> None:
        """Flip one byte in the middle of a .deb (same size, different SHA256)."""
        path = self.deb_path(name)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    # --- serving --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "use the LocalMirror as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/debian"

    def __enter__(self) -> LocalMirror:
        served = self.requests
        root = str(self.root.parent)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=root, **kwargs)

            def do_GET(self) -> None:
                served.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._own_key:
            self.key.close()


@contextlib.contextmanager
def capture_log(level: int = logging.DEBUG) -> Iterator[list[str]]:
    """Messages of the ``b2c`` logger while the block runs, whatever log.setup() did."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler, old_level = Collect(level), log.level
    log.addHandler(handler)
    log.setLevel(min(level, old_level or logging.WARNING))
    try:
        yield messages
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
