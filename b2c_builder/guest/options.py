"""The kernel command-line options of /init: one declarative table, and what derives from it.

The table is the single source of truth for the init's option dispatch (rendered into /init
by templates/init.sh.j2), the README's option reference (``markdown_table``) and the
command-line linter (``lint_cmdline``). ``parse_cmdline`` is a reference implementation of
the kernel's own splitting rules (lib/cmdline.c ``next_arg``) that the shell parser in
init/cmdline.sh is tested against.

    python -m b2c_builder.guest.options --write-readme   # refresh README.md's option reference
    python -m b2c_builder.guest.options --lint 'b2c.container="docker://..." b2c.pipefail'
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from b2c_builder.config import Arch
from b2c_builder.errors import ConfigError

# The kernel's isspace(): ASCII white space plus Latin-1's non-breaking space (lib/ctype.c).
KERNEL_SPACE = " \t\n\v\f\r\xa0"


class ValueKind(StrEnum):
    """The type of an option's value. Each kind has a shell validator ``b2c_valid_<kind>``
    in init/cmdline.sh and a Python twin in ``_VALIDATORS``; tests check they agree."""

    flag = "flag"
    seconds = "seconds"
    size = "size"
    url = "url"
    hostname = "hostname"
    ntp_peer = "ntp_peer"
    modules = "modules"
    device_drivers = "device_drivers"
    podman_args = "podman_args"
    command = "command"
    cache_device = "cache_device"
    filesystem = "filesystem"
    volume = "volume"
    iface = "iface"
    network = "network"
    cache_evict = "cache_evict"
    swap = "swap"
    storage = "storage"
    proxy = "proxy"
    kernel_ip = "kernel_ip"
    kernel_modules = "kernel_modules"
    unsupported = "unsupported"

    @property
    def syntax(self) -> str:
        """How the value is written, for the README."""
        return {
            ValueKind.flag: "(no value)",
            ValueKind.seconds: "SECONDS",
            ValueKind.size: "SIZE (bytes, or with K/M/G/T suffix)",
            ValueKind.url: "http(s)://URL",
            ValueKind.hostname: "NAME",
            ValueKind.ntp_peer: "`none`, `auto` or HOST",
            ValueKind.modules: "MOD[,MOD...]",
            ValueKind.device_drivers: "`auto`, `none` or MOD[,MOD...]",
            ValueKind.podman_args: "podman run arguments, image [, command]",
            ValueKind.command: "command line",
            ValueKind.cache_device: "`none`, `auto`, `reset`, /dev/NODE or a b2c.filesystem NAME",
            ValueKind.filesystem: "NAME,src=SRC[,type=TYPE][,opts=OPT\\|OPT...]",
            ValueKind.volume: "NAME[,filesystem=FS][,expiration=never\\|pipeline_end]",
            ValueKind.iface: (
                "NAME[,auto\\|dhcp][,address=CIDR][,gateway=IP][,nameserver=IP]..."
                "[,route=NET:GW]...[,forward]"
            ),
            ValueKind.network: "`auto` or `none`",
            ValueKind.cache_evict: "`unused`, `never` or `all`",
            ValueKind.swap: (
                "SIZE (bytes, or with K/M/G/T suffix) or /dev/NODE, then [,swappiness=N]"
            ),
            ValueKind.storage: "KEY=VALUE[,KEY=VALUE...]; additionalimagestores=/PATH\\|FS...",
            ValueKind.proxy: "http(s)://URL, or [http=URL,]https=URL",
            ValueKind.kernel_ip: "the kernel's ip= syntax",
            ValueKind.kernel_modules: "MOD[,MOD...], as the kernel compares them",
            ValueKind.unsupported: "-",
        }[self]

    @property
    def keywords(self) -> tuple[str, ...]:
        """The words with a meaning of their own in this kind's values (``auto``...): what
        its validator accepts besides names, and the host's suggestions (hostlint); those of
        a flag's value are not listed."""
        return {
            ValueKind.ntp_peer: ("none", "auto"),
            ValueKind.device_drivers: ("auto", "none"),
            ValueKind.cache_device: ("none", "auto", "reset"),
            ValueKind.network: ("auto", "none"),
            ValueKind.cache_evict: ("unused", "never", "all"),
        }.get(self, ())


@dataclass(frozen=True)
class Option:
    """One command-line option of /init."""

    name: str
    kind: ValueKind
    meaning: str
    aliases: tuple[str, ...] = ()
    repeatable: bool = False
    default: str = ""
    # False: the option acts before b2c.extra_args_url is fetched, so it cannot come from there.
    late_ok: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def flag(self) -> str:
        """The option's flag of ``b2c-builder run``: ``--poweroff-delay`` for
        b2c.poweroff_delay."""
        return "--" + self.name.removeprefix("b2c.").replace("_", "-")

    @property
    def var(self) -> str:
        """The shell variable holding the value: B2C_<NAME> (repeatable: one value a line)."""
        short = self.name.removeprefix("b2c.")
        return "B2C_" + ("KERNEL_" if short == self.name else "") + short.upper()

    @property
    def src_var(self) -> str:
        """For a repeatable option: where its values came from (default, cmdline, extra)."""
        return "B2C_SRC_" + self.var.removeprefix("B2C_")

    @property
    def case_pattern(self) -> str:
        """The shell ``case`` pattern matching the option and its aliases."""
        return "|".join(self.names)


