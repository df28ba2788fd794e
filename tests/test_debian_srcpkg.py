"""Source packages: Sources index, .dsc checks, verified fetch, safe unpacking, Debian's patches."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from b2c_builder.build.debian import download, index, srcpkg
from b2c_builder.errors import ExtractError, FetchError, ResolveError, ToolError, VerifyError
from tests.conftest import require_tool
from tests.localmirror import FakePackage, FakeSource, GpgKey, LocalMirror, tar_xz

PATCH_GREETING = b"""\
Description: greet the world
--- a/hello.txt
+++ b/hello.txt
@@ -1,2 +1,2 @@
-hello
+hello, world
 bye
"""
PATCH_BYE = b"""\
--- a/hello.txt
+++ b/hello.txt
@@ -1,2 +1,2 @@
 hello, world
-bye
+goodbye
"""


def hello_source(**debian: bytes) -> FakeSource:
    files = {
        "patches/series": b"# applied in order\n01-greeting.patch\n\n02-bye.patch -p1\n",
        "patches/01-greeting.patch": PATCH_GREETING,
        "patches/02-bye.patch": PATCH_BYE,
        **debian,
    }
    return FakeSource(
        "hello",
        "1.0-2",
        upstream={"hello.txt": b"hello\nbye\n", "cmd/main.go": b"package main\n"},
        debian=files,
        binaries=("hello",),
        build_depends="debhelper-compat (= 13), golang-go, golang-foo-dev (>= 1)",
        go_import_path="example.org/hello",
    )


def open_index(mirror: LocalMirror, cache: Path) -> srcpkg.SourceIndex:
    session = download.make_session()
    release = index.open_release(session, mirror.url, mirror.suite, keyring=mirror.keyring)
    return srcpkg.open_sources(session, mirror.url, mirror.suite, release, cache)


@pytest.fixture
def key() -> object:
    require_tool("gpg")
    with GpgKey() as key:
        yield key


def test_fetch_and_unpack_apply_debians_patches_in_series_order(
    tmp_path: Path, key: GpgKey
) -> None:
    require_tool("patch")
    source = hello_source()
    with LocalMirror(tmp_path / "m", [FakePackage("hello")], key=key, sources=[source]) as m:
        sources = open_index(m, tmp_path / "cache")
        package = sources.get("hello", "1.0-2")
        fetched = srcpkg.fetch(download.make_session(), sources, package, tmp_path / "cache")
    assert package.go_import_path == "example.org/hello"
    assert [str(d[0]) for d in package.build_depends] == [
        "debhelper-compat (= 13)",
        "golang-go",
        "golang-foo-dev (>= 1)",
    ]
    tree = srcpkg.unpack(fetched, tmp_path / "tree")
    # 02 applies only on top of 01: the order of the series file was followed.
    assert (tree / "hello.txt").read_text() == "hello, world\ngoodbye\n"
    assert (tree / "cmd/main.go").read_bytes() == b"package main\n"
    assert (tree / "debian/control").read_text() == "Source: hello\n"
    assert srcpkg.series(tree) == [("01-greeting.patch", 1), ("02-bye.patch", 1)]


def test_a_tampered_tarball_is_refused(tmp_path: Path, key: GpgKey) -> None:
    source = hello_source()
    with LocalMirror(tmp_path / "m", [FakePackage("hello")], key=key, sources=[source]) as m:
        orig = m.root / source.directory / "hello_1.0.orig.tar.xz"
        data = bytearray(orig.read_bytes())
        data[len(data) // 2] ^= 0xFF
        orig.write_bytes(bytes(data))  # same size, other SHA256; Sources is not re-signed
        sources = open_index(m, tmp_path / "cache")
        package = sources.get("hello", "1.0-2")
        with pytest.raises(VerifyError, match="SHA256 mismatch"):
            srcpkg.fetch(download.make_session(), sources, package, tmp_path / "cache")


def test_a_dsc_that_disagrees_with_the_signed_index_is_refused(tmp_path: Path) -> None:
    source = hello_source()
    source.build(tmp_path)
    package = srcpkg.SourcePackage.from_stanza(source.stanza(tmp_path))
    good = (tmp_path / source.directory / source.dsc_name()).read_text()
    assert [f.path for f in srcpkg.parse_dsc(good, package)] == [
        "hello_1.0-2.debian.tar.xz",
        "hello_1.0.orig.tar.xz",
    ]
    other = next(f.sha256 for f in package.files if f.path.endswith(".orig.tar.xz"))
    bad = good.replace(other, "0" * 64)
    assert bad != good
    with pytest.raises(VerifyError, match="does not list it so"):
        srcpkg.parse_dsc(bad, package)
    with pytest.raises(VerifyError, match=r"not hello 1\.0-2"):
        srcpkg.parse_dsc(good.replace("Version: 1.0-2", "Version: 1.0-3"), package)


def test_an_unknown_version_names_the_versions_the_index_has(tmp_path: Path) -> None:
    source = hello_source()
    source.build(tmp_path)
    sources = srcpkg.SourceIndex("http://mirror.invalid/debian", "trixie", source.stanza(tmp_path))
    with pytest.raises(ResolveError, match=r"hello 9\.9-1 is not in trixie.*versions: 1\.0-2"):
        sources.get("hello", "9.9-1")
    with pytest.raises(ResolveError, match="versions: none"):
        sources.get("nothing", "1")


def test_a_patch_that_does_not_apply_fails_the_unpack(tmp_path: Path) -> None:
    require_tool("patch")
    source = hello_source(**{"patches/series": b"02-bye.patch\n"})  # 02 needs 01 first
    source.build(tmp_path / "pool")
    package = srcpkg.SourcePackage.from_stanza(source.stanza(tmp_path / "pool"))
    folder = tmp_path / "pool" / source.directory
    fetched = srcpkg.Fetched(package, {p.name: p for p in folder.iterdir()})
    with pytest.raises(ToolError, match=r"apply Debian's patch 02-bye\.patch"):
        srcpkg.unpack(fetched, tmp_path / "tree")


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        (b"a.patch\n# b.patch\n  c.patch -p0  # comment\n", [("a.patch", 1), ("c.patch", 0)]),
        (b"\n\n", []),
    ],
)
def test_series_follows_quilts_format(
    tmp_path: Path, series: bytes, expected: list[tuple[str, int]]
) -> None:
    (tmp_path / "debian/patches").mkdir(parents=True)
    (tmp_path / "debian/patches/series").write_bytes(series)
    assert srcpkg.series(tmp_path) == expected


@pytest.mark.parametrize(
    ("series", "message"),
    [(b"../../etc/passwd\n", "outside debian/patches"), (b"a.patch -R\n", "unsupported")],
)
def test_series_refuses_escapes_and_unknown_options(
    tmp_path: Path, series: bytes, message: str
) -> None:
    (tmp_path / "debian/patches").mkdir(parents=True)
    (tmp_path / "debian/patches/series").write_bytes(series)
    with pytest.raises(ExtractError, match=message):
        srcpkg.series(tmp_path)


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:xz") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return raw.getvalue()


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("top/../../escape"),
        tarfile.TarInfo("top/link"),  # made a symlink to /etc/passwd below
    ],
)
def test_hostile_tarball_members_refuse_the_package(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    if member.name.endswith("link"):
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        member.size = 4
    archive = tmp_path / "x_1.orig.tar.xz"
    archive.write_bytes(_tar_with(member, b"evil" if member.size else b""))
    with pytest.raises(ExtractError, match="refusing a member"):
        srcpkg._untar(archive, tmp_path / "out", strip=True)
    assert not (tmp_path / "escape").exists()


def test_unpack_refuses_an_unknown_format(tmp_path: Path) -> None:
    package = srcpkg.SourcePackage(
        "x", "1", "pool/main/x/x", (index.FileRef("x_1.dsc", "0" * 64, 1),), (), (), "1.0"
    )
    with pytest.raises(ExtractError, match=r"format '1\.0'"):
        srcpkg.unpack(srcpkg.Fetched(package, {}), tmp_path / "tree")


def test_the_orig_tarball_is_stripped_of_its_top_folder(tmp_path: Path) -> None:
    archive = tmp_path / "x_1.orig.tar.xz"
    archive.write_bytes(tar_xz({"a/b.txt": b"b", "c.txt": b"c"}, top="x-1"))
    srcpkg._untar(archive, tmp_path / "out", strip=True)
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")) == [
        "a",
        "a/b.txt",
        "c.txt",
    ]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("Source: libpod (4.3.1+ds1-8)\n", ("libpod", "4.3.1+ds1-8")),
        ("Source: podman\n", ("podman", "5.4.2+ds1-2+b2")),
        ("", ("podman", "5.4.2+ds1-2+b2")),
    ],
)
def test_a_binary_package_names_its_source(field: str, expected: tuple[str, str]) -> None:
    stanza = (
        f"Package: podman\n{field}Version: 5.4.2+ds1-2+b2\nArchitecture: amd64\n"
        "Filename: pool/main/p/podman/podman.deb\nSize: 1\nSHA256: " + "0" * 64 + "\n"
    )
    package = index.Package.from_stanza(stanza)
    assert (package.source, package.source_version) == expected


def test_a_mirror_without_the_source_files_says_so(tmp_path: Path, key: GpgKey) -> None:
    source = hello_source()
    with LocalMirror(tmp_path / "m", [FakePackage("hello")], key=key, sources=[source]) as m:
        (m.root / source.directory / source.dsc_name()).unlink()  # a binary-only mirror
        sources = open_index(m, tmp_path / "cache")
        package = sources.get("hello", "1.0-2")
        with pytest.raises(FetchError, match="HTTP 404") as caught:
            srcpkg.fetch(download.make_session(), sources, package, tmp_path / "cache")
    assert caught.value.hint is not None and "does not serve it" in caught.value.hint
