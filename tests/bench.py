"""`make bench`: size, build time and boot time, each as a ratio against a floor measured in
the same run (not collected by pytest).

- size: each compression against the uncompressed cpio (floor: 1.00);
- build time: a cold-cache and a warm-cache default build against a warm build with
  --compression none (floor: resolving, fetching from cache, extracting, selecting, writing);
- boot time under TCG, QEMU start -> the container's first output line, for each compression,
  against a busybox-only initramfs that prints a line from /init (floor: firmware + kernel).

    python -m tests.bench [--skip-cold]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from b2c_builder.compress import decompress, open_compressed
from b2c_builder.config import Arch, Compression
from b2c_builder.cpio import write_cpio
from b2c_builder.qemu import Accel, RunConfig, boot
from b2c_builder.rootfs import Kind, Manifest
from tests.conftest import build_release, shared_cache
from tests.oci import busybox_layer, make_layout
from tests.registry import start_registry

FLOOR_INIT = "#!/bin/sh\necho B2C-BENCH-FLOOR\n/bin/busybox poweroff -f\n"


def timed(action: Callable[[], object]) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def floor_initramfs(path: Path) -> Path:
    busybox = Path("/bin/busybox").read_bytes()
    rootfs = Manifest()
    rootfs.add_file("bin/busybox", busybox, 0o755)
    rootfs.add_symlink("bin/sh", "busybox")
    rootfs.add_device("dev/console", Kind.CHAR, 5, 1)
    rootfs.add_file("init", FLOOR_INIT.encode(), 0o755)
    with path.open("wb") as out:
        write_cpio(rootfs, out, source_date_epoch=0)
    return path


def time_to_line(kernel: Path, initrds: tuple[Path, ...], append: str, marker: str) -> float:
    seen: list[float] = []
    start = time.monotonic()

    def echo(line: str) -> None:
        if (
            marker in line
            and not seen
            and "Command line" not in line
            and "command line" not in line
        ):
            seen.append(time.monotonic() - start)

    result = boot(
        RunConfig(kernel=kernel, initrds=initrds, append=append, accel=Accel.tcg, timeout=600),
        echo=echo,
    )
    if not seen:
        raise SystemExit(f"the guest never printed {marker!r}: {result.summary()}")
    return seen[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="no cold-cache build")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="b2c-bench-"))
    print(f"# b2c-builder benchmark, work dir {work}", flush=True)

    # Build time.
    release = build_release(  # warms the cache; its cpio is the size floor
        work / "warm-none", shared_cache(), "--compression", "none", "--max-size", "200MiB"
    )
    floor_build = timed(
        lambda: build_release(
            work / "floor", shared_cache(), "--compression", "none", "--max-size", "200MiB"
        )
    )
    warm = timed(lambda: build_release(work / "warm", shared_cache()))
    print(f"build  floor (warm, --compression none)  {floor_build:7.1f} s  1.00")
    print(f"build  warm (default zstd)               {warm:7.1f} s  {warm / floor_build:.2f}")
    if not args.skip_cold:
        cold = timed(lambda: build_release(work / "cold", work / "cold-cache"))
        print(f"build  cold (empty cache, default)       {cold:7.1f} s  {cold / floor_build:.2f}")
    sys.stdout.flush()

    # Size.
    cpio = release.image.read_bytes()
    print(f"size   floor (uncompressed cpio)    {len(cpio) / 2**20:8.2f} MiB  1.00")
    images: dict[Compression, Path] = {}
    for kind in (Compression.zstd, Compression.xz, Compression.gzip):
        out = io.BytesIO()
        start = time.monotonic()
        _compress(cpio, kind, out)
        seconds = time.monotonic() - start
        data = out.getvalue()
        assert decompress(data) == cpio
        images[kind] = work / f"image.cpio{kind.extension()}"
        images[kind].write_bytes(data)
        print(
            f"size   {kind:<5} {len(data) / 2**20:8.2f} MiB  {len(data) / len(cpio):.3f}"
            f"  (compressed in {seconds:.1f} s)",
            flush=True,
        )

    # Boot time.
    registry = start_registry(work / "registry")
    try:
        layout = make_layout(work / "oci", busybox_layer(Path("/bin/busybox")), cmd=["/bin/sh"])
        registry.push(layout, "bench")
        floor = time_to_line(
            release.kernel, (floor_initramfs(work / "floor.cpio"),), "", "B2C-BENCH-FLOOR"
        )
        print(f"boot   floor (busybox-only /init)      {floor:6.1f} s  1.00", flush=True)
        ref = f"docker://{registry.guest_host}/bench:latest"
        # The marker only exists once the container's shell has computed it: the init's own
        # log lines quote the command line, which holds "$((6*7))", never "42".
        append = f"b2c.container=\"--tls-verify=false {ref} sh -c 'echo B2C-BENCH-$((6*7))'\""
        for kind, image in images.items():
            seconds = time_to_line(release.kernel, (image, release.modules), append, "B2C-BENCH-42")
            print(
                f"boot   {kind:<5} to container output      {seconds:6.1f} s"
                f"  {seconds / floor:.2f}",
                flush=True,
            )
    finally:
        registry.stop()


def _compress(data: bytes, kind: Compression, out: io.BytesIO) -> None:
    with open_compressed(out, kind, Arch.amd64) as z:
        z.write(data)


if __name__ == "__main__":
    main()
