"""`b2c-builder serve`: a folder over HTTP, every request logged, nothing outside it served."""

from __future__ import annotations

import http.client
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen[str]]]:
    folder = tmp_path / "www"
    (folder / "boot").mkdir(parents=True)
    (folder / "boot" / "script.ipxe").write_text("#!ipxe\nboot\n")
    (tmp_path / "secret.txt").write_text("not for the guest\n")
    (folder / "escape").symlink_to(tmp_path / "secret.txt")
    proc = subprocess.Popen(
        [sys.executable, "-m", "b2c_builder", "serve", str(folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"Serving {folder} at http://127.0.0.1:"), first
        port = int(first.rsplit(":", 1)[1].rstrip("/\n"))
        assert f"http://10.0.2.2:{port}/" in proc.stdout.readline()
        yield folder, port, proc
    finally:
        proc.terminate()  # our own child, by its Popen handle
        proc.wait(timeout=10)


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)  # sent as is: http.client does not normalise '..'
    response = conn.getresponse()
    status, body = response.status, response.read()
    conn.close()
    return status, body


def test_serves_files_refuses_escapes_and_logs_each_request(
    served: tuple[Path, int, subprocess.Popen[str]],
) -> None:
    _, port, proc = served
    assert get(port, "/boot/script.ipxe") == (200, b"#!ipxe\nboot\n")
    assert get(port, "/missing")[0] == 404
    assert get(port, "/../secret.txt")[0] == 403
    assert get(port, "/boot/../../secret.txt")[0] == 403
    status, body = get(port, "/escape")
    assert status == 403 and b"not for the guest" not in body
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    logged = [line for line in err.splitlines() if "HTTP/1.1" in line]
    assert len(logged) == 5, err
    assert '"GET /boot/script.ipxe HTTP/1.1" 200' in logged[0]
    assert '"GET /missing HTTP/1.1" 404' in logged[1]
    assert '"GET /../secret.txt HTTP/1.1" 403' in logged[2]
    assert all(line.split()[1] == "127.0.0.1" for line in logged), logged


def test_refuses_a_missing_folder(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "b2c_builder", "serve", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "is not a folder" in proc.stderr and "Traceback" not in proc.stderr
