"""Read-only file trees that ELF and module closures walk: the staging manifest or a host dir.

Both resolve symlinks *inside* the tree (an absolute target is relative to the tree root),
so a closure computed for the image never reads a file of the host by accident.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Protocol

from b2c_builder.build.rootfs import MAX_SYMLINKS


class Tree(Protocol):
    def resolve(self, path: str) -> str | None:
        """Canonical path of ``path`` with every symlink followed, or None if it is missing."""

    def read(self, path: str) -> bytes:
        """Contents of a regular file given by its canonical path."""


class HostTree:
    """A directory on disk seen as a tree rooted at ``root`` (symlinks stay inside it)."""

    def __init__(self, root: Path | str = "/") -> None:
        self.root = Path(root)

    def resolve(self, path: str) -> str | None:
        parts = [p for p in path.split("/") if p and p != "."]
        done: list[str] = []
        links = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            current = self.root.joinpath(*done, part)
            if current.is_symlink():
                links += 1
                if links > MAX_SYMLINKS:
                    return None
                target = os.readlink(current)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p and p != "."] + parts
                continue
            if not current.exists():
                return None
            done.append(part)
        return posixpath.join(*done) if done else ""

    def read(self, path: str) -> bytes:
        return self.root.joinpath(path).read_bytes()
