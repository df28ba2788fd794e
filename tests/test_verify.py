"""Verification through the CLI: a tampered or unsigned archive never reaches the output.

A local signed archive on 127.0.0.1 holds fake packages under the names the real build
resolves (image.PACKAGES, no Depends). With the archive untouched the build gets past every
check and fails later, on the first program the fake packages lack; with a tampered
InRelease, Packages.xz or .deb, or the wrong keyring, it fails on that file. Either way the
output folder is exactly as it was, and no temporary folder is left beside it.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from b2c_builder.build import image
from b2c_builder.build.debian import download
from tests.conftest import b2c, require, require_tool
from tests.localmirror import FakePackage, GpgKey, LocalMirror

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SENTINEL = {
    "sentinel.txt": b"an earlier release: must survive a failed build\n",
    "initramfs.linux_amd64.cpio.zst": b"old image bytes",
    "initramfs.linux_amd64.cpio.zst.sha256": b"0" * 64 + b"  initramfs.linux_amd64.cpio.zst\n",
}
# Words of a verification failure; the untampered control must fail without any of them.
VERIFY_WORDS = ("signature", "sha256", "mismatch", "tampered", "larger than")


@pytest.fixture(scope="module")
def key() -> Iterator[GpgKey]:
    require_tool("gpg")
    require_tool("gpgv")
    require_tool("dpkg-deb")
    with GpgKey() as k:
        yield k


def fake_packages() -> list[FakePackage]:
    """One fake per package the real build asks for: a doc file, no programs, no Depends."""
    return [
        FakePackage(name, files={f"usr/share/doc/{name}/copyright": f"fake {name}\n".encode()})
        for name in image.PACKAGES
    ]


@pytest.fixture
def mirror(tmp_path: Path, key: GpgKey) -> Iterator[LocalMirror]:
    with LocalMirror(tmp_path / "archive", fake_packages(), key=key) as m:
        yield m


def snapshot(folder: Path) -> dict[str, bytes | None] | None:
    """Every path under ``folder`` with its bytes (None for folders); None if it is absent."""
    if not folder.exists():
        return None
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(params=["absent", "existing"])
def out(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The --output folder: not there yet, or holding an earlier release and a sentinel."""
    folder = tmp_path / "parent" / "releases"
    folder.parent.mkdir()
    if request.param == "existing":
        folder.mkdir()
        for name, data in SENTINEL.items():
            (folder / name).write_bytes(data)
    return folder


def build(mirror_url: str, out: Path, cache: Path, *extra: str) -> tuple[int, str, float]:
    start = time.monotonic()
    proc = b2c(
        "build",
        "--mirror",
        mirror_url,
        "--output",
        str(out),
        "--cache-dir",
        str(cache),
        *extra,
        timeout=180,
    )
    return proc.returncode, proc.stderr, time.monotonic() - start


