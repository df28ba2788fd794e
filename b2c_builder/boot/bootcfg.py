"""Boot loader entries that hand the kernel a command line byte for byte.

Each format writes one complete configuration file whose default entry boots without a key
press, with the kernel and initrd paths as given. Every loader rewrites the line on its way
to the kernel, each in its own way; ``render()`` escapes what the loader can express and
raises ``Unexpressible`` (naming the character, its byte offset and the loader) where it
cannot, so an entry never silently changes the line. ``kernel_cmdline()`` predicts what
the kernel receives (the line plus what the loader adds, such as ``BOOT_IMAGE=``), which is
what the length check counts and what the boot tests compare /proc/cmdline with.

The rules, from each loader's source:

- SYSLINUX/PXELINUX 6 (com32/elflink/ldlinux): a config line ends at CR or LF; ``APPEND``
  takes the rest of its line raw after skipping leading bytes <= 0x20; the kernel gets
  ``BOOT_IMAGE=<kernel> <append> initrd=<a,b>``; initrds are taken from the *first*
  ``initrd=`` found anywhere in that text (kernel.c, strstr).
- GRUB 2 (grub-core/lib/cmdline.c): the script lexer unquotes the words of ``linux``, then
  ``grub_create_loader_cmdline`` joins them with one space, puts a backslash before every
  ``\\``, ``'`` and ``"``, and wraps a word holding a space in double quotes; the kernel gets
  ``BOOT_IMAGE=<kernel> <words>``. A line is expressible if it is such an output.
- iPXE (src/core/exec.c, settings.c, image/script.c): a command is split on white space
  with no quoting; a word starting with ``#`` starts a comment, ``;``/``&&``/``||`` words end
  the command; every ``${name}`` is expanded, again and again, with no escape; a trailing
  ``\\`` continues the line; the kernel gets the words joined by one space (under UEFI after
  the kernel's image name: image/efi_image.c). Bytes iPXE would eat are written as
  ``${b2c-xHH:string}`` from a ``set b2c-xHH:hex HH`` setting.
- systemd-boot (src/boot/efi/boot.c, v252 as in Debian 12): an entry line ends at CR or LF,
  loses its leading and trailing spaces/tabs, and one pair of double quotes around the
  whole value; the kernel gets ``initrd=\\<path>`` for each initrd, then the options.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from b2c_builder.errors import ConfigError
from b2c_builder.guest.options import lookup


class Format(StrEnum):
    """A boot loader configuration format (``bootcfg --format``)."""

    syslinux = "syslinux"
    pxelinux = "pxelinux"
    ipxe = "ipxe"
    grub = "grub"
    systemd_boot = "systemd-boot"

    @property
    def loader(self) -> str:
        """The loader's name, as error messages spell it."""
        return {
            Format.syslinux: "SYSLINUX",
            Format.pxelinux: "PXELINUX",
            Format.ipxe: "iPXE",
            Format.grub: "GRUB",
            Format.systemd_boot: "systemd-boot",
        }[self]

    @property
    def where(self) -> str:
        """Where the generated file goes."""
        return {
            Format.syslinux: "syslinux.cfg (isolinux.cfg on a CD)",
            Format.pxelinux: "pxelinux.cfg/default on the TFTP server, beside pxelinux.0",
            Format.ipxe: "a script iPXE chains to (DHCP filename or 'chain URL')",
            Format.grub: "grub.cfg",
            Format.systemd_boot: "loader/entries/<label>.conf on the ESP",
        }[self]


class Unexpressible(ConfigError):
    """The loader cannot hand this text to the kernel unchanged."""


@dataclass(frozen=True)
class BootEntry:
    """One boot entry: paths as the loader sees them, the intended kernel command line."""

    kernel: str
    initrds: tuple[str, ...] = ()
    append: str = ""
    label: str = "b2c"


_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OTHERS = "--format syslinux, pxelinux or systemd-boot, which pass the line as written"


def _fail(fmt: Format, text: str, index: int, why: str, hint: str) -> Unexpressible:
    char = text[index] if index < len(text) else ""
    offset = len(text[:index].encode())
    return Unexpressible(f"{fmt.loader} cannot pass {char!r} at byte {offset}: {why}", hint=hint)


