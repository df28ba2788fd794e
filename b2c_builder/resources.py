"""Find the data folders (templates/, init/) in a checkout or inside an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_path(relative: str) -> Path:
    """``templates/x`` or ``init/y``: from the wheel's _data folder, else from the checkout."""
    for base in (_PACKAGE / "_data", _PACKAGE.parent):
        candidate = base / relative
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{relative} is missing from the b2c-builder installation")
