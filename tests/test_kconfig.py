"""The kernel configuration table: the fragment, the .config checker, the CLI, and Debian's own
kernels (marked network: their config is read from the verified linux-image package)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from b2c_builder.build import kmod
from b2c_builder.build.debian import download, index
from b2c_builder.build.debian.deb import extract_into, new_staging
from b2c_builder.build.rootfs import Origin
from b2c_builder.config import DEFAULT_SUITE, Arch
from b2c_builder.errors import ConfigError, FetchError
from b2c_builder.guest import kconfig
from b2c_builder.guest.kconfig import KERNEL_OPTIONS, Level, check, fragment, lookup, parse_config
from tests.conftest import FALLBACK_SUITE, b2c, require, shared_cache
from tests.kernel import kernel_archive

ARCHES = list(Arch)


def edit(text: str, symbol: str, value: str | None) -> str:
    """``text`` with CONFIG_<symbol>'s line replaced: by ``=value``, by the "is not set"
    comment (value "unset"), or removed (None)."""
    pattern = re.compile(rf"^(CONFIG_{symbol}=.*|# CONFIG_{symbol} is not set)$", re.M)
    assert pattern.search(text), f"CONFIG_{symbol} is not in the text"
    if value is None:
        return pattern.sub("", text)
    if value == "unset":
        return pattern.sub(f"# CONFIG_{symbol} is not set", text)
    return pattern.sub(f"CONFIG_{symbol}={value}", text)


def errors(problems: list[kconfig.Problem]) -> list[str]:
    return [p.option.symbol for p in problems if p.severity == "error"]


# --- the table ------------------------------------------------------------------------------


def test_table_rows_are_unique_and_explained() -> None:
    for arch in ARCHES:
        symbols = [opt.symbol for opt in kconfig.options_for(arch)]
        assert len(symbols) == len(set(symbols)), arch
    for opt in KERNEL_OPTIONS:
        assert opt.why and not opt.why.endswith("."), opt.symbol
        assert opt.values in (("y",), ("y", "m")), opt.symbol
        assert ("m" in opt.values) == (opt.module is not None), opt.symbol


def test_required_modules_are_loaded_by_the_image() -> None:
    """=m is only accepted where /init loads the module (or a module it depends on): the
    modules archive lists kmod.DEFAULT_MODULES. The dependencies of those are checked on
    Debian's real modules in test_debian_modules_accepted_as_m_are_loaded."""
    dependencies = {"9pnet"}  # of 9p and 9pnet_virtio
    for opt in KERNEL_OPTIONS:
        if opt.module and opt.level is Level.required:
            assert opt.module in {*kmod.DEFAULT_MODULES, *dependencies}, opt.symbol


def test_per_architecture_rows() -> None:
    amd64 = {opt.symbol for opt in kconfig.options_for(Arch.amd64)}
    arm64 = {opt.symbol for opt in kconfig.options_for(Arch.arm64)}
    assert {"SERIAL_8250_CONSOLE", "ACPI"} <= amd64 - arm64
    assert {"SERIAL_AMBA_PL011_CONSOLE", "PCI_HOST_GENERIC"} <= arm64 - amd64
    assert {"OVERLAY_FS", "VIRTIO_NET", "9P_FS"} <= amd64 & arm64
    riscv64 = {opt.symbol for opt in kconfig.options_for(Arch.riscv64)}
    assert {"SERIAL_8250_CONSOLE", "PCI_HOST_GENERIC", "RISCV_SBI", "RTC_DRV_GOLDFISH"} <= riscv64
    assert not {"ACPI", "SERIAL_AMBA_PL011", "ARM_PSCI_FW", "RTC_DRV_CMOS"} & riscv64
    ppc64el = {opt.symbol for opt in kconfig.options_for(Arch.ppc64el)}
    assert {"HVC_CONSOLE", "PPC_PSERIES", "VIRTIO_PCI"} <= ppc64el
    assert not {"SERIAL_8250", "FW_CFG_SYSFS"} & ppc64el
    s390x = {opt.symbol for opt in kconfig.options_for(Arch.s390x)}
    assert {"S390_GUEST", "SCLP_VT220_CONSOLE", "VIRTIO_NET", "OVERLAY_FS"} <= s390x
    assert not {"PCI", "VIRTIO_PCI", "RTC_CLASS", "SERIAL_8250"} & s390x


def test_lookup() -> None:
    assert lookup("CONFIG_OVERLAY_FS") is lookup("OVERLAY_FS")
    assert lookup("OVERLAY_FS").module == "overlay"
    with pytest.raises(KeyError):
        lookup("NETFILTER")