OPTIONS: tuple[Option, ...] = (
    Option(
        "b2c.container",
        ValueKind.podman_args,
        "a container of the pipeline, run in order with --rm --privileged --network=host "
        "--pull=always and the `B2C_PIPELINE_*` environment",
        aliases=("b2c.run",),
        repeatable=True,
    ),
    Option(
        "b2c.post_container",
        ValueKind.podman_args,
        "a container run after the pipeline, even after a failure; its status is ignored",
        aliases=("b2c.run_post",),
        repeatable=True,
    ),
    Option(
        "b2c.service",
        ValueKind.podman_args,
        "a container started detached before the pipeline and stopped at its end",
        aliases=("b2c.run_service",),
        repeatable=True,
    ),
    Option(
        "b2c.pipefail",
        ValueKind.flag,
        "stop the pipeline at the first failing container",
        default="0",
    ),
    Option(
        "b2c.cache_device",
        ValueKind.cache_device,
        "persistent storage for images and volumes (the partition labelled B2C_CACHE)",
        default="none",
    ),
    Option(
        "b2c.cache_evict",
        ValueKind.cache_evict,
        "which images leave the cache: `unused` removes images this boot's containers do not "
        "name, least recently used first, before pulling while less than 20% of the cache is "
        "free and when podman runs out of space (then it retries once); `never` keeps "
        "everything; `all` pins nothing: every image this boot does not name goes before pulling",
        default="unused",
    ),
    Option(
        "b2c.swap",
        ValueKind.swap,
        "SIZE: a swap file of that size on the cache partition; /dev/NODE: that device "
        "(given a swap signature if it has none); swappiness= sets vm.swappiness (0-200)",
    ),
    Option(
        "b2c.storage",
        ValueKind.storage,
        "containers-storage options (the storage.options table of storage.conf; overlay.KEY "
        "for its overlay table): additionalimagestores lists read-only image stores, each a "
        "path or a b2c.filesystem NAME (mounted for it)",
    ),
    Option(
        "b2c.filesystem",
        ValueKind.filesystem,
        "a named mount (9p, virtiofs, nfs, ext4...) usable by b2c.cache_device and b2c.volume",
        repeatable=True,
    ),
    Option(
        "b2c.volume",
        ValueKind.volume,
        "a podman volume created before the pipeline (S3 mirroring keys are ignored)",
        repeatable=True,
    ),
    Option(
        "b2c.extra_args_url",
        ValueKind.url,
        "fetch more command line over HTTP(S) once the network is up, parsed as if appended: "
        "b2c options only (anything else is an error), a leading UTF-8 byte-order mark is "
        "dropped and CR is white space; `b2c-builder check-extra-args FILE` checks one",
        late_ok=False,
    ),
    Option(
        "b2c.iface",
        ValueKind.iface,
        "configure a network interface; takes precedence over ip= and DHCP",
        repeatable=True,
        late_ok=False,
    ),
    Option(
        "b2c.network",
        ValueKind.network,
        "`none`: bring up only the loopback interface, no DHCP wait (every image is local)",
        default="auto",
        late_ok=False,
    ),
    Option(
        "ip",
        ValueKind.kernel_ip,
        "when the kernel's IP autoconfiguration configured an interface: no DHCP, DNS from "
        "/proc/net/pnp; else (Debian's kernels lack it) /init applies it: `dhcp`, or "
        "CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1:NTP0",
        late_ok=False,
    ),
    Option(
        "module_blacklist",
        ValueKind.kernel_modules,
        "the kernel's: modules it refuses to load, which /init then does not try",
        late_ok=False,
    ),
    Option(
        "b2c.ntp_peer",
        ValueKind.ntp_peer,
        "set the clock by SNTP before pulling; auto = the DHCP-offered server, else a pool",
        default="none",
        late_ok=False,
    ),
    Option("b2c.hostname", ValueKind.hostname, "the machine's host name", default="boot2container"),
    Option(
        "b2c.insmods",
        ValueKind.modules,
        "extra kernel modules to load at boot (modprobe)",
        aliases=("b2c.modules",),
        repeatable=True,
        late_ok=False,
    ),
    Option(
        "b2c.device_drivers",
        ValueKind.device_drivers,
        "the hardware drivers /init loads in the background (and waits for before the cache "
        "device, volumes and each container): `auto` = the modules archive's `device` class, "
        "`none`, or these; `b2c-builder run` names those of its QEMU devices",
        default="auto",
        late_ok=False,
    ),
    Option(
        "b2c.poweroff_delay",
        ValueKind.seconds,
        "wait this long before powering off",
        default="0",
    ),
    Option(
        "b2c.shutdown_cmd",
        ValueKind.command,
        "the command that powers the machine off",
        default="poweroff -f",
    ),
    Option(
        "b2c.reboot_cmd",
        ValueKind.command,
        "the command that reboots the machine (a container exited with 129)",
        default="reboot -f",
    ),
    Option(
        "b2c.proxy",
        ValueKind.proxy,
        "proxy for image pulls and b2c.extra_args_url: a URL for both schemes, or per scheme "
        "(https=URL, http=URL)",
    ),
    Option("b2c.keymap", ValueKind.unsupported, "not supported by b2c-builder (ignored)"),
    Option("b2c.minio", ValueKind.unsupported, "not supported by b2c-builder (ignored)"),
    Option(
        "b2c.nbd",
        ValueKind.unsupported,
        "not supported by b2c-builder (ignored): a network block device needs Debian's "
        "nbd-client, whose GnuTLS would take the image from 18.5 to 20.9 MiB, over its 20 MiB "
        "budget; the cache and swap stay local",
    ),
)

