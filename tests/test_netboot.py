"""Proof by booting: the generated entries hand the kernel the command line byte for byte.

Each test writes an entry with `b2c-builder bootcfg` (or an ISO with `b2c-builder iso`),
boots it under QEMU (TCG) with `run --pxe` / `--cdrom`, and compares /proc/cmdline, printed
in hex by a busybox /init, with the intended line and with what bootcfg.kernel_cmdline
predicts. The /init also prints a token from the second initrd (the modules archive's
place), so both initrds are proven loaded. Run these under `flock /tmp/b2c-qemu.lock`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from b2c_builder.boot import qemu
from b2c_builder.boot.bootcfg import BootEntry, Format, kernel_cmdline
from b2c_builder.boot.console import ExitCode
from b2c_builder.build.cpio import write_cpio
from b2c_builder.build.rootfs import Kind, Rootfs
from b2c_builder.config import Accel, Firmware
from tests.conftest import ROOT, b2c, require_tool
from tests.kernel import DebianKernel
from tests.test_bootcfg import GRUB_NASTY, IPXE_NASTY, NASTY

pytestmark = [pytest.mark.qemu, pytest.mark.network]

INIT = b"""#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
echo "B2C-SECOND-INITRD $(busybox cat /etc/second-initrd)"
echo "B2C-CMDLINE-HEX $(busybox od -A n -t x1 -v /proc/cmdline | busybox tr -d ' \\n')"
echo "Execution is over, pipeline status: 0"
busybox poweroff -f
"""


@dataclass(frozen=True)
class Payload:
    """A kernel and two initrds in a folder, and the token the second one carries."""

    folder: Path
    kernel: str
    initrds: tuple[str, str]
    token: str


def write_payload(folder: Path, kernel: Path) -> Payload:
    """Debian's kernel, a busybox initramfs (made with the project's cpio writer, so that
    /dev/console needs no root) and a second archive holding a fresh token."""
    busybox = Path(require_tool("busybox")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernel, folder / "vmlinuz")
    image = Rootfs()
    image.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    image.add_symlink("bin/sh", "busybox")
    image.add_dir("proc")
    image.add_dir("etc")
    image.add_device("dev/console", Kind.CHAR, 5, 1)
    image.add_file("init", INIT, 0o755)
    token = uuid.uuid4().hex
    second = Rootfs()
    second.add_file("etc/second-initrd", f"{token}\n".encode())
    for name, manifest in (("initrd.cpio", image), ("second.cpio", second)):
        with (folder / name).open("wb") as out:
            write_cpio(manifest, out, source_date_epoch=0)
    return Payload(folder, "vmlinuz", ("initrd.cpio", "second.cpio"), token)


@pytest.fixture
def payload(debian_kernel: DebianKernel, tmp_path: Path) -> Payload:
    return write_payload(tmp_path / "root", debian_kernel.vmlinuz)


@dataclass(frozen=True)
class Booted:
    cmdline: str  # /proc/cmdline without the newline the kernel adds
    second: str  # the token read from the second initrd
    seconds: float  # QEMU start -> the cmdline line on the console


def boot(cfg: qemu.RunConfig, name: str) -> Booted:
    """Boot under TCG; fail unless the guest printed its command line and status 0."""
    require_tool("qemu-system-x86_64")
    lines: list[str] = []
    when: dict[str, float] = {}
    start = time.monotonic()

    def echo(line: str) -> None:
        lines.append(line)
        if line.startswith("B2C-"):
            when[line.split()[0]] = time.monotonic() - start

    result = qemu.boot(cfg, echo=echo)
    tail = "\n".join(lines[-40:])
    assert result.exit_code == 0, f"{result.summary()}\n{tail}"
    (hexline,) = [line for line in lines if line.startswith("B2C-CMDLINE-HEX ")]
    (second,) = [line for line in lines if line.startswith("B2C-SECOND-INITRD ")]
    raw = bytes.fromhex(hexline.split()[1]).decode()
    assert raw.endswith("\n"), raw
    booted = Booted(raw[:-1], second.split(" ", 1)[1].strip(), when["B2C-CMDLINE-HEX"])
    print(f"\nTCG boot, {name}: /proc/cmdline after {booted.seconds:.1f}s", file=sys.stderr)
    return booted


def run_config(tmp_path: Path, **kwargs: object) -> qemu.RunConfig:
    return qemu.RunConfig(
        accel=Accel.tcg,
        memory="512M",
        timeout=300,
        serial_log=tmp_path / "serial.log",
        **kwargs,  # type: ignore[arg-type]
    )


def bootcfg(fmt: Format, payload: Payload, line: str, *, root: str = "") -> str:
    proc = b2c(
        *("bootcfg", "--format", str(fmt), "--kernel", root + payload.kernel),
        *(arg for name in payload.initrds for arg in ("--initrd", root + name)),
        *("--append", line),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --- PXELINUX over TFTP ---------------------------------------------------------------------


def test_pxelinux_over_tftp(payload: Payload, tmp_path: Path) -> None:
    for name, path in (
        ("pxelinux.0", Path("/usr/lib/PXELINUX/pxelinux.0")),
        ("ldlinux.c32", Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")),
    ):
        if not path.is_file():
            pytest.fail(f"{path} is missing: apt-get install pxelinux syslinux-common")
        shutil.copyfile(path, payload.folder / name)
    (payload.folder / "pxelinux.cfg").mkdir()
    entry = bootcfg(Format.pxelinux, payload, NASTY)
    (payload.folder / "pxelinux.cfg" / "default").write_text(entry)

    booted = boot(run_config(tmp_path, pxe=payload.folder), "PXELINUX over TFTP")

    assert booted.second == payload.token
    assert booted.cmdline == f"BOOT_IMAGE=vmlinuz {NASTY} initrd=initrd.cpio,second.cpio"
    assert booted.cmdline == kernel_cmdline(
        Format.pxelinux, BootEntry("vmlinuz", payload.initrds, NASTY)
    )


# --- iPXE: a script over TFTP, and over HTTP from `b2c-builder serve` ---------------------------


def ipxe_expected(line: str, *, uefi: bool) -> str:
    return ("vmlinuz " if uefi else "") + f"initrd=initrd0.img initrd=initrd1.img {line}"


def test_ipxe_script_over_tftp(payload: Payload, tmp_path: Path) -> None:
    (payload.folder / "boot.ipxe").write_text(bootcfg(Format.ipxe, payload, IPXE_NASTY))

    cfg = run_config(tmp_path, pxe=payload.folder, bootfile="boot.ipxe")
    booted = boot(cfg, "iPXE script over TFTP, BIOS")

    assert booted.second == payload.token
    assert booted.cmdline == ipxe_expected(IPXE_NASTY, uefi=False)


@pytest.fixture
def served(payload: Payload) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """`b2c-builder serve` on the payload folder, on a free port of 127.0.0.1."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "b2c_builder", "serve", str(payload.folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Serving "), first
        yield int(first.rsplit(":", 1)[1].rstrip("/\n")), proc
    finally:
        proc.terminate()  # our own child, by its handle
        proc.wait(timeout=10)