def test_bad_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="without CONFIG_"):
        kconfig.KernelOption("CONFIG_X", "why")
    with pytest.raises(ValueError, match="every architecture"):
        kconfig.KernelOption(
            "X",
            "why",
            arches=kconfig.AMD64,
            probe=kconfig.Probe(kconfig.ProbeKind.path, "x", "x"),
        )


# --- the fragment ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
def test_fragment_parses_back_and_passes_its_own_check(arch: Arch) -> None:
    text = fragment(arch)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    # merge_config.sh's input: CONFIG_X=value lines and comments only.
    assert all(re.fullmatch(r"CONFIG_[A-Z0-9_]+=y", line) for line in lines), lines
    values = parse_config(text)
    assert values == {opt.symbol: "y" for opt in kconfig.options_for(arch)}
    assert check(text, arch) == []
    # Each option comes after the comment saying why.
    for opt in kconfig.options_for(arch):
        before = text.split(f"\n{opt.name}=y\n")[0].rsplit("\n", 1)[-1]
        assert before.startswith(f"# {opt.why}"), opt.symbol


def test_fragment_differs_per_architecture() -> None:
    amd64, arm64 = fragment(Arch.amd64), fragment(Arch.arm64)
    assert "CONFIG_SERIAL_8250_CONSOLE=y" in amd64 and "CONFIG_SERIAL_8250_CONSOLE" not in arm64
    assert "CONFIG_SERIAL_AMBA_PL011=y" in arm64 and "PL011" not in amd64


# --- the checker ----------------------------------------------------------------------------


def test_parse_config_forms() -> None:
    text = (
        "#\n# Automatically generated file; DO NOT EDIT.\n#\n"
        'CONFIG_CC_VERSION_TEXT="gcc (Debian 14.2.0-19) 14.2.0 # not a comment = x"\n'
        "CONFIG_NR_CPUS=8192\n\n"
        "CONFIG_OVERLAY_FS=m\n"
        "# CONFIG_NETFILTER is not set\n"
        "CONFIG_HZ=0x100\n"
    )
    assert parse_config(text) == {
        "CC_VERSION_TEXT": '"gcc (Debian 14.2.0-19) 14.2.0 # not a comment = x"',
        "NR_CPUS": "8192",
        "OVERLAY_FS": "m",
        "NETFILTER": None,
        "HZ": "0x100",
    }


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("CONFIG_A=y\nhello world\n", "line 2: 'hello world' is not a kernel configuration"),
        ("# just comments\n\n", "sets no CONFIG_ option"),
        ("", "sets no CONFIG_ option"),
    ],
)
def test_parse_config_refuses_what_is_not_a_config(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)) as info:
        parse_config(text, source="x.config")
    assert info.value.hint and ".config" in info.value.hint


@pytest.mark.parametrize("arch", ARCHES)
def test_modules_and_builtins(arch: Arch) -> None:
    text = fragment(arch)
    # m where a module works is fine; y where m suffices is fine.
    assert check(edit(text, "VIRTIO_NET", "m"), arch) == []
    assert check(edit(text, "OVERLAY_FS", "m"), arch) == []
    # m where it must be built in is wrong.
    (problem,) = check(edit(text, "DEVTMPFS", "m"), arch)
    assert (problem.option.symbol, problem.found, problem.severity) == ("DEVTMPFS", "m", "error")
    assert str(problem) == (
        f"error: CONFIG_DEVTMPFS=m (needs y: built in): {lookup('DEVTMPFS').why}"
    )


@pytest.mark.parametrize(
    ("symbol", "value", "shown"),
    [
        ("OVERLAY_FS", None, "CONFIG_OVERLAY_FS is not set"),
        ("OVERLAY_FS", "unset", "CONFIG_OVERLAY_FS is not set"),
        ("VIRTIO_BLK", None, "CONFIG_VIRTIO_BLK is not set"),
        ("BLK_DEV_INITRD", "n", "CONFIG_BLK_DEV_INITRD=n"),
        ("RD_ZSTD", "unset", "CONFIG_RD_ZSTD is not set"),
        ("CGROUPS", '"y"', 'CONFIG_CGROUPS="y"'),
        ("PACKET", "m", "CONFIG_PACKET=m"),
        ("9P_FS", "2", "CONFIG_9P_FS=2"),
    ],
)
def test_broken_configs_fail_naming_the_option(symbol: str, value: str | None, shown: str) -> None:
    for arch in ARCHES:
        problems = check(edit(fragment(arch), symbol, value), arch)
        assert errors(problems) == [symbol]
        assert str(problems[0]).startswith(f"error: {shown} (needs ")
        assert str(problems[0]).endswith(lookup(symbol).why)


