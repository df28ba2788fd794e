"""End to end: the runtime's options under QEMU (TCG), against a real registry on 127.0.0.1.

Each boot runs `b2c-builder run` in a subprocess; the verdicts come only from what the guest
printed (whole lines written by containers, the init's log and error lines, `Execution is
over, pipeline status: N`) and from the exit code `b2c-builder run` derives from them. The
kernel echoes its command line on the console, so markers are matched as whole lines, never
as substrings. Several cases share a boot when one cannot hide another's verdict; each boot
is a module fixture and each case a test reading it.
"""

from __future__ import annotations

import http.client
import http.server
import json
import lzma
import re
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from b2c_builder.build.cpio import read_initrd
from tests.conftest import ROOT, Release, require_root, require_tool
from tests.oci import busybox_layer, make_layout
from tests.registry import Registry

pytestmark = [pytest.mark.qemu, pytest.mark.network]

TLS = "--tls-verify=false"
MEMORY = "1G"
# x86's COMMAND_LINE_SIZE is 2048, with room for the console= and panic= that run prepends.
CMDLINE_MAX = 1950
BOOT_TIMEOUT = 300  # seconds per boot; a healthy one takes 40-90 s under TCG
PULL_ERROR = "b2c: error: could not pull or create the container"
STATUS_RE = re.compile(r"Execution is over, pipeline status: (\d+)")
STAMPED_RE = re.compile(r"\[(\d+\.\d+)\]: (.*)")


# --- booting ------------------------------------------------------------------------------


def _clean(line: str) -> str:
    return line.replace("\r", "").strip()


@dataclass(frozen=True)
class Boot:
    """One `b2c-builder run`: its exit code and every output line, timed from QEMU's start."""

    name: str
    code: int
    lines: tuple[tuple[float, str], ...]  # (seconds since QEMU started, raw line)
    duration: float  # seconds, the whole `b2c-builder run`

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def tail(self, n: int = 120) -> str:
        return f"--- console of boot {self.name!r} (last {n} lines) ---\n" + "\n".join(
            _clean(line) for _, line in self.lines[-n:]
        )

    def has(self, line: str) -> bool:
        """``line`` was printed as a whole line."""
        return any(_clean(raw) == line for _, raw in self.lines)

    def starting(self, prefix: str) -> list[str]:
        """The whole lines starting with ``prefix``, in order."""
        return [c for _, raw in self.lines if (c := _clean(raw)).startswith(prefix)]

    def time_of(self, line: str) -> float | None:
        """When ``line`` was first printed as a whole line (seconds since QEMU started)."""
        return next((t for t, raw in self.lines if _clean(raw) == line), None)

    def time_of_substring(self, text: str) -> float | None:
        return next((t for t, raw in self.lines if text in raw), None)

    def status(self) -> int | None:
        """The pipeline status the guest printed, if it printed exactly one."""
        found = [m for line in self.logged("Execution is over") if (m := STATUS_RE.fullmatch(line))]
        return int(found[0][1]) if len(found) == 1 else None

    def logged(self, message: str) -> list[str]:
        """The init's stamped log lines (``[12.34]: message...``) starting with ``message``."""
        return [body for _, body in self._stamped() if body.startswith(message)]

    def uptime_of(self, message: str) -> float | None:
        """The guest's own uptime stamp of its first log line starting with ``message``."""
        return next((t for t, body in self._stamped() if body.startswith(message)), None)

    def _stamped(self) -> Iterator[tuple[float, str]]:
        for _, raw in self.lines:
            if m := STAMPED_RE.fullmatch(_clean(raw)):
                yield float(m[1]), m[2]


def boot(
    release: Release,
    append: str,
    *,
    name: str,
    logs: Path,
    disk: Path | None = None,
    initrds: tuple[Path, ...] = (),
    qemu_args: tuple[str, ...] = (),
    timeout: int = BOOT_TIMEOUT,
) -> Boot:
    """Boot the release with ``append`` and record its output line by line, with times.

    ``initrds`` are unpacked after the release's image and modules archive."""
    require_tool("qemu-system-x86_64")
    assert len(append) < CMDLINE_MAX, f"{len(append)} bytes: the kernel would truncate it"
    cmd = [
        sys.executable, "-m", "b2c_builder", "run",
        "--kernel", str(release.kernel),
        "--initrd", str(release.image),
        "--initrd", str(release.modules),
        *(arg for initrd in initrds for arg in ("--initrd", str(initrd))),
        "--accel", "tcg",
        "--memory", MEMORY,
        "--timeout", str(timeout),
        "--serial-log", str(logs / f"{name}.serial.log"),
        "--append", append,
        # The guest's own handling of every line is what these boots test.
        "--no-check",
    ]  # fmt: skip
    if disk is not None:
        cmd += ["--disk", str(disk)]
    cmd += [f"--qemu-arg={arg}" for arg in qemu_args]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    killer = threading.Timer(timeout + 60, proc.kill)  # b2c-builder's own timeout failed
    killer.start()
    raw_lines: list[tuple[float, str]] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            raw_lines.append(
                (time.monotonic() - start, raw.decode(errors="backslashreplace").rstrip("\n"))
            )
        code = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    duration = time.monotonic() - start
    # Re-base the times on QEMU's start: `b2c-builder run` logs "$ qemu-system-..." then.
    qemu_start = next((t for t, line in raw_lines if "$ qemu-system-" in line), 0.0)
    lines = tuple((t - qemu_start, line) for t, line in raw_lines)
    (logs / f"{name}.output.log").write_text("\n".join(line for _, line in raw_lines))
    return Boot(name, code, lines, duration)