@pytest.mark.parametrize("firmware", [Firmware.bios, Firmware.uefi])
def test_ipxe_script_over_http(
    payload: Payload,
    served: tuple[int, subprocess.Popen[str]],
    tmp_path: Path,
    firmware: Firmware,
) -> None:
    port, server = served
    (payload.folder / "boot.ipxe").write_text(bootcfg(Format.ipxe, payload, IPXE_NASTY))
    url = f"http://10.0.2.2:{port}/boot.ipxe"
    cfg = run_config(tmp_path, pxe=payload.folder, bootfile=url, firmware=firmware)

    booted = boot(cfg, f"iPXE script over HTTP, {firmware}")

    assert booted.second == payload.token
    uefi = firmware is Firmware.uefi
    # Under UEFI the kernel found its initrds only through the initrd= names (Debian's
    # iPXE 1.0.0+git-20190125 has no LoadFile2 initrd support).
    assert booted.cmdline == ipxe_expected(IPXE_NASTY, uefi=uefi)
    entry = BootEntry("vmlinuz", payload.initrds, IPXE_NASTY)
    assert booted.cmdline == kernel_cmdline(Format.ipxe, entry, uefi=uefi)
    server.terminate()
    _, log = server.communicate(timeout=10)
    for path in ("/boot.ipxe", "/vmlinuz", "/initrd.cpio", "/second.cpio"):
        assert f'"GET {path} HTTP/1.1" 200' in log, log


