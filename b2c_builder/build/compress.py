"""Compression of the cpio stream, and the way back.

Writers are streaming and stacked: ``write_cpio`` -> CompressedWriter -> the output file.
Closing the CompressedWriter finishes the compressed stream and flushes the file; the caller
closes (and atomically renames) the file itself. Every format is written deterministically:
no timestamps or file names in any header.

The settings are the ones the kernel's initramfs decompressors accept:
- xz: CRC32 check (XZ Embedded knows no other), the arch's BCJ filter, then LZMA2;
- zstd: a window of at most 2^27 bytes (lib/decompress_unzstd.c refuses larger ones);
- gzip: plain deflate, mtime 0, no file name.

``decompress`` reads them back with the same limits, so a build can check its own output.
``unpack`` is the same decompressor by magic without the kernel's limits, for what other
tools wrote: .deb members, kernel modules.
"""

from __future__ import annotations

import gzip
import io
import lzma
import zlib
from typing import Any, BinaryIO, Protocol

import zstandard

from b2c_builder.config import Arch, Compression
from b2c_builder.errors import B2CError

# Measured on a 48.6 MB cpio of podman + crun + conmon + busybox + libraries (see
# tests/bench_compress.py): -9e is 0.02 % *larger* than -9 and no faster, so no PRESET_EXTREME;
# BCJ saves 5.3 %; a 16 MiB dictionary costs 5 %, 1 MiB 11 %. The kernel allocates the
# dictionary (64 MiB) while it unpacks, as it does the zstd window below.
XZ_PRESET = 9
XZ_DICT_SIZE = 64 * 1024 * 1024
# zstd -19 picks a 2^23 window; 2^26 (the whole image) is 6.7 % smaller for ~the same time,
# 2^27 only 0.3 % more, -22 0.4 % more for 60 % more time. Single-threaded: 1 and 2 workers
# gave the same bytes (not those of threads=0) but only ~15 % faster; one code path is simpler.
ZSTD_LEVEL = 19
ZSTD_WINDOW_LOG = 26
KERNEL_ZSTD_WINDOW_LOG_MAX = 27  # lib/decompress_unzstd.c refuses larger windows
GZIP_LEVEL = 9

MAGICS: dict[bytes, Compression] = {
    b"\xfd7zXZ\x00": Compression.xz,
    b"\x28\xb5\x2f\xfd": Compression.zstd,
    b"\x1f\x8b": Compression.gzip,
}
# Formats the kernel can unpack that we never write: named in errors.
_FOREIGN = {b"BZh": "bzip2", b"\x02\x21\x4c\x18": "lz4", b"\x89LZO": "lzo", b"\x5d\x00\x00": "lzma"}

_XZ_CHECKS = {0: "none", 1: "CRC32", 4: "CRC64", 10: "SHA-256"}


class CompressError(B2CError):
    """Compressed data is corrupt, truncated, or in a form the kernel cannot unpack."""


class _Stream(Protocol):
    def write(self, data: bytes, /) -> int: ...
    def close(self) -> None: ...


def xz_filters(arch: Arch) -> list[dict[str, Any]]:
    """The xz filter chain: the arch's branch filter (if the kernel has one), then LZMA2."""
    lzma2 = {"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET, "dict_size": XZ_DICT_SIZE}
    if arch.facts.xz_bcj is None:
        return [lzma2]
    return [{"id": arch.facts.xz_bcj}, lzma2]


def zstd_compressor() -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, window_log=ZSTD_WINDOW_LOG, write_checksum=1, threads=0
    )
    return zstandard.ZstdCompressor(compression_params=params)


class CompressedWriter:
    """A write-only stream that compresses into ``out``.

    ``close()`` (or leaving the ``with`` block) ends the compressed stream and flushes ``out``
    but never closes it: streams are closed in the order they were stacked.
    """

    def __init__(self, out: BinaryIO, compression: Compression, arch: Arch) -> None:
        self.compression = compression
        self.bytes_in = 0  # uncompressed bytes written so far
        self._out = out
        self._stream: _Stream | None = _open(out, compression, arch)
        self._closed = False

    def write(self, data: bytes, /) -> int:
        if self._closed:
            raise ValueError("write to a closed CompressedWriter")
        if self._stream is None:
            _write_all(self._out, data)
        else:
            self._stream.write(data)
        self.bytes_in += len(data)
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            self._stream.close()
        self._out.flush()

    def __enter__(self) -> CompressedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(out: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = out.write(view)
        view = view[n:]


def _open(out: BinaryIO, compression: Compression, arch: Arch) -> _Stream | None:
    if compression is Compression.none:
        return None
    if compression is Compression.xz:
        return lzma.LZMAFile(
            out, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=xz_filters(arch)
        )
    if compression is Compression.zstd:
        return zstd_compressor().stream_writer(out, closefd=False)
    if compression is Compression.gzip:
        # filename="" and mtime=0: otherwise the header records out.name and the clock.
        return gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=out, mtime=0)
    raise CompressError(f"unknown compression {compression!r}")


