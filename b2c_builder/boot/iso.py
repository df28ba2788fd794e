"""``b2c-builder iso``: a hybrid ISO that boots a kernel + initrds unattended, BIOS and UEFI.

BIOS (CD or USB stick): ISOLINUX, whose APPEND passes the line raw. UEFI: systemd-boot on
the El Torito EFI image (a FAT file system made with mtools), whose ``options`` also pass it
raw. GRUB is not used: its ``linux`` command re-quotes arguments, so it cannot hand the
kernel a line holding ' or an inner " (see bootcfg.py). Both loaders read the same files
under fixed names (``/b2c/vmlinuz``, ``/b2c/initrd0.img``...); the FAT image holds a second
copy of them, since systemd-boot only reads its own partition. xorriso writes the ISO with
an isohybrid MBR and a GPT entry for the EFI image, so the file also boots from a USB stick.

Everything comes from Debian packages found on the host: xorriso, isolinux, syslinux-common,
systemd-boot-efi, mtools.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from b2c_builder.boot import bootcfg
from b2c_builder.errors import ConfigError, ToolError
from b2c_builder.log import log
from b2c_builder.run import PROVIDERS, run

# Files the ISO needs from the host: what, where Debian installs it, which package.
HOST_FILES: dict[str, tuple[Path, str]] = {
    "isolinux.bin": (Path("/usr/lib/ISOLINUX/isolinux.bin"), "isolinux"),
    "isohdpfx.bin": (Path("/usr/lib/ISOLINUX/isohdpfx.bin"), "isolinux"),
    "ldlinux.c32": (Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"), "syslinux-common"),
    "systemd-bootx64.efi": (
        Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        "systemd-boot-efi",
    ),
}
HOST_TOOLS = ("xorriso", "mformat", "mmd", "mcopy")

FOLDER = "b2c"  # where the kernel and initrds go, on the ISO and on the EFI image
EFI_IMAGE = "boot/efi.img"
FAT_SLACK = 2 * 2**20  # bytes of FAT image beyond its files: FAT tables, directories


@dataclass(frozen=True)
class IsoConfig:
    """What ``b2c-builder iso`` was asked: host files, the command line, the output."""

    kernel: Path
    initrds: tuple[Path, ...]
    append: str
    output: Path
    label: str = "b2c"
    volume_id: str = "B2C"


def boot_entry(cfg: IsoConfig) -> bootcfg.BootEntry:
    """The entry both loaders boot, with the ISO's fixed paths."""
    initrds = tuple(f"/{FOLDER}/initrd{n}.img" for n in range(len(cfg.initrds)))
    return bootcfg.BootEntry(f"/{FOLDER}/vmlinuz", initrds, cfg.append, cfg.label)


def loader_files(cfg: IsoConfig) -> dict[str, str]:
    """The configuration files, by path: isolinux.cfg (ISO) and systemd-boot's (EFI image).
    Raises bootcfg.Unexpressible when a loader cannot pass the line."""
    entry = boot_entry(cfg)
    return {
        "isolinux/isolinux.cfg": bootcfg.render(bootcfg.Format.syslinux, entry),
        f"loader/entries/{cfg.label}.conf": bootcfg.render(bootcfg.Format.systemd_boot, entry),
        "loader/loader.conf": f"default {cfg.label}.conf\n"
        + bootcfg.loader_settings(bootcfg.Format.systemd_boot),
    }


def added_text(cfg: IsoConfig) -> str:
    """The longer of what ISOLINUX and systemd-boot add to the line, for the length check."""
    entry = boot_entry(cfg)
    return max(
        (
            bootcfg.added_text(f, entry)
            for f in (bootcfg.Format.syslinux, bootcfg.Format.systemd_boot)
        ),
        key=lambda text: len(text.encode()),
    )


def host_files() -> dict[str, Path]:
    """The host files and tools the ISO needs, or one ToolError naming every missing one
    with its Debian package."""
    missing: dict[str, str] = {}
    found: dict[str, Path] = {}
    for name, (path, package) in HOST_FILES.items():
        if path.is_file():
            found[name] = path
        else:
            missing[str(path)] = package
    for tool in HOST_TOOLS:
        if (located := shutil.which(tool)) is None:
            missing[tool] = PROVIDERS[tool]
        else:
            found[tool] = Path(located)
    if missing:
        what = ", ".join(f"{name} ({package})" for name, package in missing.items())
        packages = " ".join(sorted(set(missing.values())))
        raise ToolError(
            f"Could not find {what}, which a bootable ISO needs",
            hint=f"install them: apt-get install {packages}",
        )
    return found


