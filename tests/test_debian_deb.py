""".deb extraction, checked against dpkg-deb's own extraction of the same packages."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import tarfile
from pathlib import Path

import pytest

from b2c_builder.build.debian.deb import extract_into, extract_to_dir, new_staging, read_control
from b2c_builder.build.rootfs import Kind, Origin, Rootfs
from b2c_builder.config import Arch
from b2c_builder.errors import ExtractError
from b2c_builder.run import run
from tests.localmirror import FakePackage, capture_log

ORIGIN = Origin("sample", "1.0-1")


def sample(compression: str = "xz") -> FakePackage:
    return FakePackage(
        "sample",
        files={
            "usr/bin/tool": b"#!/bin/sh\necho tool\n",
            "usr/share/doc/sample/README": b"hello\n",
            "etc/sample.conf": b"key=value\n",
            "usr/lib/sample/private": b"secret\n",
        },
        modes={"usr/lib/sample/private": 0o600, "usr/bin/tool": 0o4755},
        symlinks={"usr/bin/tool-alias": "tool", "usr/lib/sample/abs": "/etc/sample.conf"},
        hardlinks={"usr/bin/tool-hard": "usr/bin/tool"},
        compression=compression,
    )


def dpkg_extract(deb: Path, dest: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """What dpkg-deb -x puts on disk: path -> (kind, permission bits, content or target)."""
    run(["dpkg-deb", "-x", str(deb), str(dest)], reason="extract a .deb as the test oracle")
    tree: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            rel = str(path.relative_to(dest))
            if stat.S_ISLNK(st.st_mode):
                tree[rel] = ("symlink", 0o777, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                tree[rel] = ("dir", stat.S_IMODE(st.st_mode), b"")
            else:
                tree[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return tree


def manifest_tree(manifest: Rootfs) -> dict[str, tuple[str, int, bytes | str]]:
    tree: dict[str, tuple[str, int, bytes | str]] = {}
    for entry in manifest:
        content: bytes | str = entry.target if entry.kind is Kind.SYMLINK else entry.data
        tree[entry.path] = (str(entry.kind), entry.mode, content)
    return tree


@pytest.mark.parametrize("compression", ["xz", "zstd", "gzip", "none"])
def test_extraction_matches_dpkg_deb(tmp_path: Path, compression: str) -> None:
    deb = sample(compression).build(tmp_path / "sample.deb", tmp_path / "work")
    manifest = Rootfs()
    result = extract_into(manifest, deb, ORIGIN)
    assert manifest_tree(manifest) == dpkg_extract(deb, tmp_path / "oracle")
    assert result.control["Package"] == "sample"
    assert set(result.paths) == set(manifest.entries)
    assert all(e.origin == ORIGIN for e in manifest)
    # the hard link shares its data and names the same group as its first path
    tool, hard = manifest["usr/bin/tool"], manifest["usr/bin/tool-hard"]
    assert tool.link_group == hard.link_group is not None
    assert tool.mode == 0o4755


def test_read_control(tmp_path: Path) -> None:
    package = FakePackage("ctl", version="2:3.4-5", depends="libc6 (>= 2.36)")
    deb = package.build(tmp_path / "ctl.deb", tmp_path / "work")
    control = read_control(deb)
    assert control["Version"] == "2:3.4-5"
    assert control["Depends"] == "libc6 (>= 2.36)"


def test_usrmerge_canonicalization(tmp_path: Path) -> None:
    libc = FakePackage(
        "libc6",
        files={
            "lib/x86_64-linux-gnu/libc.so.6": b"\x7fELF libc",
            "usr/lib/x86_64-linux-gnu/libm.so.6": b"\x7fELF libm",
            "sbin/ldconfig": b"\x7fELF ldconfig",
        },
        symlinks={"lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld.so"},
    )
    deb = libc.build(tmp_path / "libc6.deb", tmp_path / "work")
    staging = new_staging(Arch.amd64)
    result = extract_into(staging, deb, Origin("libc6", "1.0-1"))
    assert staging.read("usr/lib/x86_64-linux-gnu/libc.so.6") == b"\x7fELF libc"
    assert "lib/x86_64-linux-gnu/libc.so.6" not in staging.entries
    assert staging["usr/sbin/ldconfig"].kind is Kind.FILE
    assert staging["usr/lib64/ld-linux-x86-64.so.2"].target == "/lib/x86_64-linux-gnu/ld.so"
    for name in ("bin", "sbin", "lib", "lib64"):
        assert staging[name].kind is Kind.SYMLINK and staging[name].target == f"usr/{name}"
    # lookups through the aliases find the files
    assert staging.resolve("lib/x86_64-linux-gnu/libc.so.6") == "usr/lib/x86_64-linux-gnu/libc.so.6"
    assert "usr/lib/x86_64-linux-gnu/libc.so.6" in result.paths
    assert "lib" not in result.paths


def test_new_staging_arm64_has_no_lib64() -> None:
    staging = new_staging(Arch.arm64)
    assert "lib64" not in staging and staging["lib"].target == "usr/lib"


def test_overlapping_packages_keep_the_first_and_warn(tmp_path: Path) -> None:
    first = FakePackage(
        "first",
        files={"usr/bin/x": b"first", "usr/share/same": b"same", "etc/first/f": b""},
        modes={"etc/first": 0o750},
    )
    second = FakePackage(
        "second",
        files={"usr/bin/x": b"second", "usr/share/same": b"same", "etc/first/g": b""},
    )
    debs = [p.build(tmp_path / f"{p.name}.deb", tmp_path / "work") for p in (first, second)]
    staging = new_staging(Arch.amd64)
    with capture_log(logging.WARNING) as messages:
        for package, deb in zip((first, second), debs, strict=True):
            extract_into(staging, deb, Origin(package.name, package.version))
    assert staging.read("usr/bin/x") == b"first"
    assert staging["usr/bin/x"].origin == Origin("first", "1.0-1")
    assert staging.read("usr/share/same") == b"same"
    assert staging["etc/first"].mode == 0o750
    sha = {name: hashlib.sha256(name.encode()).hexdigest()[:12] for name in ("first", "second")}
    assert messages == [
        "/etc/first: first makes it a directory with mode 0750, second with 0755; keeping 0750",
        f"two packages ship /usr/bin/x with different contents: first (5 bytes, sha256 "
        f"{sha['first']}) and second (6 bytes, sha256 {sha['second']}, in second.deb); "
        "keeping the first",
    ]


# --- crafted, hostile packages ------------------------------------------------------------


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n"
        out.write(header.encode())
        out.write(data + (b"\n" if len(data) % 2 else b""))
    return out.getvalue()


def tar_bytes(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """(name, file data or None, link target or None); '/' at the end makes a directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif data is None:
                info.type, info.linkname = tarfile.LNKTYPE, "./usr/x"
            else:
                info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data or b""))
    return out.getvalue()