def test_recommended_options_only_warn() -> None:
    text = edit(edit(fragment(Arch.amd64), "RD_XZ", "unset"), "MEMCG", None)
    problems = check(text, Arch.amd64)
    assert [(p.option.symbol, p.severity) for p in problems] == [
        ("RD_XZ", "warning"),
        ("MEMCG", "warning"),
    ]
    assert str(problems[0]).startswith("warning: CONFIG_RD_XZ is not set (needs y: built in): ")


def test_every_missing_option_is_listed_in_table_order() -> None:
    problems = check("CONFIG_X86_64=y\nCONFIG_OVERLAY_FS=m\n", Arch.amd64)
    expected = [o.symbol for o in kconfig.options_for(Arch.amd64) if o.symbol != "OVERLAY_FS"]
    assert [p.option.symbol for p in problems] == expected


def test_architecture_of_a_config() -> None:
    assert kconfig.config_arch(parse_config("CONFIG_X86_64=y\n")) is Arch.amd64
    assert kconfig.config_arch(parse_config("CONFIG_ARM64=y\n")) is Arch.arm64
    assert kconfig.config_arch(parse_config("CONFIG_RISCV=y\n")) is Arch.riscv64
    assert kconfig.config_arch(parse_config("CONFIG_MIPS=y\n")) is None
    with pytest.raises(ConfigError, match="for amd64, not arm64") as info:
        check(fragment(Arch.arm64) + "CONFIG_X86_64=y\n", Arch.arm64)
    assert info.value.hint == "pass --arch amd64, or the .config of an arm64 kernel"


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def broken_config(tmp_path: Path) -> Path:
    text = fragment(Arch.arm64) + "CONFIG_ARM64=y\n"
    text = edit(edit(edit(text, "OVERLAY_FS", None), "DEVTMPFS", "m"), "RD_XZ", "unset")
    path = tmp_path / "broken.config"
    path.write_text(text)
    return path


