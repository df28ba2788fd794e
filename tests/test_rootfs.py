"""The rootfs manifest: normalisation, conflicts, parents, symlink resolution, hardlinks."""

from __future__ import annotations

import pytest

from b2c_builder.build.rootfs import Kind, Rootfs, normalize
from b2c_builder.errors import RootfsError


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/usr/bin/x", "usr/bin/x"), ("a/./b/../c", "a/c"), ("..data", "..data"), ("/", "")],
)
def test_normalize(path: str, expected: str) -> None:
    assert normalize(path) == expected


@pytest.mark.parametrize("path", ["../etc", "/a/../../etc", "a/b/../../../x"])
def test_normalize_refuses_escapes(path: str) -> None:
    with pytest.raises(RootfsError, match="escapes"):
        normalize(path)


def test_parents_are_filled_and_iteration_is_sorted_parents_first() -> None:
    m = Rootfs()
    m.add_file("usr/lib/x/libz.so", b"z")
    m.add_file("usr/bin/a", b"a", 0o755)
    m.add_file("usr-other/f", b"f")
    paths = [e.path for e in m]
    assert paths == [
        "usr",
        "usr/bin",
        "usr/bin/a",
        "usr/lib",
        "usr/lib/x",
        "usr/lib/x/libz.so",
        "usr-other",
        "usr-other/f",
    ]
    assert m["usr/lib"].kind is Kind.DIR


def test_conflicts_are_errors_but_identical_entries_are_not() -> None:
    m = Rootfs()
    m.add_file("etc/x", b"1")
    m.add_file("etc/x", b"1")
    with pytest.raises(RootfsError, match="conflicting entries for /etc/x"):
        m.add_file("etc/x", b"2")
    with pytest.raises(RootfsError, match="needs it to be a directory"):
        m.add_file("etc/x/y", b"")
    m.add_file("etc/x", b"2", replace=True)
    assert m.read("etc/x") == b"2"


def test_resolve_follows_relative_and_absolute_links() -> None:
    m = Rootfs()
    m.add_symlink("lib", "usr/lib")
    m.add_symlink("lib64", "/usr/lib64")
    m.add_file("usr/lib/a/libc.so.6", b"c")
    m.add_symlink("usr/lib64/ld.so", "/lib/a/libc.so.6")
    m.add_symlink("loop", "loop")
    assert m.resolve("/lib64/ld.so") == "usr/lib/a/libc.so.6"
    assert m.resolve("lib/a/missing") is None
    assert m.resolve("lib/a/missing/deeper", strict=False) == "usr/lib/a/missing/deeper"
    assert m.resolve("loop") is None


def test_hardlinks_share_a_group() -> None:
    m = Rootfs()
    m.add_file("bin/a", b"data", 0o755)
    m.add_hardlink("bin/b", "bin/a")
    assert m["bin/a"].link_group == m["bin/b"].link_group == "bin/a"
    assert m.read("bin/b") == b"data"
    m.add_symlink("bin/s", "a")
    with pytest.raises(RootfsError, match="cannot hard-link"):
        m.add_hardlink("bin/c", "bin/s")


def test_device_nodes_must_be_char_or_block() -> None:
    m = Rootfs()
    assert m.add_device("dev/null", Kind.CHAR, 1, 3, 0o666).rdev == (1, 3)
    with pytest.raises(RootfsError):
        m.add_device("dev/x", Kind.FILE, 1, 1)


def test_directories_with_different_modes_are_a_conflict() -> None:
    m = Rootfs()
    m.add_dir("root", 0o700)
    m.add_dir("root", 0o700)  # the same directory again is fine
    with pytest.raises(
        RootfsError, match=r"/root: directory \(mode 0700.* vs directory \(mode 0755"
    ):
        m.add_dir("root", 0o755)
    assert m["root"].mode == 0o700


def test_an_explicit_directory_replaces_a_filled_in_parent() -> None:
    m = Rootfs()
    m.add_file("var/tmp/x", b"")
    assert m["var/tmp"].mode == 0o755 and m.implicit("var/tmp")
    m.add_dir("var/tmp", 0o1777)
    assert m["var/tmp"].mode == 0o1777 and not m.implicit("var/tmp")
    with pytest.raises(RootfsError, match="conflicting directory entries for /var/tmp"):
        m.add_dir("var/tmp", 0o755)
    with pytest.raises(RootfsError, match="conflicting entries for /var"):
        m.add_file("var", b"a file cannot replace a filled-in directory")