_BY_NAME: dict[str, Option] = {name: opt for opt in OPTIONS for name in opt.names}


def lookup(name: str) -> Option | None:
    return _BY_NAME.get(name)


# --- the kernel's splitting rules -------------------------------------------------------


class Param(NamedTuple):
    """One parameter of a command line, as the kernel's next_arg() splits it, and where it
    is: ``cmdline[start:end]`` is its text as written (quotes included)."""

    name: str
    value: str | None
    start: int
    end: int


def parse_cmdline(cmdline: str) -> list[tuple[str, str | None]]:
    """Split a command line exactly as the kernel's next_arg() does.

    ``param="a b"`` and ``"param=a b"`` give ('param', 'a b'); there are no escapes; a
    parameter without '=' has the value None. Interior quotes are kept, as the kernel does.
    """
    return [(param.name, param.value) for param in kernel_params(cmdline)]


def kernel_params(cmdline: str) -> list[Param]:
    """``parse_cmdline``, with where each parameter is written."""
    out: list[Param] = []
    pos, n = 0, len(cmdline)
    while True:
        while pos < n and cmdline[pos] in KERNEL_SPACE:
            pos += 1
        if pos >= n:
            return out
        start = pos
        quoted = cmdline[pos] == '"'
        if quoted:
            pos += 1
        in_quote, equals, i = quoted, 0, pos
        while i < n:
            c = cmdline[i]
            if c in KERNEL_SPACE and not in_quote:
                break
            if equals == 0 and c == "=":
                equals = i - pos
            if c == '"':
                in_quote = not in_quote
            i += 1
        token = list(cmdline[pos:i])
        length = len(token)
        value_start: int | None = None
        if equals:
            value_start = equals + 1
            if value_start < length and token[value_start] == '"':
                value_start += 1
                if length and token[length - 1] == '"':
                    token[length - 1] = "\0"
        if quoted and length and token[length - 1] == '"':
            token[length - 1] = "\0"
        text = "".join(token)
        if value_start is None:
            param, value = text, None
        else:
            param, value = text[:equals], text[value_start:]
            value = value.split("\0", 1)[0]
        out.append(Param(param.split("\0", 1)[0], value, start, i))
        pos = i + 1 if i < n else i


def split_words(text: str) -> list[str]:
    """Split podman arguments with single and double quotes, without any expansion.

    Quotes group and are removed; there are no escapes; nothing is expanded. An unbalanced
    quote raises ValueError. Mirrors b2c_with_words in init/cmdline.sh.
    """
    words: list[str] = []
    word, have, i, n = "", False, 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            end = text.find(c, i + 1)
            if end < 0:
                raise ValueError(f"unbalanced {c} quote")
            word, have, i = word + text[i + 1 : end], True, end + 1
        elif c in KERNEL_SPACE:
            if have:
                words.append(word)
            word, have, i = "", False, i + 1
        else:
            word, have, i = word + c, True, i + 1
    if have:
        words.append(word)
    return words


# --- value validation (twins of the b2c_valid_* shell functions) --------------------------

_SPACE_CLASS = re.escape(KERNEL_SPACE)
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HOST = re.compile(r"[A-Za-z0-9.:-]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")
_HOSTNAME_RULE = "up to 64 letters, digits, '.' and '-', the first a letter or digit"
_SIZE = re.compile(r"[0-9]+([KkMmGgTt](i?B)?)?")
_IFNAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
_FSTYPE = re.compile(r"[A-Za-z0-9._-]+")
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")
_DEV_PATH = re.compile(r"/dev/[A-Za-z0-9/_.:+@-]+")
VOLUME_MIRROR_KEYS = frozenset(
    {
        "mirror",
        "pull_from",
        "push_to",
        "pull_on",
        "push_on",
        "overwrite",
        "remove",
        "exclude",
        "encrypt_key",
        "preserve",
        "fscrypt_key",
        "fscrypt_reset_key",
    }
)


class Invalid(ValueError):
    """A malformed option value; the message says what is wrong."""


def _full(regex: re.Pattern[str], value: str) -> bool:
    return regex.fullmatch(value) is not None


def _ipv4(value: str, *, cidr: bool = False) -> bool:
    if cidr:
        addr, _, bits = value.partition("/")
        bits_ok = re.fullmatch(r"[0-9]{1,2}", bits) is not None and int(bits) <= 32
        return bits_ok and _ipv4(addr)
    return _full(_IPV4, value)


def _check_flag(value: str | None) -> list[str]:
    if value is None or value in ("1", "yes", "true", "on", "0", "no", "false", "off"):
        return []
    raise Invalid(f"takes no value (or one of 1/0, yes/no, true/false, on/off), not {value!r}")


def _check_seconds(value: str) -> list[str]:
    if not re.fullmatch(r"[0-9]{1,9}", value):
        raise Invalid(f"must be a whole number of seconds, not {value!r}")
    return []