def test_cli_prints_the_fragment() -> None:
    proc = b2c("kconfig", "--arch", "arm64", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == fragment(Arch.arm64)
    proc = b2c("kconfig", timeout=60)
    assert proc.stdout == fragment(Arch.amd64)


def test_cli_check(tmp_path: Path, broken_config: Path) -> None:
    good = tmp_path / "good.config"
    good.write_text(fragment(Arch.amd64) + "CONFIG_X86_64=y\n")
    proc = b2c("kconfig", "--check", str(good), timeout=60)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
    assert "(amd64): 0 required option(s) missing or wrong, 0 warning(s)" in proc.stderr

    proc = b2c("kconfig", "--check", str(broken_config), timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [
        f"warning: CONFIG_RD_XZ is not set (needs y: built in): {lookup('RD_XZ').why}",
        f"error: CONFIG_DEVTMPFS=m (needs y: built in): {lookup('DEVTMPFS').why}",
        "error: CONFIG_OVERLAY_FS is not set (needs y, or m with module overlay loaded at "
        f"boot): {lookup('OVERLAY_FS').why}",
    ]
    assert "Traceback" not in proc.stderr

    # Only warnings: success.
    only_warning = tmp_path / "warning.config"
    only_warning.write_text(edit(fragment(Arch.amd64), "RD_GZIP", None))
    proc = b2c("kconfig", "--arch", "amd64", "--check", str(only_warning), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("warning: CONFIG_RD_GZIP is not set")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda tmp: tmp / "missing.config", "No such file or directory"),
        (lambda tmp: tmp, "is a directory, not a .config"),
        (lambda tmp: Path("/bin/sh").resolve(), "is a binary file, not a .config"),
        (lambda tmp: _write(tmp / "text", "hello\n"), "line 1: 'hello' is not a kernel"),
        (lambda tmp: _write(tmp / "frag", fragment(Arch.amd64)), "cannot tell which arch"),
    ],
)
def test_cli_check_bad_files(tmp_path: Path, make: Callable[[Path], Path], words: str) -> None:
    path = make(tmp_path)
    proc = b2c("kconfig", "--check", str(path), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert [line for line in lines if line.startswith("ERROR: ") and words in line], lines
    assert any(line.startswith("ERROR: hint: ") for line in lines), lines
    assert proc.stdout == ""


def test_cli_check_arch_mismatch(broken_config: Path) -> None:
    proc = b2c("kconfig", "--arch", "amd64", "--check", str(broken_config), timeout=60)
    assert proc.returncode == 2
    assert "is a configuration for arm64, not amd64" in proc.stderr
    assert "ERROR: hint: pass --arch arm64" in proc.stderr


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- Debian's kernels (network) ---------------------------------------------------------------


@dataclass(frozen=True)
class DebianKernel:
    package: str
    config: str  # /boot/config-<version>
    modules: kmod.ModuleTree


_KERNELS: dict[Arch, DebianKernel] = {}


def _fetch_kernel(arch: Arch, suite: str, cache: Path) -> tuple[index.Package, Path]:
    """The linux-image package of ``suite``'s kernel metapackage for ``arch`` and its .deb,
    fetched and verified. Raises FetchError (HTTP 404 from a partial mirror)."""
    with kernel_archive(arch, suite, cache) as (session, archive, package):
        deb = download.fetch(session, archive.url_for(package), package.sha256, package.size, cache)
    return package, deb


def debian_kernel(arch: Arch) -> DebianKernel:
    """Debian's default kernel for ``arch`` (linux-image-<arch>'s linux-image package), read
    through the project's verified client (from FALLBACK_SUITE when the mirror lacks the
    default suite's); the .deb is cached in the shared cache folder."""
    if arch not in _KERNELS:
        cache = shared_cache()
        try:
            package, deb = _fetch_kernel(arch, DEFAULT_SUITE, cache)
        except FetchError as exc:  # a partial mirror: the previous stable suite's kernel
            if "HTTP 404" not in exc.message:
                raise
            try:
                package, deb = _fetch_kernel(arch, FALLBACK_SUITE, cache)
            except FetchError as again:  # a prerequisite, not a verdict
                require("HTTP 404" not in again.message, f"the mirror lacks it: {again.message}")
                raise
        staging = new_staging(arch)
        extracted = extract_into(staging, deb, Origin(package.name, package.version))
        (config,) = [p for p in extracted.paths if p.startswith("boot/config-")]
        _KERNELS[arch] = DebianKernel(
            package.name,
            staging[config].data.decode(),
            kmod.ModuleTree.from_manifest(staging, arch),
        )
    return _KERNELS[arch]


@pytest.mark.network
@pytest.mark.parametrize("arch", ARCHES)
def test_debian_kernel_config_passes(arch: Arch, tmp_path: Path) -> None:
    kernel = debian_kernel(arch)
    values = parse_config(kernel.config)
    assert kconfig.config_arch(values) is arch
    # Every symbol of the table exists in this kernel (set, or "is not set").
    assert [o.symbol for o in kconfig.options_for(arch) if o.symbol not in values] == []
    assert check(kernel.config, arch) == [], kernel.package
    # And through the command line, the architecture read from the file.
    path = tmp_path / "config"
    path.write_text(kernel.config)
    proc = b2c("kconfig", "--check", str(path), timeout=60)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr
    assert f"({arch}): 0 required option(s) missing or wrong" in proc.stderr


@pytest.mark.network
@pytest.mark.parametrize("arch", ARCHES)
def test_debian_modules_accepted_as_m_are_loaded(arch: Arch) -> None:
    """Where Debian builds a required option as a module, the image's modules archive (the
    closure of kmod.DEFAULT_MODULES) holds that module: accepting =m was honest."""
    kernel = debian_kernel(arch)
    values = parse_config(kernel.config)
    loaded = {
        m.name
        for m in kmod.module_closure(
            kernel.modules, kmod.DEFAULT_MODULES, optional=kmod.DEFAULT_MODULES
        )
    }
    as_modules = [
        opt
        for opt in kconfig.options_for(arch)
        if opt.level is Level.required and values.get(opt.symbol) == "m"
    ]
    assert len(as_modules) >= 5  # overlay, ext4, virtio_net, virtio_blk, 9p...
    assert [o.module for o in as_modules if o.module not in loaded] == []


@pytest.mark.network
@pytest.mark.parametrize(
    ("symbol", "value"),
    [("OVERLAY_FS", None), ("DEVTMPFS", "m"), ("VIRTIO_BLK", None), ("UNIX", "unset")],
)
def test_debian_kernel_config_broken(symbol: str, value: str | None, tmp_path: Path) -> None:
    broken = edit(debian_kernel(Arch.amd64).config, symbol, value)
    assert errors(check(broken, Arch.amd64)) == [symbol]
    path = tmp_path / "config"
    path.write_text(broken)
    proc = b2c("kconfig", "--check", str(path), timeout=60)
    assert proc.returncode == 1
    (line,) = proc.stdout.splitlines()
    assert line.startswith(f"error: CONFIG_{symbol}")
