"""`python -m bench.compare`: interleaved boots of variants of the bench's registry case, phase
by phase, to decide whether a change to the release, /init, the kernel command line or QEMU's
options moves a figure (not collected by pytest; `make bench` stays the committed record).

Every variant boots what `make bench`'s "registry" column boots (the busybox image from a local
registry, no cache disk, TCG, one vCPU, 1 GiB), unless its options say otherwise:

    python -m bench.compare [--runs N] [--releases DIR] [--json FILE] [--console DIR]
                            VARIANT [VARIANT ...]

    e.g. python -m bench.compare base 'traced=--append trace_event=sched:sched_switch' \\
             'old=--releases /tmp/old-release'

The VARIANT options (--floor, --releases, --image, --overlay, --append, --qemu-arg) are listed
in VARIANT_HELP, which --help prints. The first VARIANT is the reference.

Why interleaved, and in a balanced order: this machine's timings drift by 5-15 % from one
quarter of an hour to the next, so variants measured one after the other compare periods, not
variants; and a boot's time depends on the boot before it (a release boot right after the
floor unpacks its initramfs 0.1-0.3 s later, see bench/__main__._round_order). So each round
boots every variant once, after a warm-up round that is not counted, in the orders of a
Williams design (williams_orders): over its rows every variant comes right after every other
one equally often, and a variant's median does not depend on which one it followed.

Without --releases the current code is built first, as `make bench` does (a minute warm).
Prints a Markdown table (median, min-max of each phase, seconds from QEMU's start) and each
variant's first output against the first variant's (and the floor's, when one is given).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from b2c_builder.boot import kernel as kernels
from b2c_builder.boot import launch
from b2c_builder.build.cpio import write_cpio
from b2c_builder.build.rootfs import Rootfs
from b2c_builder.config import Accel, Arch
from b2c_builder.errors import B2CError
from bench.__main__ import floor_initramfs, push_bench_image, timed_boot
from bench.phases import DESCRIPTIONS, PHASES, Event, spreads
from tests.conftest import build_release, shared_cache
from tests.registry import start_registry


@dataclass(frozen=True)
class Variant:
    """One column of the comparison: a NAME and what its boots change (see the module's
    docstring for the options). Paths are as given; parse_variant checks that they exist."""

    name: str
    floor: bool = False
    releases: Path | None = None
    image: Path | None = None
    overlay: Path | None = None
    append: str = ""
    qemu_args: tuple[str, ...] = ()


# Every boot's architecture, as `make bench`'s (it boots amd64 guests: bench/__main__.py).
ARCH = Arch.amd64

VARIANT_HELP = """\
A VARIANT is NAME, or NAME=OPTIONS quoted as one word ('base=--append quiet'), OPTIONS among:
  --floor            the busybox-only floor of `make bench` instead of the release
  --releases DIR     this variant's release folder (kernel, image, modules archive)
  --image FILE       this variant's initramfs image instead of its release's
  --overlay DIR      the files of DIR as one more initrd, over the image's (an /init...)
  --append WORDS     more kernel command-line words (kernel and /init options)
  --qemu-arg ARG     one more QEMU argument (repeatable; --qemu-arg=-cpu for one that
                     starts with '-'; like run's, it keeps the whole modules archive)
The first VARIANT is the reference: every first output is also given as a difference to
its own (and as a ratio to a --floor variant's, when there is one).
"""


class VariantError(ValueError):
    """A VARIANT argument that cannot be used; the message names it and what is wrong."""


def _variant_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="VARIANT", add_help=False, exit_on_error=False)
    parser.add_argument("--floor", action="store_true")
    parser.add_argument("--releases", type=Path)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--overlay", type=Path)
    parser.add_argument("--append", default="")
    parser.add_argument("--qemu-arg", dest="qemu_args", action="append", default=[])
    return parser


def parse_variant(text: str) -> Variant:
    """``NAME`` or ``NAME=OPTIONS`` (shell-quoted words, see the module's docstring) as a
    Variant. Raises VariantError for an empty or malformed name, an unknown option or a
    missing value, unbalanced quotes, a path that is not there, or --floor with options
    that only a release boot has."""
    name, _, words = text.partition("=")
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise VariantError(
            f"variant {text!r}: the name before '=' must be letters, digits, '-', '_' or '.'"
        )
    try:
        # parse_known_args: parse_args would exit on unknown words, exit_on_error or not.
        args, unknown = _variant_parser().parse_known_args(shlex.split(words))
    except ValueError as exc:  # shlex's unbalanced quotes
        raise VariantError(f"variant {name!r}: {exc}") from exc
    except argparse.ArgumentError as exc:
        raise VariantError(
            f"variant {name!r}: {exc} (quote the whole variant as one word: "
            f"'{name}=--append \"WORD WORD\"')"
        ) from exc
    if unknown:
        # --append takes one word: the next ones of an unquoted list come back unknown.
        rest = list(itertools.takewhile(lambda word: not word.startswith("-"), unknown))
        hint = (
            f' (--append takes one word: quote several as --append "{args.append} '
            f'{" ".join(rest)}")'
            if args.append and rest
            else ""
        )
        raise VariantError(f"variant {name!r}: unrecognized arguments: {' '.join(unknown)}{hint}")
    variant = Variant(
        name,
        floor=args.floor,
        releases=args.releases,
        image=args.image,
        overlay=args.overlay,
        append=args.append,
        qemu_args=tuple(args.qemu_args),
    )
    if variant.floor and (variant.image or variant.overlay):
        raise VariantError(
            f"variant {name!r}: --floor boots the busybox-only floor: it has no --image or "
            "--overlay"
        )
    for option, path, is_dir in (
        ("--releases", variant.releases, True),
        ("--image", variant.image, False),
        ("--overlay", variant.overlay, True),
    ):
        if path is not None and not (path.is_dir() if is_dir else path.is_file()):
            kind = "folder" if is_dir else "file"
            raise VariantError(f"variant {name!r}: {option} {path} is not a {kind}")
    return variant


def williams_orders(count: int) -> list[list[int]]:
    """The boot orders of a Williams design for ``count`` variants (indexes 0..count-1): a
    Latin square in which, over all its rows, each variant comes right after each other
    one the same number of times (once for an even count; for an odd count the rows and
    their reverses, twice). Williams, "Experimental designs balanced for the estimation of
    residual effects of treatments", Australian Journal of Scientific Research A 2 (1949).
    Raises ValueError below 1."""
    if count < 1:
        raise ValueError(f"a comparison needs at least one variant, not {count}")
    # First row 0, 1, n-1, 2, n-2, ...; row i adds i to each place, modulo n.
    first = [0]
    low, high = 1, count - 1
    while len(first) < count:
        first.append(low)
        low += 1
        if len(first) < count:
            first.append(high)
            high -= 1
    rows = [[(v + i) % count for v in first] for i in range(count)]
    if count % 2:
        rows += [row[::-1] for row in rows]
    return rows


def overlay_initrd(folder: Path, out: Path) -> Path:
    """The regular files, symlinks and folders under ``folder`` as a newc cpio at ``out``
    (modes kept, owner root, mtimes 0), to go after the image: the kernel's unpacking
    overwrites the image's files of the same path."""
    rootfs = Rootfs()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            rootfs.add_symlink(rel, str(path.readlink()))
        elif path.is_dir():
            rootfs.add_dir(rel, path.stat().st_mode & 0o7777)
        elif path.is_file():
            rootfs.add_file(rel, path.read_bytes(), path.stat().st_mode & 0o7777)
    with out.open("wb") as stream:
        write_cpio(rootfs, stream, source_date_epoch=0)
    return out


def variant_request(
    variant: Variant, base: launch.RunRequest, spec: str, work: Path
) -> launch.RunRequest:
    """The `run` request of one boot of ``variant``: ``base`` (its releases the default)
    with the floor's initramfs, or with the release's image (or --image), the modules archive
    cut as `run` cuts it for this boot, and the overlay, running ``spec`` (b2c.container)."""
    releases = variant.releases or base.releases
    files = kernels.default_boot_files(
        kernels.release_folder(releases, base.arch), base.arch, None, None
    )
    request = replace(
        base,
        kernel=files.kernel,
        releases=releases,
        append=" ".join(w for w in (base.append, variant.append) if w),
        qemu_args=(*base.qemu_args, *variant.qemu_args),
    )
    if variant.floor:
        return replace(request, initrds=(floor_initramfs(work / "floor.cpio"),))
    request = replace(request, b2c={"b2c.container": [spec]})
    modules = kernels.uncompressed_initrd(files.initrds[1], base.cache_dir)
    needs = launch.boot_needs(request, network=True)
    if needs is not None:
        modules = kernels.boot_modules_initrd(modules, needs, base.cache_dir)
    overlay = (
        (overlay_initrd(variant.overlay, work / f"overlay-{variant.name}.cpio"),)
        if variant.overlay is not None
        else ()
    )
    return replace(request, initrds=(variant.image or files.initrds[0], modules, *overlay))


def markdown(variants: list[Variant], runs: dict[str, list[dict[str, Event]]]) -> str:
    """The comparison as Markdown: per phase, each variant's median (min-max); then each
    first output against the first variant's and, with a --floor variant, the ratio to it."""
    names = [v.name for v in variants]
    table = {name: spreads(runs[name]) for name in names}
    lines = [
        f"{len(runs[names[0]])} boots each, interleaved in a balanced order; seconds from "
        "QEMU's start, median (min-max); a blank cell: that variant's boots never printed the "
        "phase's line (the floor has no /init phases; `quiet` hides the kernel's)",
        "",
        "| phase | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for phase in PHASES:
        if any(phase in table[name] for name in names):
            cells = [str(table[name][phase]) if phase in table[name] else "" for name in names]
            lines.append(f"| {DESCRIPTIONS[phase]} | " + " | ".join(cells) + " |")
    first = {name: table[name]["first_output"].median for name in names}
    lines.append(
        f"| **first output - {names[0]}'s** | "
        + " | ".join(f"{first[name] - first[names[0]]:+.2f} s" for name in names)
        + " |"
    )
    floor = next((v.name for v in variants if v.floor), None)
    if floor is not None:
        lines.append(
            f"| **first output / {floor}'s** | "
            + " | ".join(f"{first[name] / first[floor]:.2f}x" for name in names)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    summary = " ".join((__doc__ or "").split("\n\n")[0].split()).replace("`", "")
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=summary,
        epilog=VARIANT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "variants", nargs="+", metavar="VARIANT", help="NAME[=OPTIONS], the first the reference"
    )
    parser.add_argument(
        "--runs",
        type=int,
        help="counted boots of each variant (default: the smallest multiple of the design's "
        "rows from 6 up, so that the order is balanced)",
    )
    parser.add_argument(
        "--releases", type=Path, help="the release folder of every variant that names none"
    )
    parser.add_argument("--json", type=Path, help="also write every boot's phases there")
    parser.add_argument(
        "--console",
        type=Path,
        metavar="DIR",
        help="also keep every boot's console there, as NAME.warm-up.log and NAME.run-N.log "
        "(each line after its seconds from QEMU's start); made if missing",
    )
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(text) for text in args.variants]
    except VariantError as exc:
        parser.error(str(exc))
    names = [v.name for v in variants]
    if (twice := next((n for n in names if names.count(n) > 1), None)) is not None:
        parser.error(f"two variants are named {twice!r}: give each its own name")
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: the folder {args.json.parent} does not exist")
    if args.releases is not None and not args.releases.is_dir():
        parser.error(f"--releases {args.releases} is not a folder")
    orders = williams_orders(len(variants))
    runs_count = args.runs if args.runs is not None else -(-6 // len(orders)) * len(orders)
    if runs_count < 1:
        parser.error(f"--runs must be at least 1, not {runs_count}")
    if runs_count % len(orders):
        print(
            f"note: the order is balanced over a multiple of {len(orders)} runs, not {runs_count}",
            file=sys.stderr,
        )
    folders = {f for f in (args.releases, *(v.releases for v in variants)) if f is not None}
    for folder in sorted(folders):
        try:
            kernels.default_boot_files(kernels.release_folder(folder, ARCH), ARCH, None, None)
        except B2CError as exc:
            parser.error(
                f"{folder} is not a release folder ({exc.message}): give --releases a folder "
                "that `make build` or `make release` wrote"
            )
    if args.console is not None:
        try:
            args.console.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--console {args.console}: {exc.strerror or exc}")
    work = Path(tempfile.mkdtemp(prefix="b2c-compare-"))
    try:
        releases = args.releases or build_release(work / "release", shared_cache()).output
        base = launch.RunRequest(
            releases=releases, arch=ARCH, accel=Accel.tcg, memory="1G", timeout=300.0
        )
        runs = boot_rounds(variants, orders, runs_count, base, work, args.console)
    except B2CError as exc:
        print(f"error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(variants, runs), end="")
    if args.json is not None:
        raw = {
            name: [{p: asdict(e) for p, e in r.items()} for r in rs] for name, rs in runs.items()
        }
        args.json.write_text(json.dumps(raw, indent=1) + "\n")
    return 0


def boot_rounds(
    variants: list[Variant],
    orders: list[list[int]],
    runs_count: int,
    base: launch.RunRequest,
    work: Path,
    console: Path | None = None,
) -> dict[str, list[dict[str, Event]]]:
    """A warm-up round in the given order (not counted), then ``runs_count`` rounds in the
    design's orders, cycling through its rows; each boot's phase events, per variant name.
    With ``console`` (a folder), each boot's console goes to NAME.warm-up.log or
    NAME.run-N.log there. Exits (SystemExit) when a boot never prints the marker
    (bench.__main__.timed_boot); that boot's console is kept too."""
    runs: dict[str, list[dict[str, Event]]] = {v.name: [] for v in variants}
    registry = start_registry(work / "registry")
    try:
        _, spec = push_bench_image(registry, work)
        requests = {v.name: variant_request(v, base, spec, work) for v in variants}
        for round_no in range(runs_count + 1):
            order = range(len(variants)) if round_no == 0 else orders[(round_no - 1) % len(orders)]
            for index in order:
                name = variants[index].name
                label = "warm-up" if round_no == 0 else f"run {round_no}"
                log = None if console is None else console / f"{name}.{label.replace(' ', '-')}.log"
                found = timed_boot(requests[name], log)
                print(
                    f"boot   {name:<12} {label}: first output {found['first_output'].host:5.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
                if round_no:
                    runs[name].append(found)
    finally:
        registry.stop()
    return runs


if __name__ == "__main__":
    sys.exit(main())