MAX_SIZE = 1 << 50  # 1 PiB: keeps the shell's 64-bit arithmetic exact
_MULTIPLIERS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size_bytes(value: str) -> int:
    """'4G' -> 4294967296, as b2c.swap reads it (binary multiples; B and iB optional)."""
    match = _SIZE.fullmatch(value)
    if match is None:
        raise Invalid(f"must be a size such as 4G, 512M or 1048576 (at most 1P), not {value!r}")
    digits = value[: len(value) - len(match.group(1) or "")]
    factor = _MULTIPLIERS[(match.group(1) or "")[:1].lower()]
    if len(digits) > 16 or int(digits) > MAX_SIZE // factor:
        raise Invalid(f"must be a size such as 4G, 512M or 1048576 (at most 1P), not {value!r}")
    return int(digits) * factor


def _check_size(value: str) -> list[str]:
    size_bytes(value)
    return []


def _check_url(value: str) -> list[str]:
    if not re.fullmatch(f"https?://[^{_SPACE_CLASS}/][^{_SPACE_CLASS}]*", value):
        raise Invalid(f"must be an http:// or https:// URL, not {value!r}")
    return []


def _check_hostname(value: str) -> list[str]:
    if not _full(_HOSTNAME, value):
        raise Invalid(f"must be a host name ({_HOSTNAME_RULE}), not {value!r}")
    return []


def _check_ntp_peer(value: str) -> list[str]:
    if not _full(_HOST, value):
        raise Invalid(f"must be none, auto or a host name or address, not {value!r}")
    return []


def _are_names(value: str) -> bool:
    """Every comma-separated item of ``value`` is a name (none is empty)."""
    return all(_full(_NAME, item) for item in value.split(","))


def _check_modules(value: str) -> list[str]:
    if not _are_names(value):
        raise Invalid(f"must be a comma-separated list of module names, not {value!r}")
    return []


def _check_device_drivers(value: str) -> list[str]:
    """auto or none alone, else module names (neither of those among them)."""
    items = value.split(",")
    keywords = ValueKind.device_drivers.keywords
    if value in keywords or (_are_names(value) and not set(keywords) & set(items)):
        return []
    raise Invalid(f"must be auto, none or a comma-separated list of module names, not {value!r}")


def _check_kernel_modules(value: str) -> list[str]:
    """module_blacklist=: the kernel takes any text, and compares each comma-separated name
    byte for byte with a module's name, whose '-'s are '_'s (kernel/module/main.c,
    blacklisted())."""
    dashed = [name for name in value.split(",") if "-" in name]
    return [
        f"the kernel names modules with '_', never '-': {name!r} matches none" for name in dashed
    ]


def _check_words(value: str) -> list[str]:
    try:
        words = split_words(value)
    except ValueError as exc:
        raise Invalid(f"{exc} in {value!r}") from None
    if not words:
        raise Invalid("is empty")
    return []


def _check_cache_device(value: str) -> list[str]:
    if value in ValueKind.cache_device.keywords or _full(_NAME, value):
        return []
    if _full(_DEV_PATH, value) and "/../" not in value + "/":
        return []
    raise Invalid(f"must be none, auto, reset, /dev/NODE or a b2c.filesystem name, not {value!r}")


def _check_filesystem(value: str) -> list[str]:
    name, *params = value.split(",")
    if not _full(_NAME, name):
        raise Invalid(f"needs a name (letters, digits, '_', '-') first, not {name!r}")
    src = False
    for param in params:
        key, sep, val = param.partition("=")
        if key == "src" and sep and val:
            src = True
        elif (key == "type" and sep and _full(_FSTYPE, val)) or (key == "opts" and sep and val):
            pass
        else:
            raise Invalid(f"{name}: unknown or malformed parameter {param!r}")
    if not src:
        raise Invalid(f"{name}: the parameter src= is mandatory")
    return []


def _check_volume(value: str) -> list[str]:
    name, *params = value.split(",")
    if not _full(_VOLUME_NAME, name):
        raise Invalid(f"needs a volume name first, not {name!r}")
    warnings: list[str] = []
    for param in params:
        key, sep, val = param.partition("=")
        filesystem_ok = key == "filesystem" and sep and _full(_NAME, val)
        expiration_ok = key == "expiration" and sep and val in ("never", "pipeline_end")
        if filesystem_ok or expiration_ok:
            pass
        elif key in VOLUME_MIRROR_KEYS:
            warnings.append(f"{name}: {key} (S3 mirroring) is not supported, ignored")
        else:
            raise Invalid(f"{name}: unknown or malformed parameter {param!r}")
    return warnings


def _check_iface(value: str) -> list[str]:
    name, *params = value.split(",")
    if not _full(_IFNAME, name):
        raise Invalid(f"needs an interface name first, not {name!r}")
    for param in params:
        key, sep, val = param.partition("=")
        ok = (
            (param in ("auto", "dhcp", "forward"))
            or (key == "address" and _ipv4(val, cidr=True))
            or (key in ("gateway", "nameserver") and _ipv4(val))
            or (key == "route" and _route(val))
        )
        if not (ok and (sep or param in ("auto", "dhcp", "forward"))):
            raise Invalid(f"{name}: unknown or malformed parameter {param!r}")
    return []


def _check_cache_evict(value: str) -> list[str]:
    if value in ValueKind.cache_evict.keywords:
        return []
    raise Invalid(f"must be unused, never or all, not {value!r}")


