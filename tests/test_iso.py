"""`b2c-builder iso`: the ISO's layout, its loaders' entries, and what is missing on the host.

Booting it (BIOS and UEFI) is tests/test_netboot.py's job.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from b2c_builder.boot import iso
from b2c_builder.boot.bootcfg import BootEntry, Format, Unexpressible, render
from b2c_builder.boot.iso import IsoConfig, make_iso, xorriso_command
from b2c_builder.errors import ToolError
from tests.conftest import b2c, require_tool

LINE = "console=ttyS0 b2c.container=\"docker://r/i:1 sh -c 'echo $x ${x} a;b #c d\\e'\""


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    kernel, image, modules = tmp_path / "linux-6.1+x", tmp_path / "img.cpio", tmp_path / "m.cpio"
    kernel.write_bytes(b"MZ kernel " * 1000)
    image.write_bytes(b"070701 image " * 100)
    modules.write_bytes(b"070701 modules " * 100)
    return kernel, image, modules


def test_xorriso_command_makes_a_bios_and_uefi_hybrid(tmp_path: Path) -> None:
    cmd = xorriso_command(tmp_path / "stage", tmp_path / "out.iso", "B2C", Path("/mbr.bin"))
    assert cmd[:3] == ["xorriso", "-as", "mkisofs"]
    joined = " ".join(cmd)
    assert "-isohybrid-mbr /mbr.bin" in joined
    assert "-b isolinux/isolinux.bin -no-emul-boot -boot-load-size 4 -boot-info-table" in joined
    assert "-eltorito-alt-boot -e boot/efi.img -no-emul-boot -isohybrid-gpt-basdat" in joined
    assert cmd[-1] == str(tmp_path / "stage")


def test_entries_use_the_iso_paths(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    kernel, image, modules = inputs
    files = iso.loader_files(IsoConfig(kernel, (image, modules), LINE, tmp_path / "x.iso"))
    entry = BootEntry("/b2c/vmlinuz", ("/b2c/initrd0.img", "/b2c/initrd1.img"), LINE)
    assert files["isolinux/isolinux.cfg"] == render(Format.syslinux, entry)
    assert files["loader/entries/b2c.conf"] == render(Format.systemd_boot, entry)
    assert files["loader/loader.conf"] == "default b2c.conf\ntimeout 0\n"


def test_a_line_a_loader_cannot_pass_is_refused(inputs: tuple[Path, Path, Path]) -> None:
    kernel, image, _ = inputs
    with pytest.raises(Unexpressible, match="SYSLINUX cannot pass 'i' at byte 2"):
        make_iso(IsoConfig(kernel, (image,), "a initrd=x", kernel.with_suffix(".iso")))
    assert not kernel.with_suffix(".iso").exists()


def test_missing_host_files_are_named_with_their_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(iso.HOST_FILES, "isolinux.bin", (tmp_path / "none.bin", "isolinux"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError) as info:
        iso.host_files()
    assert f"{tmp_path / 'none.bin'} (isolinux)" in info.value.message
    assert "xorriso (xorriso)" in info.value.message and "mformat (mtools)" in info.value.message
    assert info.value.hint is not None and "apt-get install" in info.value.hint
    assert "isolinux" in info.value.hint.split() and "mtools" in info.value.hint.split()


def _iso_file(image: Path, path: str) -> bytes:
    xorriso = require_tool("xorriso")
    out = image.parent / ("extracted" + path.replace("/", "_"))
    subprocess.run(
        [xorriso, "-osirrox", "on", "-indev", str(image), "-extract", path, str(out)],
        capture_output=True,
        check=True,
    )
    return out.read_bytes()


def test_iso_layout(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    kernel, image, modules = inputs
    for tool in ("xorriso", "mcopy"):
        require_tool(tool)
    out = tmp_path / "out" / "b2c.iso"
    proc = b2c(
        *("iso", "--kernel", str(kernel), "--initrd", str(image), "--initrd", str(modules)),
        *("--append", LINE, "--output", str(out)),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{out}\n"
    report = subprocess.run(
        ["xorriso", "-indev", str(out), "-report_el_torito", "plain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "El Torito img path :   1  /isolinux/isolinux.bin" in report
    assert "El Torito img path :   2  /boot/efi.img" in report
    assert "UEFI" in report
    assert _iso_file(out, "/b2c/vmlinuz") == kernel.read_bytes()
    assert _iso_file(out, "/b2c/initrd1.img") == modules.read_bytes()
    cfg = _iso_file(out, "/isolinux/isolinux.cfg").decode()
    assert f"    APPEND {LINE}\n" in cfg
    # The EFI image: systemd-boot as the removable-media loader, its entry, the same files.
    efi = tmp_path / "efi.img"
    efi.write_bytes(_iso_file(out, "/boot/efi.img"))

    def fat(path: str) -> bytes:
        return subprocess.run(
            ["mtype", "-i", str(efi), f"::{path}"], capture_output=True, check=True
        ).stdout

    boot = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi").read_bytes()
    assert fat("/EFI/BOOT/BOOTX64.EFI") == boot
    assert fat("/loader/entries/b2c.conf").decode().endswith(f"options {LINE}\n")
    assert fat("/loader/loader.conf") == b"default b2c.conf\ntimeout 0\n"
    assert fat("/b2c/initrd0.img") == image.read_bytes()
