"""Boot entries: each format's quoting round-trips through a model of that loader's parser.

The models below are written from the loaders' sources, independently of bootcfg.py: they
read the generated file the way the loader does and return what the kernel receives. Real
boots of the same entries (tests/test_netboot.py) check the models against the loaders.
GRUB's own script checker (grub-script-check) also reads every generated grub.cfg.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from b2c_builder.boot.bootcfg import (
    BootEntry,
    Format,
    Unexpressible,
    added_text,
    grub_parameter,
    kernel_cmdline,
    render,
)
from b2c_builder.errors import ConfigError
from tests.conftest import b2c, require_tool

# The issue's line: a double-quoted b2c.container value with spaces, ', $x, ${x}, ;, # and \.
NASTY = (
    "console=ttyS0 panic=-1 "
    "b2c.container=\"docker://registry.example/ci/job:1 sh -c 'echo $x ${x} a;b #c d\\e'\" "
    "b2c.pipefail"
)
KERNEL = "/b2c/vmlinuz"
INITRDS = ("/b2c/initramfs.cpio.zst", "/b2c/modules.cpio.zst")


# --- models of the loaders' parsers (what the kernel receives from a generated file) ---------


def syslinux_model(config: str) -> str:
    """ldlinux (com32/elflink/ldlinux readconfig.c, execute.c, kernel.c): lines end at CR or
    LF, keywords are case-insensitive, values start after bytes <= 0x20."""
    labels: dict[str, dict[str, str]] = {}
    default, current = "", None
    for raw in config.split("\n"):
        line = raw.split("\r")[0].lstrip("".join(map(chr, range(0x21))))
        keyword, _, rest = line.partition(" ")
        value = rest.lstrip("".join(map(chr, range(0x21))))
        keyword = keyword.lower()
        if keyword == "default":
            default = value
        elif keyword == "label":
            current = value
            labels[current] = {}
        elif current is not None and keyword in ("linux", "initrd", "append"):
            labels[current][keyword] = value
    entry = labels[default]
    append = entry.get("append", "")
    initrd = f" initrd={entry['initrd']}" if "initrd" in entry else ""
    cmd = f"{entry['linux']}{' ' if append else ''}{append}{initrd}"
    kernel, _, args = cmd.partition(" ")  # execute(): the kernel name ends at white space
    args = args.lstrip("".join(map(chr, range(0x21))))
    cmdline = f"BOOT_IMAGE={kernel} {args}"
    # kernel.c loads the initrds of the first "initrd=" anywhere in the command line.
    first = cmdline.index("initrd=") + len("initrd=") if "initrd=" in cmdline else None
    loaded = re.split(r"[ ]", cmdline[first:])[0].split(",") if first is not None else []
    assert loaded == (entry["initrd"].split(",") if "initrd" in entry else []), loaded
    return cmdline


def grub_model(config: str) -> str:
    """GRUB: the linux command's words (POSIX sh word rules hold for the bare and single-quoted
    words bootcfg writes), joined as grub_create_loader_cmdline does (grub-core/lib/cmdline.c)."""
    (linux,) = [line for line in config.splitlines() if line.strip().startswith("linux ")]
    words = shlex.split(linux)[1:]
    out = []
    for word in words:
        escaped = re.sub(r"([\\'\"])", r"\\\1", word)
        out.append(f'"{escaped}"' if " " in word else escaped)
    return "BOOT_IMAGE=" + " ".join(out)


def ipxe_model(script: str, *, uefi: bool = False) -> str:
    """iPXE (core/exec.c, core/settings.c, image/script.c): split on isspace with no quoting,
    '#'-words end the command, ${name[:type]} expanded innermost-first until none is left;
    'set NAME:hex HH' stores a byte; the kernel gets the words joined by one space."""
    assert script.startswith("#!ipxe\n")
    values: dict[str, bytes] = {}
    lines = script.split("\n")
    merged: list[str] = []
    for line in lines:  # a trailing backslash continues the line
        if merged and merged[-1].endswith("\\"):
            merged[-1] = merged[-1][:-1] + line
        else:
            merged.append(line)

    def expand(token: str) -> str:
        while True:
            start = end = None
            for i in range(len(token)):
                if token[i : i + 2] == "${":
                    start = i
                if start is not None and token[i] == "}":
                    end = i
                    break
            if end is None or start is None:
                return token
            name, _, kind = token[start + 2 : end].partition(":")
            raw = values.get(name)
            value = "" if raw is None else (raw.decode() if kind == "string" else raw.hex())
            token = token[:start] + value + token[end + 1 :]

    kernel_words: list[str] = []
    for line in merged:
        tokens = line.split()
        for i, token in enumerate(tokens):
            if token.startswith("#") or token in (";", "&&", "||"):
                tokens = tokens[:i]
                break
        if not tokens:
            continue
        words = [expand(t) for t in tokens]
        if words[0] == "set":
            name, _, kind = words[1].partition(":")
            assert kind == "hex"
            values[name] = bytes.fromhex(words[2])
        elif words[0] == "kernel":
            kernel_words = words[1:]
    image, *args = kernel_words
    return " ".join(([image.rsplit("/", 1)[-1]] if uefi else []) + args)


def systemd_boot_model(entry: str) -> str:
    """systemd-boot v252 (src/boot/efi/boot.c): lines end at CR or LF, lose leading/trailing
    spaces and tabs and one pair of double quotes around the whole value; options lines join
    with a space; each initrd adds initrd=<path with backslashes> in front."""
    options: list[str] = []
    initrds: list[str] = []
    for raw in re.split(r"[\r\n]", entry):
        line = raw.strip(" \t")
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([^ \t]*)[ \t]+(.*)", line)
        if match is None:  # a key without a value is skipped
            continue
        key, value = match.groups()
        if value.startswith('"') and line.endswith('"'):
            value = value[1:-1]
        if key == "options":
            options.append(value)
        elif key == "initrd":
            initrds.append("initrd=" + value.replace("/", "\\"))
    return " ".join(initrds + ([" ".join(options)] if options else []))


def model(fmt: Format, text: str, *, uefi: bool = False) -> str:
    if fmt in (Format.syslinux, Format.pxelinux):
        return syslinux_model(text)
    if fmt is Format.grub:
        return grub_model(text)
    if fmt is Format.ipxe:
        return ipxe_model(text, uefi=uefi)
    return systemd_boot_model(text)


# --- the line, format by format ----------------------------------------------------


@pytest.mark.parametrize("fmt", [Format.syslinux, Format.pxelinux, Format.systemd_boot])
def test_nasty_line_passes_byte_for_byte(fmt: Format) -> None:
    entry = BootEntry(KERNEL, INITRDS, NASTY)
    text = render(fmt, entry)
    received = model(fmt, text)
    assert received == kernel_cmdline(fmt, entry)
    expected = {
        Format.syslinux: f"BOOT_IMAGE={KERNEL} {NASTY} initrd={','.join(INITRDS)}",
        Format.pxelinux: f"BOOT_IMAGE={KERNEL} {NASTY} initrd={','.join(INITRDS)}",
        Format.systemd_boot: (
            "initrd=\\b2c\\initramfs.cpio.zst initrd=\\b2c\\modules.cpio.zst " + NASTY
        ),
    }[fmt]
    assert received == expected


def test_grub_refuses_the_nasty_line_naming_the_character() -> None:
    with pytest.raises(Unexpressible) as info:
        render(Format.grub, BootEntry(KERNEL, INITRDS, NASTY))
    offset = NASTY.index('"')
    assert info.value.message.startswith(f"GRUB cannot pass '\"' at byte {offset}: ")
    assert info.value.hint is not None and '"name=value with spaces"' in info.value.hint


def test_ipxe_refuses_the_nasty_line_naming_the_character() -> None:
    with pytest.raises(Unexpressible) as info:
        render(Format.ipxe, BootEntry(KERNEL, INITRDS, NASTY))
    offset = NASTY.index("${x}")
    assert info.value.message.startswith(f"iPXE cannot pass '$' at byte {offset}: ")
    assert "${...}" in info.value.message
    # A fix that works when applied as written (a '${' split from its '}' is a shell error).
    assert info.value.hint is not None
    assert info.value.hint.startswith("for a shell variable, write $NAME without braces")


# The nastiest lines GRUB and iPXE can pass (also booted in tests/test_netboot.py).
GRUB_NASTY = (
    "console=ttyS0 panic=-1 "
    '"b2c.container=docker://registry.example/ci/job:1 sh -c echo $x ${x} a;b #c" '
    'semi;colon #hash $x ${x} back\\\\slash it\\\'s \\"q\\"\ttab'
)
IPXE_NASTY = (
    "console=ttyS0 panic=-1 "
    "b2c.container=\"docker://registry.example/ci/job:1 sh -c 'echo $x ${x a;b  #c d\\e\tf'\" "
    "; # && || $} end\\"
)


def test_grub_passes_its_nastiest_line() -> None:
    entry = BootEntry("/vmlinuz", INITRDS, GRUB_NASTY)
    text = render(Format.grub, entry)
    assert grub_model(text) == f"BOOT_IMAGE=/vmlinuz {GRUB_NASTY}"
    assert kernel_cmdline(Format.grub, entry) == f"BOOT_IMAGE=/vmlinuz {GRUB_NASTY}"


@pytest.mark.parametrize("uefi", [False, True])
def test_ipxe_passes_its_nastiest_line(uefi: bool) -> None:
    entry = BootEntry("boot/vmlinuz", INITRDS, IPXE_NASTY)
    script = render(Format.ipxe, entry)
    received = ipxe_model(script, uefi=uefi)
    prefix = "vmlinuz " if uefi else ""
    assert received == f"{prefix}initrd=initrd0.img initrd=initrd1.img {IPXE_NASTY}"
    assert received == kernel_cmdline(Format.ipxe, entry, uefi=uefi)
    assert "initrd --name initrd0.img /b2c/initramfs.cpio.zst\n" in script
    assert "initrd --name initrd1.img /b2c/modules.cpio.zst\nboot\n" in script


@pytest.mark.parametrize(
    ("fmt", "line", "char", "words"),
    [
        (Format.grub, "a='b c'", "'", "backslash in front"),
        (Format.grub, "a=\\x", "\\", "as \\\\"),
        (Format.grub, '"abc"', '"', "only arguments holding a space"),
        (Format.grub, "a  b", " ", "exactly one space"),
        (Format.grub, " a", " ", "exactly one space"),
        (Format.grub, '"a b"c', '"', "must end the argument"),
        (Format.ipxe, "a=${x}", "$", "${...}"),
        (Format.ipxe, "a=é", "é", "UCS-2"),
        (Format.syslinux, " a", " ", "skips every byte"),
        (Format.pxelinux, "a b=xinitrd=y", "i", "first 'initrd='"),
        (Format.systemd_boot, "a=\U0001f600", "\U0001f600", "U+FFFF"),
        (Format.systemd_boot, "a\nb", "\n", "line-based"),
    ],
)
def test_refusals_name_the_character_and_the_loader(
    fmt: Format, line: str, char: str, words: str
) -> None:
    with pytest.raises(Unexpressible) as info:
        render(fmt, BootEntry("/vmlinuz", ("/initrd",), line))
    assert info.value.message.startswith(f"{fmt.loader} cannot pass {char!r} at byte ")
    assert words in info.value.message


@pytest.mark.parametrize(
    ("line", "option"),
    [
        ('"a b"', 'options ""a b""'),
        (" a", 'options " a"'),
        ("a\t", 'options "a\t"'),
        ('"a" b', 'options "a" b'),
        ('a "b"', 'options a "b"'),
    ],
)
def test_systemd_boot_protects_what_its_parser_strips(line: str, option: str) -> None:
    text = render(Format.systemd_boot, BootEntry("/vmlinuz", (), line))
    assert text.splitlines()[-1] == option
    assert systemd_boot_model(text) == line


def test_ipxe_escapes_only_what_it_must() -> None:
    script = render(Format.ipxe, BootEntry("vmlinuz", (), "a=1 b=$x c=${x"))
    assert script.splitlines()[-2] == "kernel vmlinuz a=1 b=$x c=${x"
    assert "set " not in script


def test_grub_parameter_form() -> None:
    assert grub_parameter('b2c.container="docker://a b"') == '"b2c.container=docker://a b"'
    assert grub_parameter("b2c.pipefail") == "b2c.pipefail"
    # Forms GRUB cannot pass are left for render() to refuse, unchanged.
    assert grub_parameter("b2c.container=\"x sh -c 'y'\"") == "b2c.container=\"x sh -c 'y'\""


def test_bad_labels_and_paths_are_refused() -> None:
    with pytest.raises(ConfigError, match="--label"):
        render(Format.grub, BootEntry("/vmlinuz", (), "", label="my entry"))
    with pytest.raises(ConfigError, match="--initrd 'a,b'"):
        render(Format.syslinux, BootEntry("/vmlinuz", ("a,b",), ""))
    with pytest.raises(ConfigError, match="absolute on the ESP"):
        render(Format.systemd_boot, BootEntry("vmlinuz", (), ""))
    with pytest.raises(ConfigError, match="--kernel"):
        render(Format.ipxe, BootEntry("-vmlinuz", (), ""))


def test_added_text_is_what_surrounds_the_line() -> None:
    entry = BootEntry("/b2c/vmlinuz", ("/a", "/b"), "quiet")
    assert added_text(Format.syslinux, entry) == "BOOT_IMAGE=/b2c/vmlinuz  initrd=/a,/b"
    assert added_text(Format.grub, entry) == "BOOT_IMAGE=/b2c/vmlinuz "
    assert added_text(Format.ipxe, entry) == "vmlinuz initrd=initrd0.img initrd=initrd1.img "
    assert added_text(Format.systemd_boot, entry) == "initrd=\\a initrd=\\b "


# --- every line: either refused, or passed unchanged -----------------------------------------

_ALPHABET = st.sampled_from([*"ab=. \t\"'\\$#;{}|&,-", "initrd=", "${", "é"])


@settings(max_examples=400, deadline=None)
@given(line=st.lists(_ALPHABET, max_size=24).map("".join), fmt=st.sampled_from(list(Format)))
def test_any_line_is_refused_or_passed_unchanged(line: str, fmt: Format) -> None:
    entry = BootEntry("/b2c/vmlinuz", INITRDS, line)
    try:
        text = render(fmt, entry)
    except Unexpressible:
        return
    received = model(fmt, text, uefi=fmt is Format.ipxe)
    assert received == kernel_cmdline(fmt, entry, uefi=fmt is Format.ipxe)
    if fmt in (Format.syslinux, Format.pxelinux):
        assert received.startswith("BOOT_IMAGE=/b2c/vmlinuz " + line)
    elif line:
        assert received.endswith(" " + line)


# --- GRUB's own parser and the CLI ------------------------------------------------------------


def test_grub_script_check_accepts_generated_configs(tmp_path: Path) -> None:
    checker = require_tool("grub-script-check")
    for line in (GRUB_NASTY, "", "quiet", "a=$x b=${x} c=;d e=#f"):
        cfg = tmp_path / "grub.cfg"
        cfg.write_text(render(Format.grub, BootEntry("/b2c/vmlinuz", INITRDS, line)))
        proc = subprocess.run([checker, str(cfg)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr + cfg.read_text()
    # And it does reject broken GRUB script, so the check can fail.
    cfg.write_text("menuentry 'x' {\n  linux 'unclosed\n")
    assert subprocess.run([checker, str(cfg)], capture_output=True).returncode != 0


def test_cli_prints_the_entry() -> None:
    proc = b2c(
        *("bootcfg", "--format", "pxelinux", "--kernel", KERNEL),
        *("--initrd", INITRDS[0], "--initrd", INITRDS[1], "--append", NASTY, "--label", "ci"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == render(Format.pxelinux, BootEntry(KERNEL, INITRDS, NASTY, "ci"))
    assert "DEFAULT ci\n" in proc.stdout and f"    APPEND {NASTY}\n" in proc.stdout


def test_a_repeated_append_adds_its_words_to_the_line() -> None:
    # Each --append adds words (a second one used to replace the first without a word).
    proc = b2c(
        *("bootcfg", "--format", "pxelinux", "--kernel", KERNEL, "--initrd", INITRDS[0]),
        *("--append", "console=ttyS0 quiet", "--cache-device", "auto"),
        *("--append", "b2c.ntp_peer=none", "--container", "docker://r/i:1 true"),
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        '    APPEND console=ttyS0 quiet b2c.ntp_peer=none b2c.container="docker://r/i:1 true" '
        "b2c.cache_device=auto\n"
    ) in proc.stdout


def test_cli_b2c_flags_take_the_form_grub_can_pass() -> None:
    proc = b2c(
        *("bootcfg", "--format", "grub", "--kernel", "/vmlinuz", "--append", "console=ttyS0"),
        *("--initrd", "/initrd", "--container", "docker://r/i:1 sh -c true", "--pipefail"),
    )
    assert proc.returncode == 0, proc.stderr
    linux = next(line for line in proc.stdout.splitlines() if "linux " in line)
    assert linux == (
        "    linux /vmlinuz console=ttyS0 'b2c.container=docker://r/i:1 sh -c true' b2c.pipefail"
    )
    assert grub_model(proc.stdout) == (
        'BOOT_IMAGE=/vmlinuz console=ttyS0 "b2c.container=docker://r/i:1 sh -c true" b2c.pipefail'
    )


def test_cli_refuses_before_writing_anything() -> None:
    proc = b2c("bootcfg", "--format", "grub", "--kernel", KERNEL, "--append", NASTY)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "GRUB cannot pass '\"' at byte 37" in proc.stderr and "Traceback" not in proc.stderr
    long_line = "b2c.pipefail x=" + "a" * 2020
    proc = b2c("bootcfg", "--format", "pxelinux", "--kernel", KERNEL, "--append", long_line)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "error: cmdline: 2035 bytes + 24 added by PXELINUX" in proc.stderr
    assert "nothing was written" in proc.stderr


def test_cli_names_the_grub_character_of_a_flag_where_it_was_typed() -> None:
    """bootcfg's own quoting puts '"' around a --container value with spaces: the error names
    the user's character (') and its byte in the value, not that quote."""
    proc = b2c(
        *("bootcfg", "--format", "grub", "--kernel", KERNEL, "--initrd", INITRDS[0]),
        *("--container", "docker://r/j:1 sh -c 'echo hi'"),
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert (
        'GRUB cannot pass "\'" at byte 21 of --container "docker://r/j:1 sh -c \'echo hi\'": '
        "its linux command writes every ' of an argument with a backslash in front"
    ) in proc.stderr
    assert "at byte 14" not in proc.stderr and "b2c.extra_args_url=URL" in proc.stderr
    # A repeatable flag's later value, and a backslash, the same way.
    proc = b2c(
        *("bootcfg", "--format", "grub", "--kernel", KERNEL, "--initrd", INITRDS[0]),
        *("--container", "r/j:1 true", "--container", "r/k:1 a\\b", "--pipefail"),
    )
    assert proc.returncode == 2 and "GRUB cannot pass '\\\\' at byte 7 of --container" in (
        proc.stderr
    )


def test_cli_hint_for_a_double_quote_in_a_flag_applies_to_bootcfg() -> None:
    """run's hint (exact arguments after `--`) means nothing to bootcfg, which has no `--`."""
    proc = b2c(
        *("bootcfg", "--format", "pxelinux", "--kernel", KERNEL, "--initrd", INITRDS[0]),
        *("--container", 'docker://r/j:1 sh -c "echo hi"'),
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "the kernel command line cannot carry a double quote" in proc.stderr
    assert "`--`" not in proc.stderr
    assert "hint: group words with '...' instead" in proc.stderr
    assert "b2c.extra_args_url=URL" in proc.stderr


def test_cli_refuses_an_entry_without_an_initrd(tmp_path: Path) -> None:
    """b2c's /init is in the image: an entry without it cannot boot (the kernel panics)."""
    proc = b2c("bootcfg", "--format", "pxelinux", "--kernel", KERNEL, "--append", "b2c.run=r/j")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "no --initrd: the kernel would start without the b2c image" in proc.stderr
    assert "the image (initramfs.linux_<arch>.cpio.<ext>), then the modules archive" in (
        proc.stderr
    )
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"MZ not a kernel")
    output = tmp_path / "b2c.iso"
    proc = b2c("iso", "--kernel", str(kernel), "--output", str(output), "--append", "b2c.run=r")
    assert proc.returncode == 2 and "no --initrd" in proc.stderr and not output.exists()


