"""Compression: host tools read what we write, settings the kernel needs, determinism."""

from __future__ import annotations

import gzip
import io
import lzma
import random
from pathlib import Path

import pytest
import zstandard

from b2c_builder.build import compress
from b2c_builder.build.compress import CompressError, decompress, decompress_stream, open_compressed
from b2c_builder.build.cpio import read_initrd, write_cpio
from b2c_builder.build.rootfs import Rootfs
from b2c_builder.config import Arch, Compression
from b2c_builder.run import run

COMPRESSED = [c for c in Compression if c is not Compression.none]
HOST_DECOMPRESS = {
    Compression.xz: ["xz", "-dc"],
    Compression.zstd: ["zstd", "-dc"],
    Compression.gzip: ["gzip", "-dc"],
}


@pytest.fixture(scope="module")
def payload() -> bytes:
    """A cpio archive with x86 machine code in it (the BCJ filter has work to do)."""
    m = Rootfs()
    m.add_file("bin/busybox", Path("/bin/busybox").read_bytes()[: 512 * 1024], 0o755)
    rng = random.Random(1)
    m.add_file("etc/random", rng.randbytes(4096))
    m.add_file("etc/text", b"the same line again\n" * 2000)
    out = io.BytesIO()
    write_cpio(m, out, source_date_epoch=1_600_000_000)
    return out.getvalue()


def xz_list(path: Path) -> list[list[str]]:
    proc = run(["xz", "--robot", "--list", "-vv", str(path)], reason="inspect an xz file")
    return [line.split("\t") for line in proc.stdout.decode().splitlines()]


@pytest.mark.parametrize("kind", COMPRESSED, ids=str)
def test_host_tools_decompress(kind: Compression, payload: bytes, tmp_path: Path) -> None:
    data = compress.compress(payload, kind, Arch.amd64)
    assert len(data) < len(payload)
    proc = run(HOST_DECOMPRESS[kind], input=data, reason=f"decompress {kind}")
    assert proc.stdout == payload
    if kind is Compression.xz:
        run(["xz", "-t"], input=data, reason="test an xz stream")
    assert decompress(data) == payload


@pytest.mark.parametrize("kind", list(Compression), ids=str)
def test_deterministic(kind: Compression, payload: bytes) -> None:
    assert compress.compress(payload, kind, Arch.amd64) == compress.compress(
        payload, kind, Arch.amd64
    )


def test_xz_uses_crc32_and_bcj_on_amd64(payload: bytes, tmp_path: Path) -> None:
    path = tmp_path / "image.cpio.xz"
    path.write_bytes(compress.compress(payload, Compression.xz, Arch.amd64))
    rows = xz_list(path)
    file_row = next(r for r in rows if r[0] == "file")
    assert file_row[6] == "CRC32"
    blocks = [r for r in rows if r[0] == "block"]
    assert blocks
    for block in blocks:
        assert block[-1].split() == ["--x86", "--lzma2=dict=64MiB"]


def test_xz_has_no_bcj_on_arm64(payload: bytes, tmp_path: Path) -> None:
    path = tmp_path / "image.cpio.xz"
    path.write_bytes(compress.compress(payload, Compression.xz, Arch.arm64))
    rows = xz_list(path)
    assert next(r for r in rows if r[0] == "file")[6] == "CRC32"
    assert [r[-1] for r in rows if r[0] == "block"] == ["--lzma2=dict=64MiB"]


def test_bcj_helps_on_x86_code(payload: bytes) -> None:
    with_bcj = compress.compress(payload, Compression.xz, Arch.amd64)
    without = compress.compress(payload, Compression.xz, Arch.arm64)
    assert len(with_bcj) < len(without)


def test_zstd_frame_fits_the_kernel(payload: bytes) -> None:
    data = compress.compress(payload, Compression.zstd, Arch.amd64)
    params = zstandard.get_frame_parameters(data)
    assert params.has_checksum
    assert params.window_size == 1 << compress.ZSTD_WINDOW_LOG
    assert params.window_size <= 1 << compress.KERNEL_ZSTD_WINDOW_LOG_MAX


def test_gzip_header_has_no_name_or_time(payload: bytes, tmp_path: Path) -> None:
    path = tmp_path / "named.cpio.gz"
    with path.open("wb") as f, open_compressed(f, Compression.gzip, Arch.amd64) as z:
        z.write(payload)  # a real file: GzipFile would record its name unless told not to
    data = path.read_bytes()
    assert data[3] & 0x08 == 0, "FNAME flag set: the file name leaked into the header"
    assert data[4:8] == b"\0\0\0\0", "MTIME set: the clock leaked into the header"
    # Without our settings the header does differ: the normalisation is doing the work.
    leaky = io.BytesIO()
    with gzip.GzipFile(fileobj=leaky, mode="wb", mtime=1_600_000_000) as g:
        g.write(payload)
    assert leaky.getvalue()[4:8] != data[4:8]


