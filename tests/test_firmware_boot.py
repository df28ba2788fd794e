"""`run --pxe` / `--cdrom` / `--firmware`: the QEMU argument list and what is refused."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from b2c_builder.boot import qemu
from b2c_builder.boot.qemu import RunConfig, qemu_cmdline
from b2c_builder.config import Accel, Arch, Firmware
from b2c_builder.errors import ConfigError, ToolError
from tests.conftest import b2c


def option_values(cmd: list[str], name: str) -> list[str]:
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == name]


@pytest.fixture
def tftp(tmp_path: Path) -> Path:
    root = tmp_path / "tftp,root"  # a comma must be doubled inside QEMU option values
    root.mkdir()
    return root


def test_pxe_serves_the_folder_and_keeps_the_nic_rom(tftp: Path) -> None:
    cmd = qemu_cmdline(RunConfig(pxe=tftp, bootfile="boot,x.ipxe"), Accel.tcg, None)
    assert option_values(cmd, "-netdev") == [
        f"user,id=net0,tftp={str(tftp).replace(',', ',,')},bootfile=boot,,x.ipxe"
    ]
    assert option_values(cmd, "-device") == [
        "virtio-net-pci,netdev=net0,bootindex=0",  # no romfile=: iPXE stays
        "virtio-rng-pci",
    ]
    for absent in ("-kernel", "-initrd", "-append", "-drive"):
        assert absent not in cmd


def test_pxe_boot_file_defaults_to_pxelinux(tftp: Path) -> None:
    cmd = qemu_cmdline(RunConfig(pxe=tftp), Accel.tcg, None)
    assert option_values(cmd, "-netdev")[0].endswith(",bootfile=pxelinux.0")


def test_cdrom_is_the_first_boot_device(tmp_path: Path) -> None:
    image = tmp_path / "b2c,1.iso"
    image.write_bytes(b"\0" * 2048)
    cmd = qemu_cmdline(RunConfig(cdrom=image), Accel.tcg, None)
    assert option_values(cmd, "-drive") == [
        f"if=none,id=cd0,media=cdrom,readonly=on,format=raw,file={tmp_path}/b2c,,1.iso"
    ]
    assert "ide-cd,drive=cd0,bootindex=0" in option_values(cmd, "-device")
    # Not netbooting: the NIC's option ROM is dropped as for a kernel boot.
    assert "virtio-net-pci,netdev=net0,romfile=" in option_values(cmd, "-device")


def test_uefi_adds_ovmf_as_pflash(tmp_path: Path) -> None:
    image = tmp_path / "b2c.iso"
    image.write_bytes(b"\0")
    cmd = qemu_cmdline(RunConfig(cdrom=image, firmware=Firmware.uefi), Accel.tcg, None)
    assert option_values(cmd, "-drive")[:2] == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "if=pflash,format=raw,unit=1,snapshot=on,file=/usr/share/OVMF/OVMF_VARS_4M.fd",
    ]
    # A kernel boot under OVMF: the same firmware, then -kernel.
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"MZ")
    cmd = qemu_cmdline(RunConfig(kernel=kernel, firmware=Firmware.uefi), Accel.tcg, None)
    assert cmd.index("-kernel") > cmd.index("-drive")
    assert len(option_values(cmd, "-drive")) == 2


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "nothing to boot"),
        ({"kernel": "k", "pxe": "d"}, "--kernel and --pxe"),
        ({"pxe": "d", "cdrom": "i"}, "--pxe and --cdrom"),
        ({"pxe": "d", "initrds": ("k",)}, "--initrd and --append go with --kernel"),
        ({"cdrom": "i", "append": "quiet"}, "go with --kernel, not --cdrom"),
        ({"pxe": "d", "arch": Arch.arm64}, "amd64 guests only"),
        ({"kernel": "k", "firmware": Firmware.uefi, "arch": Arch.arm64}, "amd64 guests only"),
        ({"pxe": "k"}, "is not a folder"),
        ({"cdrom": "d"}, "is not a file"),
        ({"pxe": "d", "bootfile": " "}, "--bootfile is empty"),
    ],
)
def test_refused_combinations(tmp_path: Path, kwargs: dict[str, object], words: str) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "k").write_bytes(b"MZ")
    (tmp_path / "i").write_bytes(b"\0")
    paths = {"kernel", "pxe", "cdrom"}
    args = {
        k: (tmp_path / v if k in paths and isinstance(v, str) else v) for k, v in kwargs.items()
    }
    if "initrds" in args:
        args["initrds"] = (tmp_path / "k",)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        RunConfig(**args)  # type: ignore[arg-type]


def test_missing_ovmf_names_its_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(qemu, "OVMF_CODE", tmp_path / "OVMF_CODE_4M.fd")
    (tmp_path / "d").mkdir()
    with pytest.raises(ToolError) as info:
        RunConfig(pxe=tmp_path / "d", firmware=Firmware.uefi)
    assert str(tmp_path / "OVMF_CODE_4M.fd") in info.value.message
    assert info.value.hint == "install it: apt-get install ovmf"


def test_cli_dry_run_with_pxe(tftp: Path) -> None:
    proc = b2c(
        *("run", "--pxe", str(tftp), "--bootfile", "http://10.0.2.2:8000/boot.ipxe"),
        *("--firmware", "uefi", "--accel", "tcg", "--dry-run"),
    )
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout)
    assert option_values(cmd, "-netdev")[0].endswith(",bootfile=http://10.0.2.2:8000/boot.ipxe")
    assert any("OVMF_CODE_4M.fd" in value for value in option_values(cmd, "-drive"))


def test_cli_refuses_kernel_options_with_a_firmware_boot(tmp_path: Path) -> None:
    image = tmp_path / "b2c.iso"
    image.write_bytes(b"\0")
    proc = b2c("run", "--cdrom", str(image), "--append", "quiet", "--pipefail", "--dry-run")
    assert proc.returncode == 2 and "qemu-system" not in proc.stdout
    assert (
        "the b2c option flags, --append: only for a kernel boot (--kernel), not with --cdrom"
        in (proc.stderr)
    )
