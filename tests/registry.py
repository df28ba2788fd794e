"""A real OCI registry (Debian's docker-registry) on 127.0.0.1 for the tests, and skopeo pushes."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def guest_host(self) -> str:
        """How a QEMU guest on user networking reaches it (10.0.2.2 is the host's loopback)."""
        return f"10.0.2.2:{self.port}"

    def push(self, layout: Path, name: str, tag: str = "latest") -> None:
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                f"oci:{layout}:{tag}",
                f"docker://{self.host}/{name}:{tag}",
            ],
            check=True,
            timeout=120,
        )

    def blob_fetches(self) -> int:
        """How many blob downloads (GET .../blobs/sha256:...) the access log recorded."""
        text = self.log_path.read_text(errors="replace")
        return sum(
            1 for line in text.splitlines() if '"GET /v2/' in line and "/blobs/sha256:" in line
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_registry(workdir: Path) -> Registry:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log_path = workdir / "registry.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=log_file, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log_path.read_text()}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                return Registry(port, process, log_path)
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("docker-registry did not answer within 30 s")