@pytest.mark.parametrize("kind", list(Compression), ids=str)
def test_streaming_cpio_into_a_file(kind: Compression, tmp_path: Path) -> None:
    m = Rootfs()
    m.add_file("usr/bin/tool", b"\x7fELF" + b"code" * 10000, 0o755)
    m.add_symlink("bin", "usr/bin")
    path = tmp_path / f"image.cpio{kind.extension()}"
    with path.open("wb") as f:
        with open_compressed(f, kind, Arch.amd64) as z:
            written = write_cpio(m, z, source_date_epoch=1_600_000_000)
        assert z.bytes_in == written
        assert not f.closed  # closing the compressor leaves the file to its owner
    data = path.read_bytes()
    assert len(decompress(data)) == written
    assert [e.name for e in read_initrd(data)] == [e.path for e in m]
    if kind is not Compression.none:
        proc = run(HOST_DECOMPRESS[kind], input=data, reason=f"decompress {kind}")
        listed = run(["cpio", "-it", "--quiet"], input=proc.stdout, reason="list a cpio archive")
        assert listed.stdout.decode().splitlines() == [e.path for e in m]


def test_write_after_close_is_an_error() -> None:
    z = open_compressed(io.BytesIO(), Compression.zstd, Arch.amd64)
    z.close()
    z.close()  # idempotent
    with pytest.raises(ValueError):
        z.write(b"late")


# --------------------------------------------------------------------------- the way back


def test_decompress_passes_raw_data_through() -> None:
    assert decompress(b"070701rest") == b"070701rest"


@pytest.mark.parametrize("kind", COMPRESSED, ids=str)
def test_concatenated_streams(kind: Compression) -> None:
    a = compress.compress(b"first", kind, Arch.amd64)
    b = compress.compress(b"second", kind, Arch.amd64)
    assert decompress(a + b"\0" * 4 + b) == b"firstsecond"
    plain, end = decompress_stream(a + b, 0)
    assert (plain, end) == (b"first", len(a))


@pytest.mark.parametrize("kind", COMPRESSED, ids=str)
def test_truncated_stream_is_an_error(kind: Compression, payload: bytes) -> None:
    data = compress.compress(payload, kind, Arch.amd64)
    with pytest.raises(CompressError, match=r"truncated|corrupt"):
        decompress(data[: len(data) // 2])


@pytest.mark.parametrize("kind", COMPRESSED, ids=str)
def test_corrupt_stream_is_an_error(kind: Compression, payload: bytes) -> None:
    data = bytearray(compress.compress(payload, kind, Arch.amd64))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(CompressError, match="corrupt"):
        decompress(bytes(data))


def test_xz_with_crc64_is_refused_like_the_kernel_would() -> None:
    data = lzma.compress(b"payload", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
    with pytest.raises(CompressError, match="CRC64"):
        decompress(data)


def test_zstd_window_beyond_the_kernel_limit_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=28)
    cctx = zstandard.ZstdCompressor(compression_params=params)
    out = io.BytesIO()
    with cctx.stream_writer(out, closefd=False) as w:
        w.write(b"payload")
    assert zstandard.get_frame_parameters(out.getvalue()).window_size == 1 << 28
    with pytest.raises(CompressError, match="corrupt zstd"):
        decompress(out.getvalue())


@pytest.mark.parametrize(("magic", "name"), [(b"BZh91AY", "bzip2"), (b"\x89LZO\0", "lzo")])
def test_foreign_compression_is_named(magic: bytes, name: str) -> None:
    with pytest.raises(CompressError, match=name):
        decompress_stream(magic + b"\0" * 16)


# ------------------------------------------------- unpack: the same, without kernel limits


def test_unpack_reads_what_other_tools_wrote_without_kernel_limits() -> None:
    """.deb members and modules are not unpacked by the kernel: a CRC64 xz or a 2^28 zstd
    window is fine there, while decompress() refuses both."""
    crc64 = lzma.compress(b"deb member", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
    assert compress.unpack(crc64) == b"deb member"
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=28)
    big_window = zstandard.ZstdCompressor(compression_params=params).compress(b"module")
    assert compress.unpack(big_window) == b"module"
    assert compress.unpack(gzip.compress(b"a") + gzip.compress(b"b")) == b"ab"
    for plain in (b"\x7fELF a module", b"ustar-ish tar bytes", b""):
        assert compress.unpack(plain) == plain


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (lzma.compress(b"x" * 1000, format=lzma.FORMAT_XZ)[:30], "truncated xz"),
        (b"BZh91AY&SY" + b"\0" * 16, "bzip2"),
        (b"\x02\x21\x4c\x18" + b"\0" * 16, "lz4"),
    ],
    ids=["truncated", "bzip2", "lz4"],
)
def test_unpack_errors_name_the_problem(data: bytes, match: str) -> None:
    with pytest.raises(CompressError, match=match):
        compress.unpack(data)
