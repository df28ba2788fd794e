"""Logging setup and a timed, nestable ``step()`` context manager."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

log = logging.getLogger("b2c")
_stderr = Console(stderr=True)
_depth = 0


def setup(*, debug: bool = False) -> None:
    """Configure the ``b2c`` logger once: rich on a TTY, plain lines otherwise."""
    level = logging.DEBUG if debug else logging.INFO
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=_stderr, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def is_tty() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Log ``title``, run the body, then say how it ended. Steps nest with indentation.

    A body that returns logs "<title> done in N.Ns"; one that raises logs "<title> failed"
    (or "interrupted" for Ctrl-C), without a duration, and the exception goes on: the caller
    reports the error itself. Nothing is ever called done that did not finish.
    """
    global _depth
    indent = "  " * _depth
    log.info("%s‣ %s", indent, title)
    start = time.monotonic()
    _depth += 1
    try:
        yield
    except Exception:
        _depth -= 1
        log.info("%s  %s failed", indent, title)
        raise
    except BaseException:
        _depth -= 1
        log.info("%s  %s interrupted", indent, title)
        raise
    _depth -= 1
    log.info("%s  %s done in %.1fs", indent, title, time.monotonic() - start)


def progress(total: int | None, description: str) -> Progress | None:
    """A download progress bar, only when stderr is a terminal."""
    if not is_tty():
        return None
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=_stderr,
        transient=True,
    )
    bar.add_task(description, total=total)
    return bar