def _check_swap(value: str) -> list[str]:
    what, *params = value.split(",")
    if not (_full(_DEV_PATH, what) and "/../" not in what + "/"):
        try:
            size_bytes(what)
        except Invalid:
            raise Invalid(
                f"must be a size such as 4G or a /dev/NODE, then [,swappiness=N], not {value!r}"
            ) from None
    for param in params:
        key, _, number = param.partition("=")
        if key != "swappiness" or not re.fullmatch(r"[0-9]{1,3}", number) or int(number) > 200:
            raise Invalid(f"unknown or malformed parameter {param!r} (swappiness=0-200)")
    return []


_STORAGE_KEY = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?")


def _check_storage(value: str) -> list[str]:
    for param in value.split(","):
        key, sep, val = param.partition("=")
        if not (sep and val and _full(_STORAGE_KEY, key)) or any(c in val for c in '"\\'):
            raise Invalid(f"KEY=VALUE[,KEY=VALUE...] without quotes or backslashes, not {param!r}")
        if key == "additionalimagestores":
            for store in val.split("|"):
                if not (store.startswith("/") or _full(_NAME, store)):
                    raise Invalid(f"{store!r} is neither a /PATH nor a b2c.filesystem name")
    return []


def _check_proxy(value: str) -> list[str]:
    if "=" not in value.split("://", 1)[0]:
        return _check_url(value)
    for param in value.split(","):
        scheme, _, url = param.partition("=")
        if scheme not in ("http", "https"):
            raise Invalid(f"must be a URL or http=URL/https=URL, not {param!r}")
        _check_url(url)
    return []


def _check_network(value: str) -> list[str]:
    if value in ValueKind.network.keywords:
        return []
    raise Invalid(f"must be auto or none, not {value!r}")


def _route(value: str) -> bool:
    net, sep, gateway = value.partition(":")
    return bool(sep) and (_ipv4(net, cidr=True) or _ipv4(net)) and _ipv4(gateway)


def _netmask(value: str) -> bool:
    """A dotted IPv4 netmask: ones, then zeros (init/network.sh b2c_prefix)."""
    if not _ipv4(value):
        return False
    zeros = ~int.from_bytes(bytes(int(octet) for octet in value.split(".")), "big") & 0xFFFFFFFF
    return zeros & (zeros + 1) == 0


# init/network.sh b2c_ip_apply's test: Linux's dev_valid_name() (at most IFNAMSIZ - 1 bytes,
# neither . nor ..), within b2c's characters; empty: the first interface.
_INTERFACE = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.-]{0,15}")
_KERNEL_IP_DHCP = ("dhcp", "on", "any", "bootp", "rarp", "both")
_KERNEL_IP_AUTOCONF = ("", "off", "none", "static", *_KERNEL_IP_DHCP)


def _check_any(value: str) -> list[str]:
    return []


def _check_kernel_ip(value: str) -> None:
    """The kernel's ip= (Documentation/admin-guide/nfs/nfsroot.rst) as /init applies it when
    the kernel has no IP autoconfiguration (init/network.sh b2c_ip_apply), with its errors.
    Not a parse-time check: /init reads any ip= and judges it when it connects."""
    if value in ("off", "none", *_KERNEL_IP_DHCP):
        return
    fields = (value + ":" * 9).split(":")[:10]
    client, server, gateway, netmask, hostname, device, autoconf, dns0, dns1, ntp0 = fields
    for address in (client, server, gateway, dns0, dns1, ntp0):
        if address and not _ipv4(address):
            raise Invalid(f"{address!r} is not an IPv4 address")
    if not _full(_INTERFACE, device):
        raise Invalid(
            f"{device!r} is not a network interface name "
            "(at most 15 letters, digits, '_', '.' or '-')"
        )
    if hostname and not _full(_HOSTNAME, hostname):
        raise Invalid(f"{hostname!r} is not a host name ({_HOSTNAME_RULE})")
    if autoconf not in _KERNEL_IP_AUTOCONF:
        raise Invalid(
            f"unknown autoconfiguration {autoconf!r} (off, none, dhcp, bootp, rarp, both, on, any)"
        )
    if client and autoconf not in _KERNEL_IP_DHCP and netmask and not _netmask(netmask):
        raise Invalid(f"{netmask!r} is not a netmask")


_VALIDATORS: dict[ValueKind, Callable[[str], list[str]]] = {
    ValueKind.seconds: _check_seconds,
    ValueKind.size: _check_size,
    ValueKind.url: _check_url,
    ValueKind.hostname: _check_hostname,
    ValueKind.ntp_peer: _check_ntp_peer,
    ValueKind.network: _check_network,
    ValueKind.device_drivers: _check_device_drivers,
    ValueKind.cache_evict: _check_cache_evict,
    ValueKind.swap: _check_swap,
    ValueKind.storage: _check_storage,
    ValueKind.proxy: _check_proxy,
    ValueKind.modules: _check_modules,
    ValueKind.podman_args: _check_words,
    ValueKind.command: _check_words,
    ValueKind.cache_device: _check_cache_device,
    ValueKind.filesystem: _check_filesystem,
    ValueKind.volume: _check_volume,
    ValueKind.iface: _check_iface,
    ValueKind.kernel_ip: _check_any,
    ValueKind.kernel_modules: _check_kernel_modules,
}