def container(image: str, command: str, *options: str, key: str = "b2c.container") -> str:
    """A ``key="--tls-verify=false [options] image command"`` parameter."""
    words = " ".join([TLS, *options, image, command])
    assert '"' not in words, "the kernel has no escape for a double quote inside a value"
    return f'{key}="{words}"'


def seconds(t: float | None) -> str:
    return "never" if t is None else f"{t:.1f}s"


def assert_status(result: Boot, status: int) -> None:
    assert result.status() == status, result.tail()
    assert result.code == status, result.tail()


# --- fixtures: a second image, an HTTP server, an NTP server --------------------------------


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("boots")


@dataclass(frozen=True)
class Image:
    ref: str  # as the guest names it
    name: str  # the registry's repository
    config: str  # blob digests
    layers: tuple[str, ...]


@pytest.fixture(scope="module")
def cache_image(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """A busybox image with its own layer, so that its blob downloads can be counted apart."""
    busybox = Path(require_tool("busybox")).resolve()
    layer = busybox_layer(busybox, {"etc/b2c-cache-image": b"only in the cache test's image\n"})
    layout = make_layout(tmp_path_factory.mktemp("oci-cache") / "layout", layer, cmd=["/bin/sh"])
    registry.push(layout, "b2c-cache")
    # make_layout writes one manifest; skopeo copies its blobs unchanged (same digests).
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    algo, digest = entry["digest"].split(":")
    manifest = json.loads((layout / "blobs" / algo / digest).read_text())
    return Image(
        f"docker://{registry.guest_host}/b2c-cache:latest",
        "b2c-cache",
        manifest["config"]["digest"],
        tuple(layer["digest"] for layer in manifest["layers"]),
    )


def blob_fetches(registry: Registry, name: str, digests: tuple[str, ...]) -> int:
    """Downloads (GET) of these blobs of the repository ``name`` in the registry's access log."""
    needles = [f'"GET /v2/{name}/blobs/{digest} ' for digest in digests]
    text = registry.log_path.read_text(errors="replace")
    return sum(any(n in line for n in needles) for line in text.splitlines())


@dataclass
class HttpServer:
    port: int
    root: Path
    requests: list[str]

    @property
    def guest_url(self) -> str:
        return f"http://10.0.2.2:{self.port}"


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """Python's http.server on 127.0.0.1 (the guest's 10.0.2.2), recording request lines."""
    root = tmp_path_factory.mktemp("www")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.requestline)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpServer(int(server.server_address[1]), root, requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


PROXIED_HOST = "b2c-proxied.invalid"  # resolves nowhere: only the proxy can answer for it
HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "content-length"}
)  # fmt: skip


@dataclass
class Proxy:
    port: int
    requests: list[str]

    @property
    def guest_url(self) -> str:
        return f"http://10.0.2.2:{self.port}"


