"""`make bench`: boot phases, image sizes and build times, each against a floor measured in
the same run (not collected by pytest). Writes bench/results.json and bench/results.md.

- boot (TCG, one vCPU): the floor (a busybox-only initramfs on the same kernel whose /init
  prints a line) and the release running a small image from a local registry with no cache
  disk, interleaved, ``--runs`` times each after a discarded warm-up round (the first boot of a
  run is slower: the host's caches are cold); each round boots the floor, then the release
  variants in a rotated order (a boot's time depends on the one before it: _round_order);
  phase by phase (bench/phases.py), with the ratio of the container's first output to the
  floor's line, and min/median/max;
- the kernel developer's loop: the same image as a local oci-archive (no registry, no
  network) against the registry pull, interleaved;
- a cache disk (the case where cleanup matters), to see that it does not get slower: a new
  one each boot (the partition made, the image pulled), and one kept from boot to boot (the
  image already there: the loop of a lab machine or of `run --disk`);
- size: the release image per compression against the uncompressed cpio (the payload floor);
- build time: cold (empty cache) and warm default builds against a warm --compression none
  build (floor).

    python -m bench [--runs 8] [--skip-cold] [--skip-build] [--machine microvm]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from b2c_builder.boot import job as jobs
from b2c_builder.boot import launch, qemu
from b2c_builder.build.compress import decompress, open_compressed
from b2c_builder.build.cpio import write_cpio
from b2c_builder.build.rootfs import Kind, Rootfs
from b2c_builder.config import Accel, Arch, Compression, Disk
from b2c_builder.errors import ConfigError
from bench.phases import DESCRIPTIONS, PHASES, Event, Spread, events, spreads
from tests.conftest import Release, build_release, shared_cache
from tests.oci import busybox_layer, make_layout
from tests.registry import Registry, start_registry

HERE = Path(__file__).resolve().parent
MARKER = "B2C-BENCH-42"
# The shell computes the marker: the init's log lines quote the command, never its output.
COMMAND = ("sh", "-c", "echo B2C-BENCH-$((6*7))")
FLOOR_INIT = f"#!/bin/sh\necho {MARKER}\n/bin/busybox poweroff -f\n"


def floor_initramfs(path: Path) -> Path:
    """A busybox-only initramfs whose /init prints the marker and powers off."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox").resolve().read_bytes()
    rootfs = Rootfs()
    rootfs.add_file("bin/busybox", busybox, 0o755)
    rootfs.add_symlink("bin/sh", "busybox")
    rootfs.add_device("dev/console", Kind.CHAR, 5, 1)
    rootfs.add_file("init", FLOOR_INIT.encode(), 0o755)
    with path.open("wb") as out:
        write_cpio(rootfs, out, source_date_epoch=0)
    return path


