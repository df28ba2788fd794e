"""The per-architecture table (config.ARCHES) and what reads it."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest
from elftools.elf.enums import ENUM_E_MACHINE

from b2c_builder import run
from b2c_builder.boot import qemu
from b2c_builder.build import elf
from b2c_builder.config import ARCHES, BUILD_SETTINGS, RELEASE_SETTINGS, Arch, parse_size
from b2c_builder.errors import ConfigError
from b2c_builder.guest import kconfig


def test_every_arch_has_one_row() -> None:
    assert list(ARCHES) == list(Arch)
    assert all(arch.facts is ARCHES[arch] for arch in Arch)
    machines = [facts.uname_machine for facts in ARCHES.values()]
    assert len(set(machines)) == len(machines), machines


@pytest.mark.parametrize("arch", list(Arch))
def test_facts_agree_with_each_other(arch: Arch) -> None:
    facts = arch.facts
    # The loader's folder is a usr-merge link (else extraction would put it elsewhere).
    assert facts.loader.split("/")[1] in facts.usrmerge
    # Debian's ppc64el names the machine powerpc64le in its multiarch tuple and kernel
    # flavour, and QEMU's emulator for it is qemu-system-ppc64 (both byte orders).
    machine = {"ppc64le": "powerpc64le"}.get(facts.uname_machine, facts.uname_machine)
    assert facts.multiarch.startswith(machine + "-")
    assert facts.elf_machine in ENUM_E_MACHINE
    assert facts.qemu_binary.endswith(facts.uname_machine.removesuffix("le"))
    assert run.PROVIDERS[facts.qemu_binary] == facts.qemu_package
    assert facts.cross_cc == f"{facts.multiarch}-gcc"
    assert facts.cross_cc in run.PROVIDERS
    assert facts.kernel_package == f"linux-image-{arch if arch != Arch.ppc64el else machine}"
    assert "{release}" in facts.kernel_image and facts.kernel_image.startswith("boot/")
    # Only PCI devices have an option ROM to drop; the entropy device is on the NIC's bus.
    assert facts.qemu_nic.rsplit("-", 1)[1] == facts.qemu_rng.rsplit("-", 1)[1]


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", Arch.amd64),
        ("aarch64", Arch.arm64),
        ("riscv64", Arch.riscv64),
        ("ppc64le", Arch.ppc64el),
        ("s390x", Arch.s390x),
    ],
)
def test_host_reads_the_machine_from_the_table(
    monkeypatch: pytest.MonkeyPatch, machine: str, arch: Arch
) -> None:
    real = os.uname()
    fake = os.uname_result((*real[:4], machine))
    monkeypatch.setattr(os, "uname", lambda: fake)
    assert Arch.host() is arch


def test_an_unknown_host_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = os.uname_result((*os.uname()[:4], "mips64"))
    monkeypatch.setattr(os, "uname", lambda: fake)
    with pytest.raises(ConfigError, match="'mips64'") as info:
        Arch.host()
    assert info.value.hint == "pass --arch"


@pytest.mark.parametrize("arch", list(Arch))
def test_kconfig_and_qemu_read_the_same_row(arch: Arch) -> None:
    assert kconfig.config_arch({arch.facts.kconfig_symbol: "y"}) is arch
    assert qemu.added_by_run("", arch).startswith(f"console={arch.facts.qemu_console} ")


@pytest.mark.parametrize("arch", list(Arch))
def test_elf_matches_reads_byte_order_and_machine_from_the_row(arch: Arch) -> None:
    facts = arch.facts
    info = elf.ElfInfo(64, facts.little_endian, facts.elf_machine, None, (), None, (), ())
    assert elf.matches(info, arch)
    assert not elf.matches(dataclasses.replace(info, little_endian=not facts.little_endian), arch)
    assert not elf.matches(dataclasses.replace(info, elfclass=32), arch)
    others = [a for a in Arch if a.facts.elf_machine != facts.elf_machine]
    assert not any(elf.matches(info, other) for other in others)


def test_max_size_help_states_the_units_parse_size_reads() -> None:
    """--max-size reads MB as MiB: its help says which unit is which, and its example (20MB)
    in bytes, in words checked here against parse_size."""
    text = BUILD_SETTINGS["max_size"].description
    assert RELEASE_SETTINGS["max_size"].description == text
    units = re.findall(r"\b(\w), (\wB) or (\wiB) = 1024 (bytes|\wiB)\b", text)
    assert [u[:3] for u in units] == [("K", "KB", "KiB"), ("M", "MB", "MiB"), ("G", "GB", "GiB")]
    for *names, base in units:
        size = 1024 * (1 if base == "bytes" else parse_size(f"1{base}"))
        assert {parse_size(f"1{name}") for name in names} == {size}, names
    example = re.search(r"so (\d+)MB is \1MiB, (\d+) bytes", text)
    assert example is not None, text
    assert parse_size(f"{example[1]}MB") == parse_size(f"{example[1]}MiB") == int(example[2])