def crafted_deb(path: Path, data_members: list[tuple[str, bytes | None, str | None]]) -> Path:
    control = b"Package: evil\nVersion: 1\nArchitecture: amd64\nDescription: evil\n"
    path.write_bytes(
        ar_archive(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar", tar_bytes([("./control", control, None)])),
                ("data.tar", tar_bytes(data_members)),
            ]
        )
    )
    return path


@pytest.mark.parametrize("evil", ["../evil", "./usr/../../evil", "/etc/evil", ".."])
def test_member_escaping_the_root_is_refused(tmp_path: Path, evil: str) -> None:
    deb = crafted_deb(tmp_path / "evil.deb", [("./usr/ok", b"ok", None), (evil, b"x", None)])
    manifest = new_staging(Arch.amd64)
    before = dict(manifest.entries)
    with pytest.raises(ExtractError, match="escapes the extraction root") as err:
        extract_into(manifest, deb, Origin("evil", "1"))
    assert str(deb) in str(err.value)
    assert manifest.entries == before, "nothing of a refused package may be added"
    assert not (tmp_path.parent / "evil").exists()


def test_hardlink_escaping_the_root_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("./usr/link")
        info.type, info.linkname = tarfile.LNKTYPE, "../../etc/shadow"
        tar.addfile(info)
    control = tar_bytes([("./control", b"Package: evil\nVersion: 1\n", None)])
    deb = tmp_path / "evil.deb"
    deb.write_bytes(
        ar_archive(
            [("debian-binary", b"2.0\n"), ("control.tar", control), ("data.tar", out.getvalue())]
        )
    )
    with pytest.raises(ExtractError, match="escapes"):
        extract_into(Rootfs(), deb, Origin("evil", "1"))


def test_symlink_tricks_stay_inside_the_image(tmp_path: Path) -> None:
    """A symlink pointing far above the root, then a file written through it: the file lands
    inside the image (targets are image-rooted), never on the host."""
    deb = crafted_deb(
        tmp_path / "trick.deb",
        [("./usr/up", None, "../../../../../../etc"), ("./usr/up/passwd", b"pwned", None)],
    )
    manifest = Rootfs()
    extract_into(manifest, deb, Origin("trick", "1"))
    assert manifest.read("etc/passwd") == b"pwned"
    assert manifest["usr/up"].kind is Kind.SYMLINK


def test_not_a_deb(tmp_path: Path) -> None:
    junk = tmp_path / "junk.deb"
    junk.write_bytes(b"<html>404</html>")
    with pytest.raises(ExtractError, match="not a Debian package"):
        extract_into(Rootfs(), junk, ORIGIN)


def test_truncated_deb(tmp_path: Path) -> None:
    deb = sample().build(tmp_path / "sample.deb", tmp_path / "work")
    deb.write_bytes(deb.read_bytes()[: deb.stat().st_size // 2])
    with pytest.raises(ExtractError):
        extract_into(Rootfs(), deb, ORIGIN)


def test_extract_to_dir_writes_the_selected_members_and_keeps_links_inside(
    tmp_path: Path,
) -> None:
    deb = sample().build(tmp_path / "sample.deb", tmp_path / "work")
    dest = tmp_path / "root"
    written = extract_to_dir(deb, dest, prefixes=("usr/lib/", "usr/bin/"))
    assert sorted(written) == [
        "usr/bin/tool",
        "usr/bin/tool-alias",
        "usr/bin/tool-hard",
        "usr/lib/sample",
        "usr/lib/sample/abs",
        "usr/lib/sample/private",
    ]
    assert not (dest / "etc").exists() and not (dest / "usr/share").exists()
    assert (dest / "usr/bin/tool-hard").read_bytes() == b"#!/bin/sh\necho tool\n"
    # The absolute target /etc/sample.conf now points into dest, not at the host's /etc.
    assert os.readlink(dest / "usr/lib/sample/abs") == "../../../etc/sample.conf"
    assert (dest / "usr/lib/sample/private").stat().st_mode & 0o777 == 0o600


def test_extract_to_dir_refuses_a_link_out_of_the_folder(tmp_path: Path) -> None:
    evil = FakePackage("evil", symlinks={"usr/lib/x/up": "../../../../../etc/passwd"})
    deb = evil.build(tmp_path / "evil.deb", tmp_path / "work")
    with pytest.raises(ExtractError, match="refusing a member"):
        extract_to_dir(deb, tmp_path / "root", prefixes=("usr/",))
