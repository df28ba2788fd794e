"""Compression benchmark (not collected by pytest): what each compression costs and buys.

    python -m tests.bench_compress releases/initramfs.linux_amd64.cpio [--arch amd64]

For each compression it prints the compressed size, its ratio to the uncompressed archive
(the floor it is measured against), and the host-side compression and decompression times.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from b2c_builder.build.compress import decompress, open_compressed
from b2c_builder.config import Arch, Compression


@dataclass(frozen=True)
class Result:
    compression: Compression
    size: int
    ratio: float
    compress_s: float
    decompress_s: float


def bench(data: bytes, arch: Arch, kinds: list[Compression]) -> Iterator[Result]:
    for kind in kinds:
        out = io.BytesIO()
        start = time.monotonic()
        with open_compressed(out, kind, arch) as z:
            z.write(data)
        compress_s = time.monotonic() - start
        start = time.monotonic()
        if decompress(out.getvalue()) != data:
            raise SystemExit(f"{kind}: the round trip changed the data")
        decompress_s = time.monotonic() - start
        size = len(out.getvalue())
        yield Result(kind, size, size / len(data), compress_s, decompress_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cpio", type=Path, help="an uncompressed cpio archive")
    parser.add_argument("--arch", type=Arch, default=Arch.amd64)
    parser.add_argument("--only", type=Compression, action="append", help="repeatable")
    args = parser.parse_args()
    data = args.cpio.read_bytes()
    print(f"{'compression':<12}{'bytes':>12}{'ratio':>9}{'compress':>11}{'decompress':>12}")
    for r in bench(data, args.arch, args.only or list(Compression)):
        print(
            f"{r.compression:<12}{r.size:>12}{r.ratio:>9.1%}"
            f"{r.compress_s:>10.1f}s{r.decompress_s:>11.2f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