def _check_common(fmt: Format, entry: BootEntry) -> None:
    if not _LABEL.fullmatch(entry.label):
        raise ConfigError(
            f"--label {entry.label!r}: use letters, digits, '.', '_' or '-'", hint="e.g. b2c"
        )
    for what, path in [("--kernel", entry.kernel)] + [("--initrd", p) for p in entry.initrds]:
        if not path or any(c in path for c in "\r\n") or path != path.strip():
            raise ConfigError(
                f"{what} {path!r}: a path must not be empty, start or end with white space or "
                "hold a line break",
                hint="rename the file",
            )
    for char in "\r\n":
        if (index := entry.append.find(char)) >= 0:
            raise _fail(
                fmt,
                entry.append,
                index,
                "a boot entry is line-based; the kernel would read it as a space anyway",
                "remove the line break",
            )


# --- SYSLINUX / PXELINUX -----------------------------------------------------------------


def _syslinux(fmt: Format, entry: BootEntry) -> str:
    line = entry.append
    if line and ord(line[0]) <= 0x20:
        raise _fail(fmt, line, 0, "APPEND skips every byte up to 0x20 at its start", "remove it")
    if line == "-":
        raise _fail(fmt, line, 0, "'APPEND -' means an empty command line", "add a parameter")
    for what, path in [("--kernel", entry.kernel)] + [("--initrd", p) for p in entry.initrds]:
        bad = [c for c in path if ord(c) <= 0x20 or (what == "--initrd" and c == ",")]
        if bad or "initrd=" in path:
            raise ConfigError(
                f"{what} {path!r}: {fmt.loader} ends a file name at white space (and an initrd "
                "name at ','), and takes initrds from the first 'initrd=' it finds",
                hint="rename the file",
            )
    if (index := line.find("initrd=")) >= 0:
        raise _fail(
            fmt,
            line,
            index,
            "it loads the initrds named by the first 'initrd=' it finds anywhere in the "
            "command line, even inside a value (ldlinux kernel.c)",
            "pass the initrds with --initrd, and avoid the text 'initrd=' in values",
        )
    where = "pxelinux.cfg/default" if fmt is Format.pxelinux else "syslinux.cfg / isolinux.cfg"
    lines = [
        f"# {where}: generated by b2c-builder bootcfg --format {fmt}",
        f"DEFAULT {entry.label}",
        "PROMPT 0",
        "NOESCAPE 1",
        f"LABEL {entry.label}",
        f"    LINUX {entry.kernel}",
    ]
    if entry.initrds:
        lines.append(f"    INITRD {','.join(entry.initrds)}")
    if line:
        lines.append(f"    APPEND {line}")
    return "\n".join(lines) + "\n"


# --- GRUB ----------------------------------------------------------------------------------

_GRUB_ESCAPED = "\\'\""
_GRUB_BARE = re.compile(r"[A-Za-z0-9_./:=,+@%^-]+")
_GRUB_HINT = (
    "GRUB double-quotes only whole arguments, so write such an option as "
    '"name=value with spaces"; put values with \' or " in a file served over HTTP(S) and '
    f"pass b2c.extra_args_url=URL, or use {_OTHERS}"
)


def grub_loader_cmdline(words: list[str]) -> str:
    """What GRUB 2's ``linux`` hands the kernel for these (already unquoted) words, after
    ``BOOT_IMAGE=``: grub_create_loader_cmdline (grub-core/lib/cmdline.c) re-implemented."""
    out = []
    for word in words:
        escaped = "".join("\\" + c if c in _GRUB_ESCAPED else c for c in word)
        out.append(f'"{escaped}"' if " " in word else escaped)
    return " ".join(out)