def validate(kind: ValueKind, value: str | None) -> list[str]:
    """Warnings for a valid value; raises Invalid for a malformed one."""
    if kind is ValueKind.flag:
        return _check_flag(value)
    kernel_own = kind in (ValueKind.kernel_ip, ValueKind.kernel_modules)
    if kind is ValueKind.unsupported or (kernel_own and value is None):
        return []
    if value is None:
        raise Invalid("needs a value")
    if "\n" in value:
        raise Invalid("must not contain a newline")
    return _VALIDATORS[kind](value)


RUN_QUOTE_HINT = "put exact arguments after `--` (they reach the guest in a file), or use '...'"


def compose(name: str, value: str | None, *, quote_hint: str = RUN_QUOTE_HINT) -> str:
    """One kernel command-line parameter for option ``name``: ``name``, ``name=value`` or
    ``name="value"`` (quoted when the value holds white space or is empty).

    The kernel's splitter (lib/cmdline.c next_arg) has no escape: a value can never hold a
    ``"``, and /init refuses newlines. Raises ConfigError for those (with ``quote_hint``
    for a ``"``: what the calling command offers instead, by default run's) and for any
    value the option's validator rejects.
    """
    opt = lookup(name)
    if opt is None:
        raise ConfigError(f"{name} is not a b2c option", hint="see `b2c-builder run --help`")
    flag = opt.flag
    if value is not None and ('"' in value or "\0" in value):
        raise ConfigError(
            f"{flag} {value!r}: the kernel command line cannot carry a double quote",
            hint=quote_hint,
        )
    try:
        validate(opt.kind, value)
    except Invalid as exc:
        raise ConfigError(
            f"{flag} {value!r}: {exc}", hint=f"see {opt.name} in the README"
        ) from None
    if value is None:
        return opt.name
    if value == "" or any(c in KERNEL_SPACE for c in value):
        return f'{opt.name}="{value}"'
    return f"{opt.name}={value}"


# --- the linter -------------------------------------------------------------------------

UNKNOWN_OPTION = "unknown option (ignored)"  # /init's warning (the host's check: hostlint)


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" or "warning", as /init prints them: "b2c: error: ..."
    option: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.option}: {self.message}"


def lint_cmdline(
    cmdline: str,
    *,
    source: str = "cmdline",
    arch: str | None = None,
    added: str = "",
    added_by: str = "the boot loader",
    job: Sequence[str] = (),
) -> list[Problem]:
    """What /init would complain about for this command line, without booting.

    ``source="extra"`` checks a b2c.extra_args_url document (options acting before it is
    fetched are reported as ignored). A kernel command line (``source="cmdline"``) is also
    checked as a whole (``line_problems``): a byte-order mark, a CR, secret-looking values
    and, when ``arch`` is given, its length with ``added`` (what ``added_by``, the boot loader
    or RUN, adds).
    ``job`` holds the parameters of `run`'s job, which /init parses on their own after the
    command line (init/job.sh): a quote left open in ``cmdline`` cannot reach them.
    """
    problems: list[Problem] = []
    if source == "cmdline":
        problems += line_problems(cmdline, arch=arch, added=added, added_by=added_by)
    seen: dict[str, list[str]] = {}
    for name, value in [*parse_cmdline(cmdline), *parse_cmdline(" ".join(job))]:
        option = lookup(name)
        if option is None:
            if name.startswith("b2c."):
                problems.append(Problem("warning", name, UNKNOWN_OPTION))
            continue
        if option.kind is ValueKind.unsupported:
            problems.append(Problem("warning", name, option.meaning))
            continue
        if source == "extra" and not option.late_ok:
            problems.append(Problem("warning", name, "comes too late in the extra command line"))
            continue
        try:
            warnings = validate(option.kind, value)
        except Invalid as exc:
            problems.append(Problem("error", name, str(exc)))
            continue
        problems.extend(Problem("warning", name, w) for w in warnings)
        values = seen.setdefault(option.name, [])
        if option.repeatable:
            values.append(value or "")
        else:
            values[:] = [value or ""]
    problems.extend(_cross_check(seen))
    return problems


def _cross_check(seen: dict[str, list[str]]) -> list[Problem]:
    """Problems that only show once the whole line is known (reported by /init at use)."""
    problems: list[Problem] = []
    filesystems = {spec.split(",")[0] for spec in seen.get("b2c.filesystem", [])}
    cache = seen.get("b2c.cache_device", ["none"])[-1]
    named = not cache.startswith("/") and cache not in ValueKind.cache_device.keywords
    if named and cache not in filesystems:
        problems.append(
            Problem("error", "b2c.cache_device", f"no b2c.filesystem is named {cache!r}")
        )
    for spec in seen.get("b2c.volume", []):
        for param in spec.split(",")[1:]:
            key, _, val = param.partition("=")
            if key == "filesystem" and val not in filesystems:
                problems.append(
                    Problem("error", "b2c.volume", f"no b2c.filesystem is named {val!r}")
                )
    # /init applies ip= only without b2c.iface and with a network (init/network.sh).
    no_network = seen.get("b2c.network", ["auto"])[-1] == "none"
    if not seen.get("b2c.iface") and not no_network:
        try:
            _check_kernel_ip(seen.get("ip", [""])[-1])
        except Invalid as exc:
            problems.append(Problem("error", "ip", str(exc)))
    elif seen.get("ip"):
        why = "b2c.iface configures the network" if seen.get("b2c.iface") else "b2c.network=none"
        problems.append(Problem("warning", "ip", f"not applied by /init: {why}"))
    if seen.get("b2c.swap") and not seen["b2c.swap"][-1].startswith("/") and cache == "none":
        problems.append(Problem("warning", "b2c.swap", "needs a b2c.cache_device (ignored)"))
    return problems