def push_bench_image(registry: Registry, work: Path) -> tuple[Path, str]:
    """Push the bench's image (the host's busybox, /bin/sh) to ``registry`` as bench:latest.
    Returns its OCI layout (under ``work``) and the b2c.container spec with which the guest
    pulls it and runs COMMAND."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    layout = make_layout(work / "oci", busybox_layer(busybox), cmd=["/bin/sh"])
    registry.push(layout, "bench")
    ref = f"docker://{registry.guest_host}/bench:latest"
    return layout, f"--tls-verify=false {ref} {shlex.join(COMMAND)}"


def timed_boot(request: launch.RunRequest, console: Path | None = None) -> dict[str, Event]:
    """Boot ``request`` through `run`'s own path and return its phase events. With
    ``console``, also write the boot's console there, a line each as ``SECONDS LINE``
    (seconds from QEMU's start, 3 decimals, as the phases count them), even when the boot
    never prints the marker."""
    with jobs.workdir() as tmp:
        plan = launch.prepare(request, tmp)
        job_initrd = plan.job.write(tmp / "job.cpio") if plan.job is not None else None
        cfg = launch.run_config(request, plan, job_initrd)
        lines: list[tuple[float, str]] = []
        result = qemu.boot(cfg, echo=lambda line: lines.append((time.monotonic(), line)))
    origin = result.started
    if console is not None:
        console.write_text("".join(f"{t - origin:7.3f} {line}\n" for t, line in lines))
    found = events([(t - origin, line) for t, line in lines], MARKER, result.duration)
    if "first_output" not in found:
        tail = "\n".join(line for _, line in lines[-40:])
        raise SystemExit(f"the guest never printed {MARKER}: {result.summary()}\n{tail}")
    return found


def timed(action: Callable[[], object]) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def _compress(data: bytes, kind: Compression) -> bytes:
    out = io.BytesIO()
    with open_compressed(out, kind, Arch.amd64) as z:
        z.write(data)
    return out.getvalue()


def measure_sizes(release: Release) -> dict[str, dict[str, float]]:
    cpio = decompress(release.image.read_bytes())
    sizes = {"none (floor)": {"bytes": len(cpio), "ratio": 1.0}}
    for kind in (Compression.zstd, Compression.xz, Compression.gzip):
        data = _compress(cpio, kind)
        sizes[str(kind)] = {"bytes": len(data), "ratio": len(data) / len(cpio)}
        print(
            f"size   {kind:<5} {len(data) / 2**20:7.2f} MiB  {len(data) / len(cpio):.3f}",
            flush=True,
        )
    return sizes


def measure_builds(work: Path, skip_cold: bool) -> dict[str, float]:
    none = ("--compression", "none", "--max-size", "200MiB")
    build_release(work / "warm-up", shared_cache(), *none)
    builds = {
        "floor (warm, --compression none)": timed(
            lambda: build_release(work / "floor", shared_cache(), *none)
        )
    }
    builds["warm (default)"] = timed(lambda: build_release(work / "warm", shared_cache()))
    if not skip_cold:
        builds["cold (empty cache)"] = timed(
            lambda: build_release(work / "cold", work / "cold-cache")
        )
    for name, seconds in builds.items():
        print(f"build  {name:<34} {seconds:6.1f} s", flush=True)
    return builds


def kvm_note() -> str:
    reason = qemu.kvm_unusable_reason(Arch.host())
    return (
        "KVM works here: TCG figures only in this version"
        if reason is None
        else f"no KVM figures: {reason}"
    )


def main() -> None:
    # The docstring's first paragraph, without the reST quotes.
    summary = " ".join((__doc__ or "").split("\n\n")[0].split()).replace("`", "")
    parser = argparse.ArgumentParser(prog="python -m bench", description=summary)
    parser.add_argument(
        "--runs",
        type=int,
        default=8,
        help="measured boots per variant, interleaved (default 8: each release variant comes "
        "right after the floor in two of them)",
    )
    parser.add_argument("--skip-cold", action="store_true", help="no cold-cache build")
    parser.add_argument("--skip-build", action="store_true", help="no build-time figures")
    parser.add_argument("--output", type=Path, default=HERE, help="where results.{json,md} go")
    parser.add_argument(
        "--machine", help="QEMU machine of every boot (run --machine; default: q35)"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    try:  # before minutes of building
        qemu_machine = Arch.amd64.machine(args.machine).name
    except ConfigError as exc:
        parser.error(f"{exc.message} ({exc.hint})")
    work = Path(tempfile.mkdtemp(prefix="b2c-bench-"))
    print(f"# b2c-builder benchmark, work dir {work}", flush=True)
    release = build_release(work / "release", shared_cache())
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.node()}",
        "accel": "tcg",
        "qemu_machine": qemu_machine,
        "kvm": kvm_note(),
        "runs": args.runs,
    }
    registry = start_registry(work / "registry")
    try:
        layout, spec = push_bench_image(registry, work)
        archive = work / "bench.tar"
        subprocess.run(  # noqa: S603 - an argument list
            ["skopeo", "copy", "-q", f"oci:{layout}:latest", f"oci-archive:{archive}"], check=True
        )
        base = launch.RunRequest(
            kernel=release.kernel,
            releases=release.output,
            accel=Accel.tcg,
            memory="1G",
            timeout=300.0,
            machine=args.machine,
        )
        disk = work / "cache.img"
        # Made once: the warm-up round partitions it and pulls the image, later rounds find both.
        kept = _fresh_disk(work / "kept-cache.img")
        variants: dict[str, Callable[[], launch.RunRequest]] = {
            "floor": lambda: replace(base, initrds=(floor_initramfs(work / "floor.cpio"),)),
            "registry": lambda: replace(base, b2c={"b2c.container": [spec]}),
            "local": lambda: replace(base, images=(f"oci-archive:{archive}",), command=COMMAND),
            "cache disk": lambda: replace(
                base,
                b2c={"b2c.container": [spec], "b2c.cache_device": "auto"},
                disks=(Disk(_fresh_disk(disk)),),
            ),
            "cache disk, kept": lambda: replace(
                base,
                b2c={"b2c.container": [spec], "b2c.cache_device": "auto"},
                disks=(Disk(kept),),
            ),
        }
        runs: dict[str, list[dict[str, Event]]] = {name: [] for name in variants}
        # Round 0 warms the host (QEMU, firmware, kernel and images in its page cache) and is
        # not counted: in three runs without it, the floor's first boot was the slowest of each
        # (by 0.06-0.44 s), which moved the ratios by up to 0.1x.
        names = list(variants)
        for i in range(args.runs + 1):
            for name in _round_order(names, i):
                found = timed_boot(variants[name]())
                if i == 0:
                    print(
                        f"warm-up {name}: first output {found['first_output'].host:5.2f} s",
                        flush=True,
                    )
                    continue
                runs[name].append(found)
                print(
                    f"boot   {name:<10} run {i}: "
                    f"first output {found['first_output'].host:5.2f} s, "
                    f"QEMU exit {found['qemu_exit'].host:5.2f} s",
                    flush=True,
                )
    finally:
        registry.stop()
    boot = {name: {phase: asdict(s) for phase, s in spreads(r).items()} for name, r in runs.items()}
    floor = [r["first_output"].host for r in runs["floor"]]
    ratios = {
        name: asdict(
            Spread.of([r["first_output"].host / f for r, f in zip(rs, floor, strict=True)])
        )
        for name, rs in runs.items()
    }
    results["boot"] = boot
    results["first_output_ratio_to_floor"] = ratios
    results["exit_after_last_output"] = {
        name: asdict(Spread.of([r["qemu_exit"].host - r["first_output"].host for r in rs]))
        for name, rs in runs.items()
    }
    results["raw"] = {
        name: [{p: asdict(e) for p, e in r.items()} for r in rs] for name, rs in runs.items()
    }
    results["size"] = measure_sizes(release)
    if not args.skip_build:
        results["build_seconds"] = measure_builds(work, args.skip_cold)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.output / "results.md").write_text(markdown(results, runs))
    print((args.output / "results.md").read_text())


def _round_order(names: list[str], round_no: int) -> list[str]:
    """The boot order of round ``round_no``: ``names`` as they are in round 0 (the warm-up);
    in the measured rounds, ``names[0]`` (the floor) first, then the others rotated, so that
    over ``len(names) - 1`` rounds each of them comes right after the floor once and takes each
    place once. A release boot right after the floor is slower: in this machine's interleaved
    runs (2026-11-30), it unpacked the initramfs 0.1-0.3 s later than the same boot after
    another release boot (the host's transparent huge pages: the difference went away with
    them turned off). In a fixed order the registry variant, second, paid that in every round;
    the loop of a kernel developer boots the release after the release."""
    if round_no == 0:
        return list(names)
    first, rest = names[0], names[1:]
    shift = (round_no - 1) % len(rest) if rest else 0
    return [first, *rest[shift:], *rest[:shift]]


def _fresh_disk(path: Path) -> Path:
    """A new, empty 1 GiB raw disk: the cache partition is created on the first boot."""
    path.unlink(missing_ok=True)
    with path.open("wb") as disk:
        disk.truncate(1 << 30)
    return path


def markdown(results: dict[str, object], runs: dict[str, list[dict[str, Event]]]) -> str:
    """results.md: the phase table (medians, seconds from QEMU's start) and the ratios."""
    names = list(runs)
    table = {name: spreads(r) for name, r in runs.items()}
    floor_first = table["floor"]["first_output"].median
    lines = [
        f"# b2c-builder benchmark ({results['date']}, TCG, {results['qemu_machine']}, one vCPU, "
        f"{results['runs']} runs each, interleaved, in a rotated order)",
        "",
        f"{results['kvm']}.",
        "",
        "Seconds from QEMU's start, median (min-max); ratio = first output / the floor's.",
        "",
        "| phase | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for phase in PHASES:
        cells = [str(table[name][phase]) if phase in table[name] else "" for name in names]
        lines.append(f"| {DESCRIPTIONS[phase]} | " + " | ".join(cells) + " |")
    ratio_cells = []
    for name in names:
        first = table[name]["first_output"].median
        ratio_cells.append(f"{first / floor_first:.2f}x")
    lines.append("| **first output / floor** | " + " | ".join(ratio_cells) + " |")
    exit_cells = []
    for name in names:
        gap = Spread.of([r["qemu_exit"].host - r["first_output"].host for r in runs[name]])
        exit_cells.append(f"{gap.median:.2f} s")
    lines.append("| **QEMU exit - first output** | " + " | ".join(exit_cells) + " |")
    size = results.get("size")
    if isinstance(size, dict):
        lines += ["", "| image compression | MiB | ratio to the cpio |", "| --- | --- | --- |"]
        for kind, figures in size.items():
            lines.append(f"| {kind} | {figures['bytes'] / 2**20:.2f} | {figures['ratio']:.3f} |")
    builds = results.get("build_seconds")
    if isinstance(builds, dict):
        floor_build = next(iter(builds.values()))
        lines += ["", "| build | seconds | ratio to the floor |", "| --- | --- | --- |"]
        for name, seconds in builds.items():
            lines.append(f"| {name} | {seconds:.1f} | {seconds / floor_build:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