def grub_words(line: str) -> list[str]:
    """The words GRUB's ``linux`` must receive so that the kernel gets exactly ``line``:
    the inverse of grub_loader_cmdline. Raises Unexpressible when no words give ``line``."""
    fmt = Format.grub
    words: list[str] = []
    i, n = 0, len(line)
    if n == 0:
        return words
    while True:
        if i >= n or line[i] == " ":
            raise _fail(
                fmt, line, i, "it separates arguments with exactly one space", "remove the space"
            )
        quoted = line[i] == '"'
        j = i + 1 if quoted else i
        word: list[str] = []
        while True:
            if j >= n:
                if quoted:
                    raise _fail(
                        fmt, line, i, "it writes '\"' only in pairs around whole arguments",
                        _GRUB_HINT,
                    )  # fmt: skip
                break
            c = line[j]
            if c == "\\":
                if j + 1 < n and line[j + 1] in _GRUB_ESCAPED:
                    word.append(line[j + 1])
                    j += 2
                    continue
                raise _fail(
                    fmt,
                    line,
                    j,
                    "its linux command writes every \\ of an argument as \\\\ "
                    "(grub-core/lib/cmdline.c)",
                    _GRUB_HINT,
                )
            if c == '"' and quoted:
                j += 1
                if " " not in word:
                    raise _fail(
                        fmt, line, i, "it double-quotes only arguments holding a space",
                        _GRUB_HINT,
                    )  # fmt: skip
                if j < n and line[j] != " ":
                    raise _fail(fmt, line, j - 1, "a '\"' must end the argument", _GRUB_HINT)
                break
            if c in "'\"":
                raise _fail(
                    fmt,
                    line,
                    j,
                    f"its linux command writes every {c} of an argument with a backslash in "
                    "front (grub-core/lib/cmdline.c)",
                    _GRUB_HINT,
                )
            if c == " " and not quoted:
                break
            word.append(c)
            j += 1
        words.append("".join(word))
        i = j
        if i >= n:
            break
        i += 1  # the one separating space
        if i >= n:
            raise _fail(
                fmt, line, n - 1, "it separates arguments with exactly one space", "remove it"
            )
    assert grub_loader_cmdline(words) == line, line
    return words


def grub_parameter(param: str) -> str:
    """``name="value"`` written as ``"name=value"``, which the kernel reads the same way
    (lib/cmdline.c next_arg) and GRUB can pass when the value holds a space and no quote,
    backslash or double space; any other parameter unchanged."""
    name, sep, value = param.partition("=")
    if sep and len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        if " " in inner and not any(c in inner for c in _GRUB_ESCAPED) and "  " not in inner:
            return f'"{name}={inner}"'
    return param


def grub_check_flags(values: Mapping[str, object]) -> None:
    """Refuse a b2c flag's value (``{option name: value or list of values}``, as
    launch.b2c_parameters takes them) that GRUB cannot pass, naming the character and its
    byte in the value as typed: on the composed line, the first character refused would be
    the double quote bootcfg's own quoting put around the value."""
    for name, given in values.items():
        items = [given] if isinstance(given, str) else given if isinstance(given, list) else []
        for value in (item for item in items if isinstance(item, str)):
            for index, char in enumerate(value):
                if char not in _GRUB_ESCAPED:
                    continue
                option = lookup(name)
                flag = option.flag if option is not None else name
                raise Unexpressible(
                    f"GRUB cannot pass {char!r} at byte {len(value[:index].encode())} of "
                    f"{flag} {value!r}: its linux command writes every {char} of an argument "
                    "with a backslash in front (grub-core/lib/cmdline.c)",
                    hint="put the option in a file served over HTTP(S) and pass "
                    f"b2c.extra_args_url=URL, or use {_OTHERS}",
                )