def xorriso_command(stage: Path, output: Path, volume_id: str, mbr: Path) -> list[str]:
    """The xorriso (mkisofs emulation) command for a BIOS + UEFI hybrid ISO of ``stage``."""
    return [
        "xorriso", "-as", "mkisofs",
        "-o", str(output),
        "-V", volume_id,
        "-r", "-J", "-joliet-long",
        "-isohybrid-mbr", str(mbr),
        "-c", "isolinux/boot.cat",
        "-b", "isolinux/isolinux.bin", "-no-emul-boot", "-boot-load-size", "4",
        "-boot-info-table",
        "-eltorito-alt-boot",
        "-e", EFI_IMAGE, "-no-emul-boot", "-isohybrid-gpt-basdat",
        str(stage),
    ]  # fmt: skip


def _fat_image(path: Path, files: dict[str, Path | str], tools: dict[str, Path]) -> None:
    """A FAT file system in ``path`` holding ``files`` (image path -> host file or text)."""
    size = FAT_SLACK + sum(
        src.stat().st_size if isinstance(src, Path) else len(src.encode()) for src in files.values()
    )
    with path.open("wb") as image:
        image.truncate(-(-size // 2**20) * 2**20)
    reason = "make the ISO's EFI boot image"
    run([str(tools["mformat"]), "-i", str(path), "-v", "B2C-EFI", "::"], reason=reason)
    folders = sorted({str(Path(name).parent) for name in files} - {"."})
    every = sorted({str(p) for f in folders for p in [Path(f), *Path(f).parents]} - {"."})
    if every:
        run([str(tools["mmd"]), "-i", str(path), *(f"::/{d}" for d in every)], reason=reason)
    with tempfile.TemporaryDirectory(prefix="b2c-iso-text-") as tmp:
        for name, src in files.items():
            if isinstance(src, str):
                text = Path(tmp) / Path(name).name
                text.write_text(src)
                src = text
            run([str(tools["mcopy"]), "-i", str(path), str(src), f"::/{name}"], reason=reason)


def make_iso(cfg: IsoConfig) -> Path:
    """Write ``cfg.output``; returns it. Nothing is left at ``cfg.output`` on failure.

    Raises ConfigError for missing inputs, bootcfg.Unexpressible for a line a loader cannot
    pass, ToolError for a missing host tool or file (naming its package) or a failed one.
    """
    for what, path in [("--kernel", cfg.kernel)] + [("--initrd", p) for p in cfg.initrds]:
        if not path.is_file():
            raise ConfigError(f"{what} {path} is not a file", hint="check the path")
    if cfg.output.suffix.lower() != ".iso":
        raise ConfigError(f"--output {cfg.output}: name it *.iso", hint="e.g. --output b2c.iso")
    configs = loader_files(cfg)
    tools = host_files()
    entry = boot_entry(cfg)
    payload: dict[str, Path] = {entry.kernel.lstrip("/"): cfg.kernel}
    payload.update(
        {name.lstrip("/"): src for name, src in zip(entry.initrds, cfg.initrds, strict=True)}
    )
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="b2c-iso-", dir=cfg.output.parent) as tmp:
        stage = Path(tmp) / "stage"
        for name, src in [
            ("isolinux/isolinux.bin", tools["isolinux.bin"]),
            ("isolinux/ldlinux.c32", tools["ldlinux.c32"]),
            *payload.items(),
        ]:
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, stage / name)
        (stage / "isolinux" / "isolinux.cfg").write_text(configs["isolinux/isolinux.cfg"])
        efi: dict[str, Path | str] = {"EFI/BOOT/BOOTX64.EFI": tools["systemd-bootx64.efi"]}
        efi.update({name: text for name, text in configs.items() if name.startswith("loader/")})
        efi.update(payload)
        (stage / EFI_IMAGE).parent.mkdir(parents=True, exist_ok=True)
        _fat_image(stage / EFI_IMAGE, efi, tools)
        partial = Path(tmp) / cfg.output.name
        command = xorriso_command(stage, partial, cfg.volume_id, tools["isohdpfx.bin"])
        run([str(tools["xorriso"]), *command[1:]], reason="write the ISO")
        os.replace(partial, cfg.output)
    log.info("ISO: %s (%.1f MiB)", cfg.output, cfg.output.stat().st_size / 2**20)
    return cfg.output
