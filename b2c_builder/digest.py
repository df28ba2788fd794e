"""File digests, with nothing heavier than hashlib to import (`run` hashes its initrds)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, as 64 lowercase hex digits; raises OSError if it
    cannot be read."""
    with path.open("rb") as src:
        return hashlib.file_digest(src, "sha256").hexdigest()