def grub_quote(word: str) -> str:
    """``word`` as one GRUB script word: bare when safe, else single-quoted (nothing is
    special inside single quotes; a ' is written '\\'')."""
    if _GRUB_BARE.fullmatch(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def _grub(entry: BootEntry) -> str:
    words = grub_words(entry.append)
    linux = " ".join(grub_quote(w) for w in [entry.kernel, *words])
    lines = [
        "# grub.cfg: generated by b2c-builder bootcfg --format grub",
        "set default=0",
        "set timeout=0",
        f"menuentry {grub_quote(entry.label)} {{",
        f"    linux {linux}",
    ]
    if entry.initrds:
        lines.append("    initrd " + " ".join(grub_quote(p) for p in entry.initrds))
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- iPXE ----------------------------------------------------------------------------------

IPXE_INITRD_NAMES = "initrd{}.img"  # the names given with 'initrd --name', in order
_IPXE_SPACE = " \t\n\v\f\r"  # iPXE's isspace()
_IPXE_TERMINATORS = (";", "&&", "||")
_IPXE_EXPANSION = re.compile(r"\$\{[^}]*\}")


def _ipxe_escape(byte: str) -> str:
    return f"${{b2c-x{ord(byte):02x}:string}}"


def _ipxe_token(fmt: Format, line: str, start: int, piece: str) -> tuple[str, set[str]]:
    """One command-line word as an iPXE token, and the bytes it takes from settings."""
    if (match := _IPXE_EXPANSION.search(piece)) is not None:
        raise _fail(
            fmt,
            line,
            start + match.start(),
            "it expands every ${...} in a word as a setting, again and again, with no escape",
            "for a shell variable, write $NAME without braces (${NAME:-x} and the like have "
            "no such form), or put the option in a file served over HTTP(S) and pass "
            "b2c.extra_args_url=URL, or use " + _OTHERS,
        )
    for k, c in enumerate(piece):
        if not c.isascii():
            raise _fail(
                fmt,
                line,
                start + k,
                "under UEFI it widens each byte of the command line to a UCS-2 character, "
                "so UTF-8 reaches the kernel mangled (image/efi_image.c)",
                "use ASCII only, or put the option in a file served over HTTP(S) and pass "
                "b2c.extra_args_url=URL",
            )
    if piece == "":
        return "${b2c-empty}", set()  # an unset setting: expands to nothing
    chars = list(piece)
    used: set[str] = set()
    for k, c in enumerate(chars):
        if c in _IPXE_SPACE:
            chars[k] = _ipxe_escape(c)
            used.add(c)
    if piece[0] == "#" or piece in _IPXE_TERMINATORS:
        chars[0] = _ipxe_escape(piece[0])
        used.add(piece[0])
    return "".join(chars), used


def ipxe_tokens(line: str, fmt: Format = Format.ipxe) -> tuple[list[str], set[str]]:
    """The iPXE words that expand back to the words of ``line`` (split on single spaces),
    and the bytes they take from ``b2c-xHH`` settings. Raises Unexpressible."""
    if line == "":
        return [], set()
    tokens: list[str] = []
    used: set[str] = set()
    start = 0
    for piece in line.split(" "):
        token, chars = _ipxe_token(fmt, line, start, piece)
        tokens.append(token)
        used |= chars
        start += len(piece) + 1
    if tokens[-1].endswith("\\"):  # a trailing backslash would continue the script line
        tokens[-1] = tokens[-1][:-1] + _ipxe_escape("\\")
        used.add("\\")
    return tokens, used


def _ipxe_path(what: str, path: str) -> None:
    if (
        any(c in _IPXE_SPACE for c in path)
        or "${" in path
        or path.startswith(("#", "-"))
        or not path.isascii()
    ):
        raise ConfigError(
            f"{what} {path!r}: iPXE splits on white space, expands ${{...}}, reads '#' as a "
            "comment and '-' as an option",
            hint="rename the file",
        )


def ipxe_initrd_params(entry: BootEntry) -> list[str]:
    """The ``initrd=NAME`` parameters the iPXE entry puts in front of the line."""
    return [f"initrd={IPXE_INITRD_NAMES.format(n)}" for n in range(len(entry.initrds))]


def _ipxe(entry: BootEntry) -> str:
    for what, path in [("--kernel", entry.kernel)] + [("--initrd", p) for p in entry.initrds]:
        _ipxe_path(what, path)
    tokens, used = ipxe_tokens(entry.append)
    lines = [
        "#!ipxe",
        "# generated by b2c-builder bootcfg --format ipxe",
        "# initrd=NAME: under UEFI the kernel's EFI stub loads the named initrds itself.",
    ]
    if used:
        lines.append("# bytes iPXE would eat in a command line, written as ${b2c-xHH:string}:")
        lines += [f"set b2c-x{ord(c):02x}:hex {ord(c):02x}" for c in sorted(used)]
    lines.append(" ".join(["kernel", entry.kernel, *ipxe_initrd_params(entry), *tokens]))
    for n, path in enumerate(entry.initrds):
        lines.append(f"initrd --name {IPXE_INITRD_NAMES.format(n)} {path}")
    lines.append("boot")
    return "\n".join(lines) + "\n"


# --- systemd-boot ------------------------------------------------------------------------


def _systemd_boot(entry: BootEntry) -> str:
    fmt = Format.systemd_boot
    line = entry.append
    for k, c in enumerate(line):
        if ord(c) > 0xFFFF or 0xD800 <= ord(c) <= 0xDFFF:
            raise _fail(
                fmt,
                line,
                k,
                "it reads entries into UCS-2, which holds no character above U+FFFF",
                "use another character",
            )
    for what, path in [("--kernel", entry.kernel)] + [("--initrd", p) for p in entry.initrds]:
        if not path.startswith("/") or "//" in path or "\\" in path:
            raise ConfigError(
                f"{what} {path!r}: systemd-boot paths are absolute on the ESP, with '/' "
                "separators (e.g. /b2c/vmlinuz)",
                hint="give the path from the ESP's root",
            )
    lines = [
        f"# loader/entries/{entry.label}.conf: generated by b2c-builder bootcfg "
        "--format systemd-boot",
        "# systemd-boot boots the first entry at once unless loader/loader.conf sets a "
        f"timeout; 'default {entry.label}.conf' there makes this one the default.",
        f"title {entry.label}",
        f"linux {entry.kernel}",
        *(f"initrd {path}" for path in entry.initrds),
    ]
    if line:
        # One pair of quotes around the whole value is removed: add one when the line
        # starts and ends with '"', or when white space at either end would be stripped.
        wrap = (line[0] == '"' and line[-1] == '"') or line[0] in " \t" or line[-1] in " \t"
        lines.append(f'options "{line}"' if wrap else f"options {line}")
    return "\n".join(lines) + "\n"


# --- the API -------------------------------------------------------------------------------


def render(fmt: Format, entry: BootEntry) -> str:
    """The complete configuration file of ``fmt`` for ``entry``, newline-terminated.

    Raises Unexpressible (a ConfigError naming the character, its byte offset and the
    loader) when the loader cannot hand ``entry.append`` to the kernel unchanged, and
    ConfigError for a label or path the format cannot hold.
    """
    _check_common(fmt, entry)
    if fmt in (Format.syslinux, Format.pxelinux):
        return _syslinux(fmt, entry)
    if fmt is Format.grub:
        return _grub(entry)
    if fmt is Format.ipxe:
        return _ipxe(entry)
    return _systemd_boot(entry)


def require_initrd(entry: BootEntry) -> None:
    """Refuse an entry without an initrd: b2c's /init is in the image, an initrd, so the
    kernel would start without it and panic (no root file system). Nothing documents a case
    for one (a kernel with the image built in is not something b2c-builder makes)."""
    if not entry.initrds:
        raise ConfigError(
            "no --initrd: the kernel would start without the b2c image and its /init, and "
            "panic (no root file system); nothing was written",
            hint="give --initrd twice: the image "
            "(initramfs.linux_<arch>.cpio.<ext>), then the modules archive "
            "(modules-<kernel release>.linux_<arch>.cpio.<ext>) of the release folder",
        )


def loader_settings(fmt: Format) -> str:
    """``loader/loader.conf`` for systemd-boot: no menu, no timeout (``render`` prints the
    entry only)."""
    if fmt is not Format.systemd_boot:
        raise ValueError("only systemd-boot has a separate loader.conf")
    return "timeout 0\n"


def kernel_cmdline(fmt: Format, entry: BootEntry, *, uefi: bool = False) -> str:
    """The command line the kernel receives from ``fmt``'s entry: ``entry.append`` with
    what the loader adds (``uefi`` matters for iPXE only, which then starts with the
    kernel's image name). Does not check expressibility: call ``render`` for that."""
    line = entry.append
    if fmt in (Format.syslinux, Format.pxelinux):
        initrd = [f"initrd={','.join(entry.initrds)}"] if entry.initrds else []
        return f"BOOT_IMAGE={entry.kernel} " + " ".join([p for p in [line] if p] + initrd)
    if fmt is Format.grub:
        return "BOOT_IMAGE=" + grub_loader_cmdline([entry.kernel, *grub_words(line)])
    if fmt is Format.ipxe:
        params = ipxe_initrd_params(entry) + ([line] if line else [])
        name = [PurePosixPath(entry.kernel).name] if uefi else []
        return " ".join(name + params)
    initrds = ["initrd=" + path.replace("/", "\\") for path in entry.initrds]
    return " ".join(initrds + ([line] if line else []))


def added_text(fmt: Format, entry: BootEntry) -> str:
    """What ``fmt`` adds to ``entry.append`` on the kernel's command line (the longest of
    its BIOS and UEFI forms), as one string for the length check."""
    full = kernel_cmdline(fmt, entry, uefi=fmt is Format.ipxe)
    line = entry.append
    if not line:
        return full
    index = full.rfind(line)
    return full[:index] + full[index + len(line) :]
