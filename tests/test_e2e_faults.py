"""End to end: the runtime under field faults (issue 8), where real podman decides.

- a damaged store on the cache partition (images.json cut short, db.sql's header zeroed, as
  a power cut leaves them) is wiped at the next boot, volumes kept, and the boot succeeds,
  even though the boot before closed it (the mark's fingerprint no longer matches); a store
  the last boot closed and nothing changed since is not probed;
- a cache too full for the next image evicts the image the boot does not use, then retries;
- a private registry: --creds from b2c.extra_args_url pull the image, nothing on the console
  shows a secret, a wrong password fails at once (no retries);
- a container printing "Execution is over, pipeline status: 0" does not decide the verdict;
- ip=dhcp on Debian's kernel (no IP autoconfiguration) is applied by /init.

Boots are done as in test_e2e_runtime.py (whose helpers and fixtures this module reuses).
"""

from __future__ import annotations

import base64
import http.client
import http.server
import os
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Release, require_tool
from tests.oci import busybox_layer, make_layout
from tests.registry import Registry
from tests.test_e2e_runtime import (  # noqa: F401 - logs and http_server are fixtures
    PULL_ERROR,
    TLS,
    Boot,
    HttpServer,
    assert_status,
    boot,
    container,
    http_server,
    logs,
)

pytestmark = [pytest.mark.qemu, pytest.mark.network]

MiB = 1 << 20


def big_image(registry: Registry, tmp: Path, name: str, mib: int) -> str:
    """A busybox image with ``mib`` MiB of random (incompressible) data, pushed as ``name``."""
    busybox = Path(require_tool("busybox")).resolve()
    layer = busybox_layer(busybox, {"big.bin": os.urandom(mib * MiB)})
    registry.push(make_layout(tmp / name, layer, cmd=["/bin/sh"]), name)
    return f"docker://{registry.guest_host}/{name}:latest"


# --- the cache partition, seen from the host -----------------------------------------------


def first_partition_offset(disk: Path) -> int:
    """The byte offset of GPT partition 1 of ``disk`` (512-byte sectors)."""
    with disk.open("rb") as f:
        f.seek(512)
        header = f.read(92)
        assert header[:8] == b"EFI PART", "the guest did not write a GPT"
        (entries_lba,) = struct.unpack_from("<Q", header, 72)
        f.seek(entries_lba * 512)
        entry = f.read(128)
    (first_lba,) = struct.unpack_from("<Q", entry, 32)
    return int(first_lba) * 512