def test_ipxe_under_uefi_needs_the_initrd_names(payload: Payload, tmp_path: Path) -> None:
    """The control: the same script without the initrd= names boots a kernel that finds no
    initramfs under UEFI (Debian's iPXE does not hand initrds over by itself)."""
    script = bootcfg(Format.ipxe, payload, "console=ttyS0 panic=-1")
    unnamed = script.replace(" initrd=initrd0.img initrd=initrd1.img", "")
    assert unnamed != script
    (payload.folder / "boot.ipxe").write_text(unnamed)
    cfg = run_config(tmp_path, pxe=payload.folder, bootfile="boot.ipxe")
    cfg = qemu.RunConfig(**{**cfg.__dict__, "firmware": Firmware.uefi})
    lines: list[str] = []
    result = qemu.boot(cfg, echo=lines.append)
    assert result.exit_code == ExitCode.KERNEL_PANIC, result.summary()
    assert not any(line.startswith("B2C-") for line in lines)
    assert any("Unable to mount root fs" in line for line in lines), "\n".join(lines[-20:])


# --- the ISO, under BIOS (ISOLINUX) and UEFI (systemd-boot) -----------------------------------


@pytest.fixture
def image(payload: Payload, tmp_path: Path) -> Path:
    out = tmp_path / "b2c.iso"
    proc = b2c(
        *("iso", "--kernel", str(payload.folder / payload.kernel)),
        *(arg for name in payload.initrds for arg in ("--initrd", str(payload.folder / name))),
        *("--append", NASTY, "--output", str(out)),
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_iso_under_bios(payload: Payload, image: Path, tmp_path: Path) -> None:
    booted = boot(run_config(tmp_path, cdrom=image), "ISO, BIOS (ISOLINUX)")
    assert booted.second == payload.token
    assert booted.cmdline == (
        f"BOOT_IMAGE=/b2c/vmlinuz {NASTY} initrd=/b2c/initrd0.img,/b2c/initrd1.img"
    )


def test_iso_under_uefi(payload: Payload, image: Path, tmp_path: Path) -> None:
    cfg = run_config(tmp_path, cdrom=image, firmware=Firmware.uefi)
    booted = boot(cfg, "ISO, UEFI (systemd-boot)")
    assert booted.second == payload.token
    assert booted.cmdline == f"initrd=\\b2c\\initrd0.img initrd=\\b2c\\initrd1.img {NASTY}"


# --- GRUB, netbooted: its nastiest line, and why the line is refused ------------------


def grub_netdir(payload: Payload) -> str:
    """GRUB's PXE image and modules in the TFTP folder; returns the DHCP boot file."""
    tool = require_tool("grub-mknetdir")
    if not Path("/usr/lib/grub/i386-pc").is_dir():
        pytest.fail("/usr/lib/grub/i386-pc is missing: apt-get install grub-pc-bin")
    netdir = [f"--net-directory={payload.folder}", "--subdir=boot/grub"]
    subprocess.run([tool, *netdir, "-d", "/usr/lib/grub/i386-pc"], check=True, capture_output=True)
    return "boot/grub/i386-pc/core.0"


def test_grub_netboot(payload: Payload, tmp_path: Path) -> None:
    bootfile = grub_netdir(payload)
    grub_cfg = bootcfg(Format.grub, payload, GRUB_NASTY, root="/")
    (payload.folder / "boot" / "grub" / "grub.cfg").write_text(grub_cfg)

    cfg = run_config(tmp_path, pxe=payload.folder, bootfile=bootfile)
    booted = boot(cfg, "GRUB over TFTP, BIOS")

    assert booted.second == payload.token
    assert booted.cmdline == f"BOOT_IMAGE=/vmlinuz {GRUB_NASTY}"


def test_grub_rewrites_what_bootcfg_refuses(payload: Payload, tmp_path: Path) -> None:
    """A hand-written GRUB entry with the usual quoting: the kernel gets another line, which
    is why `bootcfg --format grub` refuses it instead of writing it."""
    bootfile = grub_netdir(payload)
    line = "console=ttyS0 panic=-1 b2c.container=\"docker://r/i:1 sh -c 'exit 0'\""
    refused = b2c("bootcfg", "--format", "grub", "--kernel", "/vmlinuz", "--append", line)
    assert refused.returncode == 2 and "GRUB cannot pass" in refused.stderr
    (payload.folder / "boot" / "grub" / "grub.cfg").write_text(
        "set timeout=0\nmenuentry naive {\n"
        f"    linux /vmlinuz {line}\n"
        "    initrd /initrd.cpio /second.cpio\n}\n"
    )

    booted = boot(run_config(tmp_path, pxe=payload.folder, bootfile=bootfile), "GRUB, naive")

    assert booted.cmdline == (
        "BOOT_IMAGE=/vmlinuz console=ttyS0 panic=-1 "
        "\"b2c.container=docker://r/i:1 sh -c \\'exit 0\\'\""
    )
    assert booted.cmdline != f"BOOT_IMAGE=/vmlinuz {line}"