def open_compressed(out: BinaryIO, compression: Compression, arch: Arch) -> CompressedWriter:
    """``with open_compressed(f, Compression.xz, Arch.amd64) as z: write_cpio(m, z, ...)``"""
    return CompressedWriter(out, compression, arch)


def compress(data: bytes, compression: Compression, arch: Arch) -> bytes:
    """Compress a whole buffer at once (tests, small archives)."""
    buf = io.BytesIO()
    with open_compressed(buf, compression, arch) as z:
        z.write(data)
    return buf.getvalue()


# ------------------------------------------------------------------------------ the way back


def sniff(data: bytes, offset: int = 0) -> Compression | None:
    """The compression of the stream starting at ``offset``; none for a raw cpio archive."""
    for magic, kind in MAGICS.items():
        if data.startswith(magic, offset):
            return kind
    if data.startswith(b"07070", offset):
        return Compression.none
    return None


class _Decoder(Protocol):
    def decompress(self, data: memoryview, /) -> bytes: ...
    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...


def _decoder(kind: Compression | None, data: bytes, offset: int, kernel: bool) -> _Decoder:
    if kind is Compression.xz and not kernel:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    if kind is Compression.zstd and not kernel:
        return zstandard.ZstdDecompressor().decompressobj()
    if kind is Compression.xz:
        check = data[offset + 7] & 0x0F if len(data) > offset + 7 else 0
        if check not in (0, 1):
            raise CompressError(
                f"xz stream at offset {offset} uses a {_XZ_CHECKS.get(check, check)} check",
                hint="the kernel's xz decoder only supports CRC32: compress with --check=crc32",
            )
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    if kind is Compression.zstd:
        max_window = 1 << KERNEL_ZSTD_WINDOW_LOG_MAX
        return zstandard.ZstdDecompressor(max_window_size=max_window).decompressobj()
    if kind is Compression.gzip:
        return zlib.decompressobj(wbits=31)  # 16 + 15: a gzip header, 32 KiB window
    head = data[offset : offset + 6]
    for magic, name in _FOREIGN.items():
        if head.startswith(magic):
            raise CompressError(f"{name}-compressed data at offset {offset}: not supported")
    raise CompressError(
        f"unknown data at offset {offset}: {head!r}",
        hint="expected a cpio archive or a gzip, xz or zstd stream",
    )


def decompress_stream(data: bytes, offset: int = 0) -> tuple[bytes, int]:
    """Decompress the one stream at ``offset``; return its contents and the offset after it.

    Applies the kernel's limits: xz must use a CRC32 (or no) check, zstd a window <= 2^27.
    """
    return _stream(data, offset, kernel=True)


def _stream(data: bytes, offset: int, *, kernel: bool) -> tuple[bytes, int]:
    kind = sniff(data, offset)
    decoder = _decoder(kind, data, offset, kernel)
    view = memoryview(data)[offset:]
    try:
        plain = decoder.decompress(view)
    except (lzma.LZMAError, zlib.error, zstandard.ZstdError) as exc:
        raise CompressError(f"corrupt {kind} stream at offset {offset}: {exc}") from exc
    if not decoder.eof:
        raise CompressError(
            f"truncated {kind} stream at offset {offset}",
            hint="the file was cut short; rebuild or download it again",
        )
    return plain, len(data) - len(decoder.unused_data)


def decompress(data: bytes) -> bytes:
    """Decompress every stream in ``data`` (NUL padding between them allowed) and join them,
    with the kernel's limits (see decompress_stream).

    Data that starts with no known compression magic (a raw cpio archive) is returned as is.
    """
    return _all(data, kernel=True)


def unpack(data: bytes) -> bytes:
    """``data`` decompressed by its magic (xz, zstd, gzip; streams may follow one another),
    without the kernel's limits: for .deb members and kernel modules, which other tools
    compressed. Data with no compression magic (a tar, an ELF file) is returned as is.
    Raises CompressError for corrupt, truncated or unsupported (bzip2, lz4...) data."""
    if data.startswith(tuple(_FOREIGN)):
        _decoder(None, data, 0, kernel=False)  # raises, naming the format
    return _all(data, kernel=False)


def _all(data: bytes, *, kernel: bool) -> bytes:
    if sniff(data) in (None, Compression.none):
        return data
    parts: list[bytes] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
            continue
        plain, pos = _stream(data, pos, kernel=kernel)
        parts.append(plain)
    return b"".join(parts)
