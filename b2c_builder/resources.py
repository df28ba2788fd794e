"""Find the data folders (templates/, init/) in a checkout or inside an installed wheel."""

from __future__ import annotations

from pathlib import Path

from b2c_builder.errors import RootfsError

_PACKAGE = Path(__file__).resolve().parent


def data_path(relative: str) -> Path:
    """``templates``, ``init/y``...: from the wheel's _data folder (see the pyproject
    force-include), else from the checkout's root."""
    for base in (_PACKAGE / "_data", _PACKAGE.parent):
        candidate = base / relative
        if candidate.exists():
            return candidate
    raise RootfsError(
        f"cannot find '{relative}' in the b2c-builder installation",
        hint="reinstall b2c-builder (pip install .) or run it from a full checkout",
    )