# --- the line as a whole: length, stray bytes, secrets ----------------------------------

EXTRA_ARGS_HINT = (
    "put options in a file served over HTTP(S) and pass b2c.extra_args_url=URL instead"
)
_SECRET_NAME = re.compile(r"[A-Za-z0-9_.-]*(?:PASSWORD|PASSWD|TOKEN|SECRET)[A-Za-z0-9_.-]*", re.I)
_SECRET_ASSIGNMENT = re.compile(
    r"(?:^|=)([A-Za-z0-9_.-]*(?:PASSWORD|PASSWD|TOKEN|SECRET)[A-Za-z0-9_.-]*)=", re.I
)
_URL_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


RUN = "b2c-builder run"  # an ``added_by``: run's direct kernel boot under QEMU


def check_length(
    cmdline: str, arch: str, *, added: str = "", added_by: str = "the boot loader"
) -> Problem | None:
    """An error when ``cmdline`` plus ``added`` (what ``added_by``, a boot loader such as
    PXELINUX or RUN, puts around it, e.g. ``BOOT_IMAGE=/vmlinuz ``) does not fit the ``arch``
    kernel's COMMAND_LINE_SIZE bytes (UTF-8, terminating NUL included;
    ``ArchFacts.command_line_size`` in config.ARCHES), else None.

    Pure. The kernel silently cuts a longer line; under QEMU's direct kernel boot (RUN) an
    x86 kernel given 2048 bytes or more prints nothing at all, which the message says then.
    Raises ValueError when ``arch`` is not an Arch value.
    """
    limit = Arch(arch).facts.command_line_size
    own, extra = len(cmdline.encode()), len(added.encode())
    if own + extra + 1 <= limit:
        return None
    with_added = f" + {extra} added by {added_by} ({added.strip()!r})" if extra else ""
    silence = (
        " (an x86 kernel under QEMU boots to silence)"
        if added_by == RUN and Arch(arch) is Arch.amd64
        else ""
    )
    return Problem(
        "error",
        "cmdline",
        f"{own} bytes{with_added} + the terminating NUL = {own + extra + 1} bytes, over the "
        f"{limit} bytes of the {arch} kernel's COMMAND_LINE_SIZE: the kernel would cut the "
        f"last {own + extra + 1 - limit} bytes{silence}; {EXTRA_ARGS_HINT}",
    )


def secret_problems(cmdline: str) -> list[Problem]:
    """Warnings for values that look like secrets: an option named like *PASSWORD*, *TOKEN*
    or *SECRET*, such an assignment inside a value (``-e API_TOKEN=...``), podman's
    ``--creds``, a URL with a password. The kernel prints its command line on the console and
    every process can read /proc/cmdline."""
    problems: list[Problem] = []
    why = (
        "the kernel prints its command line on the console and any process can read "
        "/proc/cmdline; put it in a file served over HTTPS and pass b2c.extra_args_url=URL"
    )
    for name, value in parse_cmdline(cmdline):
        if _SECRET_NAME.fullmatch(name):
            problems.append(Problem("warning", name, f"the option name looks like a secret: {why}"))
        if not value:
            continue
        try:
            words = split_words(value)
        except ValueError:
            words = value.split()
        for word in words:
            if word == "--creds" or word.startswith("--creds="):
                problems.append(Problem("warning", name, f"--creds holds credentials: {why}"))
            elif match := _SECRET_ASSIGNMENT.search(word):
                problems.append(
                    Problem("warning", name, f"{match.group(1)}= looks like a secret: {why}")
                )
            elif _URL_PASSWORD.search(word):
                problems.append(Problem("warning", name, f"a URL holds a password: {why}"))
    return problems