def test_check_cmdline_with_a_format_reports_its_quoting_and_additions() -> None:
    proc = b2c("check-cmdline", "--format", "ipxe", "b2c.container=\"docker://r/i sh -c '${x}'\"")
    assert proc.returncode == 2
    assert proc.stdout.startswith("error: cmdline: iPXE cannot pass '$' at byte ")
    fits = "x=" + "a" * (2047 - len("BOOT_IMAGE=/vmlinuz ") - 2)
    assert b2c("check-cmdline", "--format", "grub", fits).returncode == 0
    proc = b2c("check-cmdline", "--format", "grub", fits + "a")
    assert proc.returncode == 2 and "'BOOT_IMAGE=/vmlinuz'" in proc.stdout


def test_readme_examples_are_the_tools_output() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks: dict[str, str] = {}
    current: list[str] | None = None
    for line in readme.splitlines(keepends=True):
        if line.startswith("```"):
            if current is not None and current and "generated by b2c-builder" in "".join(current):
                blocks[current[0].rstrip("\n")] = "".join(current)
            current = [] if current is None else None
        elif current is not None:
            current.append(line)
    kver = "6.12.117+deb13-amd64"
    files = [f"linux-{kver}.linux_amd64", "initramfs.linux_amd64.cpio.zst"]
    files.append(f"modules-{kver}.linux_amd64.cpio.zst")
    line = "console=ttyS0 b2c.cache_device=auto b2c.ntp_peer=auto"
    job = "docker://registry.example/ci/job:latest"
    for fmt, root, command in (
        (Format.pxelinux, "", "sh -c 'make check'"),
        (Format.ipxe, "", "sh -c 'make check'"),
        (Format.grub, "/b2c/", "run-tests --fast"),
    ):
        kernel, *initrds = (root + name for name in files)
        proc = b2c(
            *("bootcfg", "--format", str(fmt), "--kernel", kernel, "--append", line),
            *(arg for initrd in initrds for arg in ("--initrd", initrd)),
            *("--container", f"{job} {command}"),
        )
        assert proc.returncode == 0, proc.stderr
        first = proc.stdout.split("\n", 1)[0]
        assert blocks.get(first) == proc.stdout, f"README's {fmt} example is stale"