@pytest.fixture(scope="module")
def proxy(http_server: HttpServer) -> Iterator[Proxy]:
    """A plain-HTTP forward proxy: the guest's 10.0.2.2 is forwarded to 127.0.0.1, and
    PROXIED_HOST to the HTTP server. CONNECT (HTTPS) is refused (501)."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.requestline)

        def do_GET(self) -> None:
            self._forward()

        def do_HEAD(self) -> None:
            self._forward()

        def _forward(self) -> None:
            url = urlsplit(self.path)
            if url.scheme != "http" or url.hostname not in ("10.0.2.2", PROXIED_HOST):
                self.send_error(502, "not a request this proxy forwards")
                return
            port = http_server.port if url.hostname == PROXIED_HOST else url.port or 80
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                path = url.path + (f"?{url.query}" if url.query else "")
                conn.putrequest(
                    self.command, path or "/", skip_host=True, skip_accept_encoding=True
                )
                # Header by header: a registry client sends several Accept headers.
                for key, value in self.headers.items():
                    if key.lower() not in HOP_HEADERS:
                        conn.putheader(key, value)
                conn.endheaders()
                response = conn.getresponse()
                body = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_HEADERS:
                        self.send_header(key, value)
                length = response.getheader("Content-Length")
                self.send_header("Content-Length", str(len(body)) if body else length or "0")
                self.end_headers()
                self.wfile.write(body)
            finally:
                conn.close()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Proxy(int(server.server_address[1]), requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)


def sntp_query(host: str, port: int = 123, timeout: float = 1.0) -> tuple[int, int, float]:
    """Ask an SNTP server: (leap indicator, stratum, its transmit time as Unix seconds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(b"\x23" + b"\0" * 47, (host, port))  # LI 0, version 4, mode 3 (client)
        data, _ = sock.recvfrom(512)
    secs, fraction = struct.unpack("!II", data[40:48])
    return data[0] >> 6, data[1], secs - NTP_EPOCH_OFFSET + fraction / 2**32


@pytest.fixture(scope="module")
def ntp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Debian's chronyd serving its own clock on 127.0.0.1:123, never touching the host's."""
    chronyd = require_tool("chronyd")
    require_root("an NTP server on 127.0.0.1:123")
    workdir = tmp_path_factory.mktemp("chrony")
    config = workdir / "chrony.conf"
    config.write_text(
        "local stratum 8\n"  # serve the local clock as a synchronised source
        "allow 127.0.0.1\n"
        "bindaddress 127.0.0.1\n"
        "port 123\n"
        "cmdport 0\n"
        f"pidfile {workdir / 'chronyd.pid'}\n"
        f"driftfile {workdir / 'drift'}\n"
    )
    log_path = workdir / "chronyd.log"
    with log_path.open("wb") as log:
        # -d: foreground, -x: never adjust the host's clock, -u root: no privilege drop.
        proc = subprocess.Popen(
            [chronyd, "-d", "-x", "-u", "root", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"chronyd exited: {log_path.read_text()}"
            try:
                leap, stratum, when = sntp_query("127.0.0.1")
            except OSError:
                assert time.monotonic() < deadline, (
                    f"chronyd never answered: {log_path.read_text()}"
                )
                time.sleep(0.3)
                continue
            assert leap != 3 and stratum == 8, (leap, stratum)
            assert abs(when - time.time()) < 5
            break
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- a kernel module that the modules archive lacks, for b2c.insmods ---------------------------

EXTRA_MODULE = "dummy"  # no dependencies; loading it creates the interface dummy0
EXTRA_MODULE_PATH = "kernel/drivers/net/dummy.ko"


def kernel_version(release: Release) -> str:
    return release.kernel.name.removeprefix("linux-").removesuffix(".linux_amd64")


def kernel_deb(release: Release, version: str) -> Path:
    """The release's linux-image package, from the build's download cache."""
    require_tool("dpkg-deb")
    for blob in sorted((release.cache / "by-sha256").glob("*/*")):
        if blob.stat().st_size < 10 << 20 or blob.read_bytes()[:8] != b"!<arch>\n":
            continue
        fields = subprocess.run(
            ["dpkg-deb", "--field", str(blob), "Package"], capture_output=True, text=True
        )
        if fields.stdout.strip() == f"linux-image-{version}":
            return blob
    raise AssertionError(f"linux-image-{version} is not in the build cache {release.cache}")


def deb_member(deb: Path, pattern: str) -> bytes:
    """The contents of the one member of ``deb``'s data matching the tar ``pattern``."""
    tar = require_tool("tar")
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        out = subprocess.run(
            [tar, "-xO", "--wildcards", pattern], stdin=dpkg.stdout, capture_output=True
        )
    finally:
        assert dpkg.stdout is not None
        dpkg.stdout.close()
        dpkg.wait()
    assert out.returncode == 0 and out.stdout, out.stderr.decode(errors="replace")
    return out.stdout


@pytest.fixture(scope="module")
def module_initrd(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cpio adding dummy.ko and its modules.dep line over the release's modules archive.

    Every module of the archive is loaded at boot (b2c.modules), so b2c.insmods needs one
    from elsewhere: the same kernel package's, as the build would have shipped it.
    """
    cpio = require_tool("cpio")
    version = kernel_version(release)
    moddir = f"usr/lib/modules/{version}"
    (dep,) = (
        e for e in read_initrd(release.modules.read_bytes()) if e.name == f"{moddir}/modules.dep"
    )
    assert EXTRA_MODULE_PATH not in dep.data.decode(), "the archive already has the module"
    packed = deb_member(kernel_deb(release, version), f"*/modules/{version}/{EXTRA_MODULE_PATH}*")
    module = lzma.decompress(packed) if packed.startswith(b"\xfd7zXZ") else packed
    assert module.startswith(b"\x7fELF"), packed[:8]
    root = tmp_path_factory.mktemp("module-initrd")
    files = {f"{moddir}/modules.dep": dep.data + f"{EXTRA_MODULE_PATH}:\n".encode(),
             f"{moddir}/{EXTRA_MODULE_PATH}": module}  # fmt: skip
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    archive = root / "extra-module.cpio"
    with archive.open("wb") as out:
        subprocess.run(
            [cpio, "--quiet", "-o", "-H", "newc", "-R", "0:0"],
            input="\n".join(files).encode() + b"\n",
            stdout=out,
            cwd=root,
            check=True,
        )
    return archive


# --- boot 1: a service and a three-container pipeline without b2c.pipefail, a post container;
# b2c.hostname, b2c.insmods (and its alias), b2c.poweroff_delay, b2c.shutdown_cmd.


HOSTNAME = "b2c-e2e-host"
NO_SUCH_MODULE = "b2c_no_such_module"


@pytest.fixture(scope="module")
def pipeline_boot(release: Release, test_image: str, module_initrd: Path, logs: Path) -> Boot:
    # The service serves "SVC-42" (computed, so it is not on the command line) over HTTP on
    # the guest's loopback; a TERM trap lets `podman stop` end it at once.
    service = container(
        test_image,
        "sh -c 'mkdir /www; echo SVC-$((6*7)) >/www/s; trap exit TERM; "
        "httpd -f -p 8123 -h /www & wait'",
        key="b2c.service",
    )
    fetch = (
        "for i in 1 2 3 4 5 6 7 8 9 10; do r=$(wget -q -O - http://127.0.0.1:8123/s) && break; "
        "sleep 1; done; echo GOT-$r"
    )
    append = " ".join(
        [
            f"b2c.hostname={HOSTNAME}",
            f"b2c.insmods={EXTRA_MODULE}",
            f"b2c.modules={NO_SUCH_MODULE}",
            "b2c.poweroff_delay=1",
            "b2c.shutdown_cmd=\"sh -c 'echo SHUTDOWN-CMD-$((6*7)); poweroff -f'\"",
            service,
            # --uts=host: the init's host name, not the one podman gives a container.
            container(
                test_image,
                "sh -c 'echo PIPE-A; echo HOSTNAME-$(hostname); "
                f"grep -q ^{EXTRA_MODULE} /proc/modules && ip link show {EXTRA_MODULE}0 "
                "&& echo MODULE-LOADED'",
                "--uts=host",
            ),
            # --pid=host: /proc/1 is /init, whose mounts show where crun runs from.
            container(
                test_image,
                "sh -c 'echo PIPE-B; grep -F /usr/bin/crun /proc/1/mountinfo "
                "| sed s/^/CRUN-MOUNT:/; exit 5'",
                "--pid=host",
            ),
            container(test_image, f"sh -c 'echo PIPE-C; {fetch}'"),
            container(
                test_image,
                "sh -c 'echo POST-SAW-STATUS-$B2C_PIPELINE_STATUS; exit 7'",
                key="b2c.post_container",
            ),
        ]
    )
    return boot(release, append, name="pipeline", logs=logs, initrds=(module_initrd,))


def test_without_pipefail_every_container_runs_and_the_first_failure_is_the_status(
    pipeline_boot: Boot,
) -> None:
    b = pipeline_boot
    for marker in ("PIPE-A", "PIPE-B", "PIPE-C"):
        assert b.has(marker), f"{marker} missing\n{b.tail()}"
    times = [b.time_of(m) or 0.0 for m in ("PIPE-A", "PIPE-B", "PIPE-C")]
    assert times == sorted(times), times
    assert b.logged("The container 2 failed with status 5: going on"), b.tail()
    assert_status(b, 5)


def test_a_post_container_runs_after_a_failure_and_does_not_change_the_status(
    pipeline_boot: Boot,
) -> None:
    b = pipeline_boot
    assert b.has("POST-SAW-STATUS-5"), b.tail()
    assert b.logged("The post_container 1 exited with status 7"), b.tail()
    assert_status(b, 5)


def test_a_service_is_reachable_from_a_pipeline_container(pipeline_boot: Boot) -> None:
    b = pipeline_boot
    assert b.logged("Started the service 1"), b.tail()
    assert b.has("GOT-SVC-42"), b.tail()
    # Its TERM trap makes `podman stop` quick: the run did not wait for the 10 s kill.
    assert not b.starting("b2c: warning: could not stop the service"), b.tail()


def test_crun_runs_from_a_read_only_ramfs_mount(pipeline_boot: Boot) -> None:
    """What crun's is_self_cloned() needs to run without copying itself into a memfd and
    executing three times: a read-only mount of a file that does not answer F_GET_SEALS (not
    the initramfs's tmpfs). Every container of the boot ran through that crun."""
    b = pipeline_boot
    (line,) = b.starting("CRUN-MOUNT:")
    # mountinfo(5): ID PARENT MAJ:MIN ROOT MOUNT-POINT MOUNT-OPTIONS ... - TYPE SOURCE ...
    fields, _, tail = line.removeprefix("CRUN-MOUNT:").partition(" - ")
    assert fields.split()[4] == "/usr/bin/crun", line
    assert "ro" in fields.split()[5].split(","), line
    assert tail.split()[0] == "ramfs", line
    assert not [w for w in b.starting("b2c: warning:") if "crun" in w], b.tail()


def test_hostname_names_the_machine(pipeline_boot: Boot) -> None:
    b = pipeline_boot
    assert b.has(f"HOSTNAME-{HOSTNAME}"), b.tail()


def test_insmods_and_its_alias_load_modules_with_modprobe(pipeline_boot: Boot) -> None:
    b = pipeline_boot
    assert b.logged(f"Loaded the kernel module {EXTRA_MODULE}"), b.tail()
    assert b.has("MODULE-LOADED"), b.tail()  # in /proc/modules, its interface exists
    # b2c.modules adds to the list; a module that does not exist is a warning, not an end.
    assert b.has(f"b2c: warning: could not load the kernel module {NO_SUCH_MODULE}"), b.tail()
    assert b.has("PIPE-C"), b.tail()


def test_poweroff_delay_waits_then_shutdown_cmd_powers_off(pipeline_boot: Boot) -> None:
    b = pipeline_boot
    waiting = b.uptime_of("Waiting 1s before powering off (b2c.poweroff_delay)")
    safe = b.uptime_of("It's now safe to turn off your computer")
    assert waiting is not None and safe is not None, b.tail()
    assert safe - waiting >= 1.0, (waiting, safe)
    # The command ran (it printed), and powered off: /init did not fall back to its own.
    assert b.has("SHUTDOWN-CMD-42"), b.tail()
    assert not b.starting("b2c: error: b2c.shutdown_cmd"), b.tail()
    assert_status(b, 5)


# --- boot 2: b2c.pipefail, and hostile values in post containers ------------------------------


HOSTILE_ECHO = "LIT-1:$(touch /canary-1) LIT-2:`touch /canary-2` LIT-3:x; touch /canary-3"


@pytest.fixture(scope="module")
def pipefail_boot(release: Release, test_image: str, logs: Path) -> Boot:
    post = partial(container, key="b2c.post_container")
    append = " ".join(
        [
            "b2c.pipefail",
            container(test_image, "sh -c 'echo PIPE-A'"),
            container(test_image, "sh -c 'echo PIPE-B; exit 5'"),
            container(test_image, "sh -c 'echo PIPE-C'"),
            # Substitutions before the image: podman gets them as literal arguments and
            # refuses "$(poweroff" as an image name. Run by a shell, they would power off
            # the VM (no status line) or leave /canary-subst.
            f'b2c.post_container="$(poweroff -f) $(touch /canary-subst) {TLS} {test_image} '
            'echo HOSTILE-RAN"',
            # As arguments of echo (no shell in the container either): printed literally.
            post(test_image, f"echo {HOSTILE_ECHO}"),
            # The init's root seen from a container: /init proves it is the right one.
            post(
                test_image,
                "sh -c 'test -f /host/init && echo HOST-ROOT-SEEN; "
                "for f in /host/canary*; do test -e $f && echo FOUND:$f; done; "
                "echo CANARY-CHECK-DONE'",
                "-v /:/host",
            ),
        ]
    )
    return boot(release, append, name="pipefail", logs=logs)


def test_pipefail_stops_the_pipeline_at_the_first_failure(pipefail_boot: Boot) -> None:
    b = pipefail_boot
    assert b.has("PIPE-A") and b.has("PIPE-B"), b.tail()
    assert not b.has("PIPE-C"), b.tail()
    assert b.logged("The container 2 failed with status 5: stopping the pipeline"), b.tail()
    assert_status(b, 5)


def test_a_hostile_command_line_reaches_podman_literally(pipefail_boot: Boot) -> None:
    b = pipefail_boot
    # The container with substitutions before the image was refused by podman, verbatim.
    refused = [line for line in b.starting(PULL_ERROR) if "$(poweroff -f)" in line]
    assert refused and "$(touch /canary-subst)" in refused[0], b.tail()
    assert not b.has("HOSTILE-RAN"), b.tail()
    # The others printed their arguments as written.
    assert b.has(HOSTILE_ECHO), b.tail()
    # Nothing was created in the init's root.
    assert b.has("HOST-ROOT-SEEN") and b.has("CANARY-CHECK-DONE"), b.tail()
    assert b.starting("FOUND:") == [], b.tail()
    # The $(poweroff -f) did not run either: the boot reached its end and its status.
    assert_status(b, 5)


# --- boots 3 and 4: b2c.cache_device=auto on a blank disk, then a boot that pulls nothing;
# the second boot's containers also call poweroff(2) and reboot(2). The first boot has
# b2c.swap; both have a lasting b2c.volume and one that expires at the pipeline's end.


@dataclass(frozen=True)
class Fetches:
    """Blob downloads during one boot."""

    layers: int  # of the cache image's layers
    config: int  # of its config blob
    any: int  # of any blob of any image


@dataclass(frozen=True)
class CacheBoots:
    first: Boot
    second: Boot
    first_fetches: Fetches
    second_fetches: Fetches


CACHE_MARKER = "CACHE-MARKER-42"
VOLUMES = "b2c.volume=b2c-keep b2c.volume=b2c-scratch,expiration=pipeline_end"
VOLUME_MOUNTS = ("-v b2c-keep:/keep", "-v b2c-scratch:/scratch")
SWAP_RE = re.compile(r"SWAP-file-(\d+)")  # a /proc/swaps line: type and size in KiB


@pytest.fixture(scope="module")
def cache_boots(
    release: Release,
    registry: Registry,
    cache_image: Image,
    logs: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> CacheBoots:
    image = cache_image.ref
    disk = tmp_path_factory.mktemp("disk") / "cache.img"
    with disk.open("wb") as f:
        f.truncate(2 << 30)  # 2 GiB, sparse and blank: no partition table

    def counts() -> tuple[int, int, int]:
        return (
            blob_fetches(registry, cache_image.name, cache_image.layers),
            blob_fetches(registry, cache_image.name, (cache_image.config,)),
            registry.blob_fetches(),
        )

    def fetches_since(before: tuple[int, int, int]) -> Fetches:
        return Fetches(*(now - then for now, then in zip(counts(), before, strict=True)))

    writer = container(
        image,
        "sh -c 'echo CACHE-MARKER-$((6*7)); echo KEEP-$((6*7)) >/keep/f; "
        "echo SCRATCH-$((6*7)) >/scratch/f; "
        "while read name type size rest; do echo SWAP-$type-$size; done </proc/swaps'",
        *VOLUME_MOUNTS,
    )
    before = counts()
    # A post container failing after a successful pipeline must leave its status at 0.
    failing_post = container(image, "sh -c 'exit 7'", key="b2c.post_container")
    first = boot(
        release,
        f"b2c.cache_device=auto b2c.swap=64M {VOLUMES} {writer} {failing_post}",
        name="cache-1",
        logs=logs,
        disk=disk,
    )
    first_fetches = fetches_since(before)
    before = counts()
    reader = container(
        image,
        "sh -c 'echo CACHE-MARKER-$((6*7)); echo KEPT-$(cat /keep/f); "
        "echo SCRATCH-HELD-$(cat /scratch/f 2>/dev/null)'",
        *VOLUME_MOUNTS,
    )
    append = " ".join(
        [
            "b2c.cache_device=auto",
            VOLUMES,
            "b2c.reboot_cmd=\"sh -c 'echo REBOOT-CMD-$((6*7)); reboot -f'\"",
            reader,
            # poweroff(2) in a container's PID namespace kills its init with SIGINT: 130.
            container(image, "poweroff -f"),
            container(image, "sh -c 'echo MODE-$B2C_PIPELINE_SHUTDOWN_MODE; reboot -f'"),
            container(
                image,
                "sh -c 'echo POST-MODE-$B2C_PIPELINE_SHUTDOWN_MODE'",
                key="b2c.post_container",
            ),
        ]
    )
    second = boot(release, append, name="cache-2", logs=logs, disk=disk)
    return CacheBoots(first, second, first_fetches, fetches_since(before))


def test_cache_device_auto_formats_a_blank_disk_and_the_next_boot_pulls_no_layer(
    cache_boots: CacheBoots,
) -> None:
    first, second = cache_boots.first, cache_boots.second
    t1, t2 = (seconds(b.time_of(CACHE_MARKER)) for b in (first, second))
    print(
        f"\nfirst container output after QEMU start: empty cache {t1}, cached image {t2} "
        f"(the boots took {first.duration:.1f}s and {second.duration:.1f}s); "
        f"blob downloads: {cache_boots.first_fetches}, then {cache_boots.second_fetches}"
    )
    assert first.logged("Formatting /dev/vda1 as ext4, labelled B2C_CACHE"), first.tail()
    assert first.logged("Mounted the cache partition /dev/vda1 on /storage"), first.tail()
    assert first.has(CACHE_MARKER), first.tail()
    assert_status(first, 0)
    assert cache_boots.first_fetches.layers >= 1, "the first boot did not download the layer"

    assert not second.logged("Formatting"), second.tail()
    assert second.logged("Mounted the cache partition /dev/vda1 on /storage"), second.tail()
    assert second.has(CACHE_MARKER), second.tail()
    assert cache_boots.second_fetches.layers == 0, second.tail()


def test_a_failing_post_container_leaves_a_successful_pipeline_at_0(
    cache_boots: CacheBoots,
) -> None:
    b = cache_boots.first
    assert b.logged("The container 1 exited with status 0"), b.tail()
    assert b.logged("The post_container 1 exited with status 7"), b.tail()
    assert_status(b, 0)


@pytest.mark.xfail(
    strict=True,
    reason="podman run (or create) --pull=always downloads the image's config blob again on "
    "every pull (its layers are reused); --pull=newer would not",
)
def test_the_next_boot_downloads_no_blob_at_all(cache_boots: CacheBoots) -> None:
    assert cache_boots.first_fetches.config >= 1
    assert cache_boots.second.has(CACHE_MARKER), cache_boots.second.tail()
    assert cache_boots.second_fetches.any == 0, cache_boots.second_fetches


def test_poweroff_and_reboot_from_containers_select_the_final_action(
    cache_boots: CacheBoots,
) -> None:
    b = cache_boots.second
    assert b.logged("The container 2 exited with status 130"), b.tail()
    assert b.has("MODE-poweroff"), b.tail()  # what the next container was told
    assert b.logged("The container 3 exited with status 129"), b.tail()
    assert b.has("POST-MODE-reboot"), b.tail()
    assert b.logged("Rebooting the computer"), b.tail()
    assert b.logged("It's now safe to turn off your computer"), b.tail()
    assert_status(b, 130)  # the first failure


def test_reboot_cmd_reboots(cache_boots: CacheBoots) -> None:
    b = cache_boots.second
    assert b.has("REBOOT-CMD-42"), b.tail()
    assert not b.starting("b2c: error: b2c.reboot_cmd"), b.tail()


def test_swap_is_a_file_on_the_cache_and_is_released(cache_boots: CacheBoots) -> None:
    first, second = cache_boots.first, cache_boots.second
    assert first.logged(f"Using a swap file of {64 << 20} bytes"), first.tail()
    sizes = [int(m[1]) for line in first.starting("SWAP-") if (m := SWAP_RE.fullmatch(line))]
    # 64 MiB less the header page, in KiB; nothing else swaps.
    assert len(sizes) == 1 and 60 << 10 < sizes[0] <= 64 << 10, first.starting("SWAP-")
    assert not first.starting("b2c: warning: could not stop swapping"), first.tail()
    assert not second.logged("Using a swap file"), second.tail()


def test_volumes_last_across_boots_unless_they_expire_at_the_pipeline_end(
    cache_boots: CacheBoots,
) -> None:
    first, second = cache_boots.first, cache_boots.second
    for b in (first, second):
        assert b.logged("Set up the volume b2c-keep"), b.tail()
        assert b.logged("Set up the volume b2c-scratch"), b.tail()
    assert first.has(CACHE_MARKER), first.tail()  # it wrote into both volumes
    assert second.has("KEPT-KEEP-42"), second.tail()
    assert second.has("SCRATCH-HELD-"), second.tail()  # empty: a new volume


# --- boot 5: b2c.ntp_peer, b2c.extra_args_url, an unreachable registry -----------------------

UNREACHABLE = "docker://10.0.2.2:1/b2c-test:latest"
UNREACHABLE_BOUND = 60.0  # seconds from starting to pull to giving up


@pytest.fixture(scope="module")
def network_boot(
    release: Release, test_image: str, http_server: HttpServer, ntp_server: None, logs: Path
) -> Boot:
    extra = http_server.root / "extra.cmdline"
    extra.write_text(container(test_image, "sh -c 'echo EXTRA-ARGS-$((6*7))'") + "\n")
    append = " ".join(
        [
            "b2c.ntp_peer=10.0.2.2",
            f"b2c.extra_args_url={http_server.guest_url}/extra.cmdline",
            container(test_image, "sh -c 'echo GUEST-YEAR-$(date -u +%Y)'"),
            container(UNREACHABLE, "echo NEVER"),
        ]
    )
    return boot(
        release,
        append,
        name="network",
        logs=logs,
        # The guest's clock starts 25 years off; only NTP can bring it back.
        qemu_args=("-rtc", "base=2001-01-01T00:00:00"),
    )


def test_ntp_peer_sets_the_clock_before_the_pipeline(network_boot: Boot) -> None:
    b = network_boot
    # The clock really started in 2001: the guest stamped its clock section's start with it.
    (start,) = (m for _, raw in b.lines if (m := re.search(r"section_start:(\d+):clock\[", raw)))
    assert time.gmtime(int(start[1])).tm_year == 2001, b.tail()
    assert b.logged("Set the clock from the NTP server 10.0.2.2"), b.tail()
    assert b.has(f"GUEST-YEAR-{time.gmtime().tm_year}"), b.tail()


def test_extra_args_url_adds_a_container(network_boot: Boot, http_server: HttpServer) -> None:
    b = network_boot
    assert "GET /extra.cmdline HTTP/1.1" in http_server.requests, http_server.requests
    assert b.logged("Parsed the extra command line from"), b.tail()
    assert b.has("EXTRA-ARGS-42"), b.tail()
    # Appended: it runs after the command line's containers.
    assert b.logged("The container 3 exited with status 0"), b.tail()


def test_an_unreachable_registry_fails_the_container_within_a_bound(network_boot: Boot) -> None:
    b = network_boot
    started = b.time_of_substring(":pull_container_2[")
    failed = [line for line in b.starting(PULL_ERROR) if UNREACHABLE in line]
    assert started is not None and failed, b.tail()
    gave_up = b.time_of(failed[0])
    assert gave_up is not None
    print(f"\nunreachable registry: gave up after {gave_up - started:.1f}s")
    assert gave_up - started < UNREACHABLE_BOUND, b.tail()
    status = b.status()
    assert status not in (None, 0), b.tail()
    assert b.code == status, b.tail()


# --- boot 6: a malformed value ---------------------------------------------------------------


def test_a_malformed_value_is_an_error_and_nothing_runs(
    release: Release, test_image: str, logs: Path
) -> None:
    append = "b2c.poweroff_delay=abc " + container(test_image, "sh -c 'echo RAN-$((6*7))'")
    b = boot(release, append, name="malformed", logs=logs, timeout=180)
    errors = b.starting("b2c: error: b2c.poweroff_delay")
    assert errors and "'abc'" in errors[0], b.tail()
    assert b.has("b2c: error: the kernel command line is invalid: nothing was run"), b.tail()
    assert not b.has("RAN-42"), b.tail()
    assert "Kernel panic" not in b.text, b.tail()
    assert_status(b, 2)
    assert b.duration < 120, b.tail()


# --- boot 7: b2c.iface with a static address, a 9p b2c.filesystem as a b2c.volume, b2c.proxy


STATIC_ADDRESS = "10.0.2.42"  # not the 10.0.2.15 that QEMU's DHCP server would give


@dataclass(frozen=True)
class ShareBoot:
    boot: Boot
    share: Path  # the host directory the guest mounted over 9p
    token: str  # what the test wrote there


@pytest.fixture(scope="module")
def share_boot(
    release: Release,
    test_image: str,
    http_server: HttpServer,
    proxy: Proxy,
    logs: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> ShareBoot:
    share = tmp_path_factory.mktemp("share")
    token = f"HOST-FILE-{secrets.token_hex(8)}"
    (share / "from-host").write_text(token + "\n")
    (http_server.root / "proxied.cmdline").write_text(
        container(test_image, "sh -c 'echo PROXIED-ARGS-$((6*7))'") + "\n"
    )
    probe = (
        "ip -4 -o address show dev eth0 | while read n i f address rest; do echo ADDR-$address; "
        "done; ip route | while read d v gateway rest; do "
        "test $d = default && echo GW-$v-$gateway; done; "
        "grep ^nameserver /etc/resolv.conf | while read k server; do echo DNS-$server; done; "
        "echo READ-$(cat /data/from-host); echo GUEST-$((6*7)) >/data/from-guest"
    )
    append = " ".join(
        [
            f"b2c.iface=eth0,address={STATIC_ADDRESS}/24,gateway=10.0.2.2,nameserver=10.0.2.3",
            "b2c.filesystem=share,src=share,type=9p,opts=trans=virtio|version=9p2000.L",
            "b2c.volume=hostdir,filesystem=share",
            f"b2c.proxy={proxy.guest_url}",
            f"b2c.extra_args_url=http://{PROXIED_HOST}/proxied.cmdline",
            container(test_image, f"sh -c '{probe}'", "-v hostdir:/data"),
        ]
    )
    virtfs = f"local,path={share},mount_tag=share,security_model=none"
    b = boot(release, append, name="share", logs=logs, qemu_args=("-virtfs", virtfs))
    return ShareBoot(b, share, token)


def test_iface_sets_a_static_address_without_dhcp(share_boot: ShareBoot) -> None:
    b = share_boot.boot
    assert b.logged("Set up the network interface eth0"), b.tail()
    assert not b.logged("Got an address by DHCP"), b.tail()
    assert b.starting("ADDR-") == [f"ADDR-{STATIC_ADDRESS}/24"], b.tail()
    assert b.starting("GW-") == ["GW-via-10.0.2.2"], b.tail()
    assert "DNS-10.0.2.3" in b.starting("DNS-"), b.tail()
    assert_status(b, 0)


def test_a_9p_filesystem_backs_a_volume(share_boot: ShareBoot) -> None:
    b = share_boot.boot
    assert b.logged("Set up the volume hostdir"), b.tail()
    assert b.has(f"READ-{share_boot.token}"), b.tail()
    assert (share_boot.share / "from-guest").read_text() == "GUEST-42\n"
    assert not b.starting("b2c: warning: could not unmount"), b.tail()
    assert_status(b, 0)


def test_proxy_carries_the_extra_args_and_the_pulls(
    share_boot: ShareBoot, proxy: Proxy, registry: Registry
) -> None:
    b = share_boot.boot
    assert b.logged(f"Using the HTTP(S) proxy {proxy.guest_url}"), b.tail()
    # The host name resolves nowhere: only the proxy could fetch it.
    assert b.logged(f"Parsed the extra command line from http://{PROXIED_HOST}/"), b.tail()
    assert b.has("PROXIED-ARGS-42"), b.tail()
    assert f"GET http://{PROXIED_HOST}/proxied.cmdline HTTP/1.1" in proxy.requests
    manifests = f"http://{registry.guest_host}/v2/b2c-test/manifests/"
    assert any(manifests in line for line in proxy.requests), proxy.requests
    assert_status(b, 0)
