"""The device trees of a Debian kernel package, as their own archive.

Boards that boot without ACPI (most arm64 and riscv64 ones) need the flattened device tree
of their board from the boot loader. Debian's linux-image package of those architectures
ships one blob per supported board, and the overlays that some boards apply on top, under
``usr/lib/linux-image-<release>/<vendor>/<board>.dtb`` (``.dtbo`` for overlays): the folder
U-Boot's ``fdtdir`` and Debian's flash-kernel read them from. ``device_trees()`` selects them
into a manifest with those same paths, which the build writes as
``dtbs-<release>.linux_<arch>.cpio<ext>`` beside the kernel and the modules archive; amd64's
package has none, and no archive is written.
"""

from __future__ import annotations

from b2c_builder.build.rootfs import Kind, Rootfs

DTB_FOLDER = "usr/lib/linux-image-{release}"
# A flattened device tree blob, and a device tree overlay (dtc -@ output).
DTB_SUFFIXES = (".dtb", ".dtbo")


def device_trees(kernel_staging: Rootfs, release: str) -> Rootfs:
    """The ``.dtb`` and ``.dtbo`` files that the extracted kernel package ``kernel_staging``
    holds under ``usr/lib/linux-image-<release>/``, at the same paths, with their modes and
    origins; their parent folders are filled in. Empty when the package has none."""
    prefix = DTB_FOLDER.format(release=release) + "/"
    trees = Rootfs()
    for path, entry in sorted(kernel_staging.entries.items()):
        if path.startswith(prefix) and path.endswith(DTB_SUFFIXES) and entry.kind is Kind.FILE:
            trees.add_file(path, entry.data, mode=entry.mode, origin=entry.origin)
    return trees