def _unterminated_quote(cmdline: str) -> int | None:
    """The index of a double quote that opens and is never closed, else None. The kernel's
    splitter (lib/cmdline.c next_arg) toggles quoting at every ``"``, with no escape."""
    opened = None
    for index, char in enumerate(cmdline):
        if char == '"':
            opened = index if opened is None else None
    return opened


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def line_problems(
    cmdline: str, *, arch: str | None = None, added: str = "", added_by: str = "the boot loader"
) -> list[Problem]:
    """Problems of the line as a whole: a UTF-8 byte-order mark, a CR or a double quote never
    closed (errors), secrets (warnings, see ``secret_problems``), and with ``arch`` its
    length (``check_length``, with ``added`` and ``added_by``)."""
    problems: list[Problem] = []
    if (bom := cmdline.find("\ufeff")) >= 0:
        problems.append(
            Problem(
                "error",
                "cmdline",
                f"a UTF-8 byte-order mark (EF BB BF) at byte {_byte_offset(cmdline, bom)}: the "
                "kernel keeps it, so the option it sticks to is not recognised; save the file "
                "as UTF-8 without BOM",
            )
        )
    if (cr := cmdline.find("\r")) >= 0:
        problems.append(
            Problem(
                "error",
                "cmdline",
                f"a carriage return (CR) at byte {_byte_offset(cmdline, cr)}: Windows line "
                "endings? Boot loaders end the line there (SYSLINUX, systemd-boot) and the "
                "kernel reads it as a space; remove it",
            )
        )
    if (quote := _unterminated_quote(cmdline)) is not None:
        rest = cmdline[quote + 1 :].strip()
        if any(c in KERNEL_SPACE for c in rest):
            effect = (
                f"the kernel reads the rest of the line ({_shorten(rest)!r}) into one value, "
                "so no option after it counts"
            )
        else:
            effect = (
                "the kernel ends that value with the line (with anything a boot loader "
                "appends after it)"
            )
        where = f"a double quote at byte {_byte_offset(cmdline, quote)}"
        problems.append(
            Problem("error", "cmdline", f"{where} is never closed: {effect}; close the quote")
        )
    problems += secret_problems(cmdline)
    if arch is not None and (length := check_length(cmdline, arch, added=added, added_by=added_by)):
        problems.append(length)
    return problems


# --- the README reference ---------------------------------------------------------------

README_START = "<!-- options:start -->"
README_END = "<!-- options:end -->"


def _cell(text: str) -> str:
    return text.replace("\n", " ")


def markdown_table() -> str:
    """The README's option reference, generated from OPTIONS."""
    lines = [
        "| Option | Aliases | Value | Repeatable | Default | Meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for opt in OPTIONS:
        name = f"`{opt.name}`" if opt.kind is ValueKind.flag else f"`{opt.name}=`"
        aliases = ", ".join(f"`{a}`" for a in opt.aliases)
        default = f"`{opt.default}`" if opt.default and opt.kind is not ValueKind.flag else ""
        cells = [
            name,
            aliases,
            opt.kind.syntax,
            "yes" if opt.repeatable else "",
            default,
            opt.meaning,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def update_readme(text: str) -> str:
    """``text`` with the section between the option markers replaced by markdown_table()."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {README_START} ... {README_END} section")
    head = text[: start + len(README_START)]
    return head + "\n" + markdown_table() + text[end:]


def readme_section(text: str) -> str:
    """The current contents between the option markers (without the markers)."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {README_START} ... {README_END} section")
    return text[start + len(README_START) : end].removeprefix("\n")


def write_readme(path: Path) -> bool:
    """Refresh the option reference in ``path``; True when the file changed."""
    old = path.read_text()
    new = update_readme(old)
    if new != old:
        path.write_text(new)
    return new != old


# --- a b2c.extra_args_url document ----------------------------------------------------------

UTF8_BOM = b"\xef\xbb\xbf"
# Bytes nothing can place: NUL and the control characters that are not the kernel's white space.
_UNPLACEABLE = re.compile(b"[\\x00-\\x08\\x0e-\\x1f\\x7f]")


def extra_args_text(data: bytes) -> tuple[str, list[Problem]]:
    """The text /init parses from a b2c.extra_args_url document, and what stops it.

    Mirrors b2c_extra_text in init/cmdline.sh: a leading UTF-8 byte-order mark is dropped, CR
    is white space (the kernel's isspace), and NUL, other control characters or a byte-order
    mark elsewhere are errors. The text is ``data`` decoded as Latin-1, one character a byte,
    as the kernel and the shell see it.
    """
    body = data.removeprefix(UTF8_BOM)
    problems: list[Problem] = []
    if (at := body.find(UTF8_BOM)) >= 0:
        offset = at + len(data) - len(body) + 1
        problems.append(
            Problem(
                "error", "extra", f"a byte-order mark (ef bb bf) at byte {offset}, not at the start"
            )
        )
    if match := _UNPLACEABLE.search(body):
        offset = match.start() + len(data) - len(body) + 1
        problems.append(
            Problem(
                "error",
                "extra",
                f"a control character (byte {match.group().hex()}) at byte {offset}: only "
                "printable text and white space can be placed",
            )
        )
    return body.decode("latin-1"), problems


def lint_extra_args(data: bytes) -> list[Problem]:
    """What /init would complain about in a b2c.extra_args_url document (``data``, as served):
    the bytes of ``extra_args_text``, a parameter that is not a b2c option (the document only
    carries b2c options: /init refuses it), then ``lint_cmdline(..., source="extra")``."""
    text, problems = extra_args_text(data)
    if problems:
        return problems
    for name, _ in parse_cmdline(text):
        if not name.startswith("b2c.") and lookup(name) is None:
            shown = (
                name if name.isascii() and name.isprintable() else name.encode("latin-1").hex(" ")
            )
            problems.append(Problem("error", "extra", f"{shown!r} is not a b2c option"))
    return problems + lint_cmdline(text, source="extra")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m b2c_builder.guest.options", description=__doc__
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write-readme", action="store_true", help="refresh README.md")
    group.add_argument("--lint", metavar="CMDLINE", help="check a kernel command line")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args(argv)
    if args.write_readme:
        changed = write_readme(args.readme)
        print(f"{args.readme}: {'updated' if changed else 'up to date'}")
        return 0
    problems = lint_cmdline(args.lint)
    for problem in problems:
        print(problem)
    return 1 if any(p.severity == "error" for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