def error_line(stderr: str) -> str:
    """The one error message (its hint line aside); fails on a traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [
        line.removeprefix("ERROR: ")
        for line in stderr.splitlines()
        if line.startswith("ERROR: ") and not line.startswith("ERROR: hint:")
    ]
    assert len(errors) == 1, stderr
    return errors[0]


def assert_untouched(out: Path, before: dict[str, bytes | None] | None) -> None:
    assert snapshot(out) == before
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".b2c-build-")]
    assert leftovers == []


def tamper_inrelease(mirror: LocalMirror) -> tuple[str, ...]:
    mirror.tamper_inrelease()
    return ("--keyring", str(mirror.keyring))


def tamper_packages(mirror: LocalMirror) -> tuple[str, ...]:
    mirror.tamper_packages()
    return ("--keyring", str(mirror.keyring))


def flip_packages_byte(mirror: LocalMirror) -> tuple[str, ...]:
    """Same size as Release says, other bytes: only the SHA256 can tell."""
    path = mirror.packages_path.with_suffix(".xz")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return ("--keyring", str(mirror.keyring))


def tamper_deb(mirror: LocalMirror) -> tuple[str, ...]:
    mirror.tamper_deb("podman")
    return ("--keyring", str(mirror.keyring))


def wrong_keyring(mirror: LocalMirror) -> tuple[str, ...]:
    require(DEBIAN_KEYRING.is_file(), f"{DEBIAN_KEYRING} is missing (make deps-test installs it)")
    return ("--keyring", str(DEBIAN_KEYRING))  # valid keys, none of them signed this archive


CASES: dict[str, tuple[Callable[[LocalMirror], tuple[str, ...]], str, str]] = {
    # case: (how to break the archive, the file the message must name, what it must say)
    "inrelease": (tamper_inrelease, "/dists/trixie/InRelease", "signature"),
    "packages": (tamper_packages, "main/binary-amd64/Packages.xz", "larger than"),
    "packages-bitflip": (flip_packages_byte, "main/binary-amd64/Packages.xz", "SHA256 mismatch"),
    "deb": (tamper_deb, "podman_1.0-1_amd64.deb", "SHA256 mismatch"),
    "keyring": (wrong_keyring, "/dists/trixie/InRelease", "signature"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_archive_fails_and_leaves_output_untouched(
    mirror: LocalMirror, out: Path, tmp_path: Path, case: str
) -> None:
    tamper, names, says = CASES[case]
    extra = tamper(mirror)
    before = snapshot(out)
    cache = tmp_path / "cache"
    code, stderr, _ = build(mirror.url, out, cache, *extra)
    assert code != 0
    message = error_line(stderr)
    assert names in message, message
    assert says in message, message
    assert_untouched(out, before)
    # A file that failed its check never enters the cache (no partial files either).
    cached = sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []
    assert not [name for name in cached if name.startswith(".partial-")]
    if case == "deb":
        bad = hashlib.sha256(mirror.deb_path("podman").read_bytes()).hexdigest()
        assert not download.cache_path(cache, bad).exists()


def test_untampered_archive_passes_verification(
    mirror: LocalMirror, out: Path, tmp_path: Path
) -> None:
    """The control: every check passes; the build stops at the first missing program."""
    before = snapshot(out)
    code, stderr, _ = build(mirror.url, out, tmp_path / "cache", "--keyring", str(mirror.keyring))
    assert code != 0
    message = error_line(stderr)
    assert "/usr/bin/busybox" in message, message
    assert not any(word in message.lower() for word in VERIFY_WORDS), message
    fetched = {r.rsplit("/", 1)[-1] for r in mirror.requests if r.endswith(".deb")}
    assert fetched == {f"{name}_1.0-1_amd64.deb" for name in image.PACKAGES}
    assert_untouched(out, before)


def test_image_and_kernel_packages_are_resolved_and_fetched_once(
    key: GpgKey, out: Path, tmp_path: Path
) -> None:
    """One resolution and one download pass for the image's packages and the kernel's (only
    its linux-image part: initramfs-tools is never fetched), each .deb fetched once."""
    kver = "6.99.0-1-test"
    kernel = [
        FakePackage("linux-image-amd64", depends=f"linux-image-{kver}"),
        FakePackage(
            f"linux-image-{kver}",
            depends="initramfs-tools",
            files={f"boot/vmlinuz-{kver}": b"kernel", f"usr/lib/modules/{kver}/modules.order": b""},
        ),
        FakePackage("initramfs-tools"),
    ]
    with LocalMirror(tmp_path / "archive", [*fake_packages(), *kernel], key=key) as mirror:
        code, stderr, _ = build(
            mirror.url, out, tmp_path / "cache", "--keyring", str(mirror.keyring),
            "--kernel-package", "linux-image-amd64",
        )  # fmt: skip
    assert code != 0 and "/usr/bin/busybox" in error_line(stderr)  # the fakes have no programs
    steps = [line.removeprefix("INFO: ").strip() for line in stderr.splitlines()]
    assert steps.count("‣ Resolving dependencies") == 1
    assert steps.count("‣ Fetching packages") == 1
    assert f"{len(image.PACKAGES)} packages in the search space, 2 for the kernel" in steps
    debs = sorted(r.rsplit("/", 1)[-1] for r in mirror.requests if r.endswith(".deb"))
    assert debs == sorted(
        [f"{name}_1.0-1_amd64.deb" for name in image.PACKAGES]
        + ["linux-image-amd64_1.0-1_amd64.deb", f"linux-image-{kver}_1.0-1_amd64.deb"]
    )


def test_no_verify_signature_warns_loudly(mirror: LocalMirror, out: Path, tmp_path: Path) -> None:
    mirror.tamper_inrelease()
    before = snapshot(out)
    code, stderr, _ = build(mirror.url, out, tmp_path / "cache", "--no-verify-signature")
    warnings = [line for line in stderr.splitlines() if line.startswith("WARNING: ")]
    assert any("NOT" in w and "--no-verify-signature" in w for w in warnings), stderr
    assert any(f"{mirror.url}/dists/trixie/InRelease" in w for w in warnings), stderr
    # Past the signature: the build goes on to the (fake) packages, and fails there.
    assert code != 0
    assert "/usr/bin/busybox" in error_line(stderr)
    assert_untouched(out, before)


def test_no_verify_signature_still_checks_hashes(
    mirror: LocalMirror, out: Path, tmp_path: Path
) -> None:
    """The opt-out skips the OpenPGP signature only: Release still vouches for Packages.xz."""
    mirror.tamper_packages()
    before = snapshot(out)
    code, stderr, _ = build(mirror.url, out, tmp_path / "cache", "--no-verify-signature")
    assert code != 0
    assert "main/binary-amd64/Packages.xz" in error_line(stderr)
    assert_untouched(out, before)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_mirror_fails_fast_naming_the_url(out: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/debian"
    before = snapshot(out)
    code, stderr, elapsed = build(url, out, tmp_path / "cache")
    assert code != 0
    message = error_line(stderr)
    assert f"{url}/dists/trixie/InRelease" in message, message
    assert elapsed < 15, f"took {elapsed:.1f}s to give up on a closed port"
    assert_untouched(out, before)


def test_an_architecture_whose_suite_lacks_podman_and_crun_is_named(
    key: GpgKey, tmp_path: Path
) -> None:
    """A riscv64 archive without podman and crun: one error naming both (and why the image
    needs them), before any package is fetched, and nothing written."""
    present = [p for p in fake_packages() if p.name not in ("podman", "crun")]
    riscv64 = [FakePackage(p.name, architecture="riscv64", files=p.files) for p in present]
    out = tmp_path / "out"
    with LocalMirror(tmp_path / "archive", riscv64, key=key, arch="riscv64") as mirror:
        code, stderr, _ = build(
            mirror.url, out, tmp_path / "cache", "--keyring", str(mirror.keyring),
            "--arch", "riscv64",
        )  # fmt: skip
        fetched = [path for path in mirror.requests if "/pool/" in path]
    message = error_line(stderr)
    assert code == 1, stderr
    assert "trixie/riscv64 has no podman (pulls and runs the containers), crun (" in message
    assert "conmon" not in message and "busybox" not in message, message
    assert fetched == []
    assert not out.exists()
