"""``b2c-builder serve``: a folder over HTTP for iPXE (kernel, initrds, scripts).

Python's http.server, read-only (GET and HEAD), one thread per request, every request
logged with its status and size. A path that leads outside the folder, through ``..`` or a
symbolic link, gets 403. It binds 127.0.0.1 unless told otherwise: QEMU's user network
reaches it from the guest as http://10.0.2.2:PORT/.
"""

from __future__ import annotations

import http.server
import os
from functools import partial
from pathlib import Path
from typing import Any

from b2c_builder.errors import ConfigError
from b2c_builder.log import log

QEMU_HOST = "10.0.2.2"  # the host, as QEMU's user network shows it to the guest


class _Handler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler confined to its folder, logging through our logger."""

    server_version = "b2c-builder-serve"

    def __init__(self, *args: Any, root: Path, **kwargs: Any) -> None:
        self.root = root
        super().__init__(*args, directory=str(root), **kwargs)

    def send_head(self) -> Any:
        path = Path(self.translate_path(self.path))
        raw = self.path.split("?", 1)[0].split("#", 1)[0]
        inside = path.resolve() == self.root or path.resolve().is_relative_to(self.root)
        if ".." in raw.split("/") or not inside:
            self.send_error(403, "outside the served folder")
            return None
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def make_server(folder: Path, bind: str = "127.0.0.1", port: int = 0) -> http.server.HTTPServer:
    """An HTTP server for ``folder`` bound to ``bind``:``port`` (0: any free port), not yet
    serving. Raises ConfigError for a missing folder or an address that cannot be bound."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder", hint="give the folder to serve")
    root = folder.resolve()
    try:
        return http.server.ThreadingHTTPServer((bind, port), partial(_Handler, root=root))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {bind}:{port}: {exc.strerror}",
            hint="pick another --port (0 picks a free one) or --bind address",
        ) from exc


def serve(folder: Path, bind: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``folder`` until interrupted; prints its URL (and the guest's) first."""
    server = make_server(folder, bind, port)
    host, real_port = str(server.server_address[0]), server.server_address[1]
    print(f"Serving {folder} at http://{host}:{real_port}/", flush=True)
    if host in ("127.0.0.1", "0.0.0.0"):
        print(f"A QEMU guest with user networking sees it at http://{QEMU_HOST}:{real_port}/")
    print(f"(pid {os.getpid()}; Ctrl-C stops it)", flush=True)
    with server:
        server.serve_forever()