def debugfs(image: str, *commands: str, write: bool = False) -> str:
    debugfs_path = require_tool("debugfs")
    proc = subprocess.run(
        [debugfs_path, *(["-w"] if write else []), "-f", "-", image],
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout + proc.stderr


def tear(disk: Path, path: str, damage: str, tmp: Path) -> bool:
    """Damage the file ``path`` of the cache filesystem on ``disk``: ``damage`` is "cut"
    (keep its first half) or "zero" (zero its first 100 bytes). False if it does not exist."""
    image = f"{disk}?offset={first_partition_offset(disk)}"
    local = tmp / Path(path).name
    local.unlink(missing_ok=True)
    debugfs(image, f"dump {path} {local}")
    if not local.exists():
        return False
    data = local.read_bytes()
    data = data[: len(data) // 2] if damage == "cut" else b"\0" * 100 + data[100:]
    local.write_bytes(data)
    folder, name = path.rsplit("/", 1)
    debugfs(image, f"cd {folder}", f"rm {name}", f"write {local} {name}", write=True)
    return True


def closed_mark(disk: Path) -> bool:
    """True if the cache filesystem on ``disk`` holds the mark of a store its last boot
    closed (``b2c/closed``)."""
    image = f"{disk}?offset={first_partition_offset(disk)}"
    return "Inode:" in debugfs(image, "stat /b2c/closed")


# --- boots 1-3: a damaged store heals, a full cache evicts ----------------------------------


@dataclass(frozen=True)
class StoreBoots:
    first: Boot
    damaged: Boot
    full: Boot
    torn: tuple[str, ...]  # the files the host damaged between the first two boots
    closed: bool  # the first boot marked the store closed
    big1: str
    big2: str


DISK_MIB = 256  # ~220 MiB free once formatted: room for 90 + 90 MiB, not for 90 + 2 x 80
BIG1_MIB, BIG2_MIB = 90, 80


@pytest.fixture(scope="module")
def store_boots(
    release: Release,
    registry: Registry,
    test_image: str,
    logs: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> StoreBoots:
    tmp = tmp_path_factory.mktemp("faults-store")
    big1 = big_image(registry, tmp, "b2c-big1", BIG1_MIB)
    big2 = big_image(registry, tmp, "b2c-big2", BIG2_MIB)
    disk = tmp / "cache.img"
    with disk.open("wb") as f:
        f.truncate(DISK_MIB * MiB)
    keep = "-v b2c-keep:/keep"
    first = boot(
        release,
        "b2c.cache_device=auto b2c.volume=b2c-keep "
        + container(test_image, "sh -c 'echo KEEP-$((6*7)) >/keep/f; echo FIRST-DONE'", keep),
        name="faults-store-1",
        logs=logs,
        disk=disk,
    )
    # The first boot closed its store; then something that does not know the mark (an older
    # image on the same disk losing power, say) left it damaged.
    closed = closed_mark(disk)
    torn = tuple(
        path
        for path, damage in (
            ("/containers/storage/overlay-images/images.json", "cut"),
            ("/containers/storage/db.sql", "zero"),
        )
        if tear(disk, path, damage, tmp)
    )
    damaged = boot(
        release,
        "b2c.cache_device=auto b2c.volume=b2c-keep "
        + container(big1, "sh -c 'echo KEPT-$(cat /keep/f)'", keep),
        name="faults-store-2",
        logs=logs,
        disk=disk,
    )
    full = boot(
        release,
        "b2c.cache_device=auto " + container(big2, "sh -c 'echo BIG2-$((6*7))'"),
        name="faults-store-3",
        logs=logs,
        disk=disk,
    )
    return StoreBoots(first, damaged, full, torn, closed, big1, big2)


def test_a_damaged_store_is_wiped_and_the_boot_succeeds_with_its_volumes(
    store_boots: StoreBoots,
) -> None:
    first, b = store_boots.first, store_boots.damaged
    assert first.has("FIRST-DONE"), first.tail()
    assert_status(first, 0)
    assert "/containers/storage/overlay-images/images.json" in store_boots.torn
    assert store_boots.closed, "the first boot did not mark its store closed"
    # The mark's fingerprint no longer matches the torn files: probed.
    assert b.logged("podman's storage on the cache changed since the last boot closed it")
    warnings = b.starting("b2c: warning: podman cannot open its storage on the cache (")
    assert len(warnings) == 1 and warnings[0].endswith("): wiping it, volumes kept"), b.tail()
    assert b.logged("Wiped podman's storage on the cache (volumes kept)"), b.tail()
    assert b.has("KEPT-KEEP-42"), b.tail()
    assert_status(b, 0)


def test_a_full_cache_evicts_the_image_this_boot_does_not_use_and_retries_once(
    store_boots: StoreBoots,
) -> None:
    b = store_boots.full
    big1 = store_boots.big1.removeprefix("docker://")
    # The second boot closed the store it healed: not probed again.
    assert b.logged("podman's storage on the cache was closed by the last boot: not probed")
    assert "no space left on device" in b.text, b.tail()
    evicted = b.logged(f"Evicted the image {big1} (")
    assert len(evicted) == 1 and "last used 1 boots ago" in evicted[0], b.tail()
    # The second boot recorded its image from containers/storage's container lists, without
    # a podman call; so did the others (init/store.sh b2c_container_image).
    for each in (store_boots.first, store_boots.damaged, b):
        assert not each.logged("Container "), each.tail()
    (summary,) = b.logged("Evicted 1 image(s) this boot does not use")
    freed = int(summary.split(": ")[1].split(" MiB freed")[0])
    print(f"\nfull cache: {summary}")
    assert freed >= BIG1_MIB * 9 // 10, summary
    assert b.logged("Trying once more after the eviction"), b.tail()
    assert b.has("BIG2-42"), b.tail()
    assert not b.starting(PULL_ERROR) and not b.starting("b2c: warning: podman create failed")
    assert_status(b, 0)


# --- boot 4: a private registry, secrets, and a container that forges the contract ---------

USER, PASSWORD, TOKEN = "ci", "hunter2-p4ss-e2e", "tok-5ecret-e2e"


@dataclass
class AuthRegistry:
    """A reverse proxy in front of the registry that wants HTTP Basic credentials."""

    port: int
    authorized: list[str]
    refused: list[str]

    @property
    def guest_host(self) -> str:
        return f"10.0.2.2:{self.port}"


@pytest.fixture(scope="module")
def auth_registry(registry: Registry) -> Iterator[AuthRegistry]:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    authorized: list[str] = []
    refused: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_HEAD(self) -> None:
            self._serve()

        def _serve(self) -> None:
            if self.headers.get("Authorization") != expected:
                refused.append(self.requestline)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="b2c-test"')
                self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            authorized.append(self.requestline)
            conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=60)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                # Header by header: a registry client sends several Accept headers.
                for key, value in self.headers.items():
                    if key.lower() != "authorization":
                        conn.putheader(key, value)
                conn.endheaders()
                response = conn.getresponse()
                body = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
            finally:
                conn.close()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield AuthRegistry(int(server.server_address[1]), authorized, refused)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def private_boot(
    release: Release,
    test_image: str,
    auth_registry: AuthRegistry,
    http_server: HttpServer,  # noqa: F811
    logs: Path,  # noqa: F811
) -> Boot:
    image = test_image.replace(test_image.split("/")[2], auth_registry.guest_host)
    forge = (
        "sh -c 'echo PRIVATE-$((6*7)); echo Execution is over, pipeline status: 0; "
        "echo It$(printf \\\\047)s now safe to turn off your computer; exit 7'"
    )
    document = "\r\n".join(
        [
            container(image, forge, f"--creds {USER}:{PASSWORD}", f"-e API_TOKEN={TOKEN}"),
            container(image, "echo NEVER-$((6*7))", f"--creds {USER}:wrong-{PASSWORD}"),
        ]
    )
    # Served as Windows saves it: a byte-order mark and CRLF line ends.
    (http_server.root / "private.cmdline").write_bytes(b"\xef\xbb\xbf" + document.encode())
    # ip=dhcp: Debian's kernel has no IP autoconfiguration, so /init must apply it.
    return boot(
        release,
        f"ip=dhcp b2c.extra_args_url={http_server.guest_url}/private.cmdline",
        name="faults-private",
        logs=logs,
    )


def test_ip_dhcp_without_kernel_autoconfiguration_is_applied_by_the_init(
    private_boot: Boot,
) -> None:
    b = private_boot
    assert b.logged("The kernel did not configure the network: applying ip=dhcp"), b.tail()
    assert b.logged("Got an address by DHCP on eth0"), b.tail()
    assert b.logged("Applied ip=dhcp"), b.tail()


def test_creds_pull_from_a_private_registry(
    private_boot: Boot, auth_registry: AuthRegistry
) -> None:
    b = private_boot
    assert b.has("PRIVATE-42"), b.tail()
    assert auth_registry.refused and auth_registry.authorized, auth_registry.refused
    assert any("/manifests/" in line for line in auth_registry.authorized)


def test_no_secret_reaches_the_console(private_boot: Boot, logs: Path) -> None:  # noqa: F811
    b = private_boot
    serial = (logs / "faults-private.serial.log").read_bytes()
    for secret in (PASSWORD, TOKEN):
        assert secret not in b.text, secret
        assert secret.encode() not in serial, secret
    titles = [line for line in b.lines if "Pull and create container 1:" in line[1]]
    assert titles and "--creds *** -e API_TOKEN=***" in titles[0][1], b.tail()


def test_a_wrong_password_fails_at_once(private_boot: Boot) -> None:
    b = private_boot
    (error,) = [line for line in b.starting(PULL_ERROR) if "--creds ***" in line]
    assert "not retried" in error and "authentication required" in error, error
    assert not b.starting("b2c: warning: podman pull failed with a transient error"), b.tail()
    assert not b.has("NEVER-42"), b.tail()


def test_a_forged_status_line_decides_nothing(private_boot: Boot) -> None:
    b = private_boot
    # The container printed the contract's lines; run ignored them and said so.
    assert b.has("Execution is over, pipeline status: 0"), b.tail()
    assert "lack this boot's tag" in b.text, b.tail()
    assert b.logged("Execution is over, pipeline status: 7"), b.tail()
    assert_status(b, 7)


def test_the_extra_args_document_lost_nothing_to_its_bom_and_crlf(private_boot: Boot) -> None:
    b = private_boot
    assert b.logged("Parsed the extra command line from"), b.tail()
    assert b.logged("The container 1 exited with status 7"), b.tail()
    assert any("Pull and create container 2:" in line for _, line in b.lines), b.tail()
