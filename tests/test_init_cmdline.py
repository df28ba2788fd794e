"""/init's command-line parsing under busybox sh, against the Python reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b2c_builder.guest.hostlint import check_cmdline
from b2c_builder.guest.options import (
    OPTIONS,
    Invalid,
    ValueKind,
    lint_cmdline,
    parse_cmdline,
    split_words,
    validate,
)
from tests.shell import Shell, real_world_lines, rendered_init

FS, TS, CS = "\x1c", "\x1d", "\x1e"  # file, token and field separators in the shell's output

DUMP_TOKENS = f"""
for f in "$@"; do
    b2c_read_file "$f"
    B2C_REST=$B2C_TEXT
    while b2c_next_arg; do
        printf '%s{CS}%s{CS}%s{TS}' "$B2C_PARAM" "$B2C_HASVAL" "$B2C_VAL"
    done
    printf '{FS}'
done
"""


def shell_parse(sh: Shell, lines: list[str]) -> list[list[tuple[str, str | None]]]:
    """Parse each line with b2c_next_arg, in one busybox run."""
    paths = []
    for i, line in enumerate(lines):
        paths.append(sh.write(f"in/{i}", line.encode("latin-1")))
    result = sh.run("set -- " + " ".join(f"'{p}'" for p in paths) + "\n" + DUMP_TOKENS)
    assert result.status == 0, result.err
    parsed = []
    for chunk in result.out.split(FS)[:-1]:
        tokens = []
        for token in chunk.split(TS)[:-1]:
            param, hasval, value = token.split(CS)
            tokens.append((param, value if hasval == "1" else None))
        parsed.append(tokens)
    return parsed


KERNEL_LINES = [
    "",
    "a",
    "a= b",
    'a="b c" "d=e f" "g"',
    'a=x"b c"y',
    'a="unterminated value',
    'a="" b="',
    '"" "',
    "=a=b =x a==b",
    '"a="b c""',
    "a=b\tc=d\ne\x0bf\x0cg\rh",
    "a=b\xa0c",
    'a="x\ny" z',
    "  lead trail  ",
]


def test_kernel_rules_table(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    assert shell_parse(sh, KERNEL_LINES) == [parse_cmdline(line) for line in KERNEL_LINES]


@pytest.mark.parametrize("name", ["lab-jobs.txt", "docs.txt", "hostile.txt"])
def test_real_world_lines_parse_like_the_kernel(tmp_path: Path, name: str) -> None:
    lines = real_world_lines(name)
    assert lines
    assert shell_parse(Shell(tmp_path), lines) == [parse_cmdline(line) for line in lines]


@pytest.mark.parametrize("name", ["lab-jobs.txt", "docs.txt", "hostile.txt"])
def test_real_world_lines_are_accepted(tmp_path: Path, name: str) -> None:
    sh = Shell(tmp_path)
    for i, line in enumerate(real_world_lines(name)):
        assert [p for p in lint_cmdline(line) if p.severity == "error"] == [], line
        sh.write(f"lines/{i}", line)
        result = sh.run(
            f'b2c_read_file "$B2C_ROOT/lines/{i}"; b2c_parse_cmdline "$B2C_TEXT" cmdline'
        )
        assert result.status == 0 and result.errors() == [], (line, result.out)
        lint_warnings = {p.option for p in lint_cmdline(line) if p.severity == "warning"}
        shell_warnings = {
            w.split()[2].rstrip(":") for w in result.warnings() if w.split()[2].startswith("b2c.")
        }
        shell_warnings |= {w.split()[4] for w in result.warnings() if "unknown option" in w}
        assert {o for o in lint_warnings if o.startswith("b2c.")} <= shell_warnings | {"b2c.volume"}


ALPHABET = st.sampled_from(
    [" ", "\t", "\n", '"', '"', "=", "=", "a", "b", ".", "'", "$", "\xa0", "é", "\r"]
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.text(alphabet=ALPHABET, max_size=30), min_size=1, max_size=25))
def test_kernel_rules_property(tmp_path: Path, lines: list[str]) -> None:
    sh = Shell(tmp_path)
    assert shell_parse(sh, lines) == [parse_cmdline(line) for line in lines]


# --- podman argument splitting ------------------------------------------------------------

SPLIT_WORDS = f"""
dump_words() {{
    for w in "$@"; do printf '%s{CS}' "$w"; done
}}
for f in "$@"; do
    b2c_read_file "$f"
    if b2c_with_words "$B2C_TEXT" dump_words >"$f.out"; then cat "$f.out"; else printf 'ERROR'; fi
    printf '{FS}'
done
"""


def shell_split(sh: Shell, texts: list[str]) -> list[list[str] | None]:
    paths = [sh.write(f"words/{i}", t.encode("latin-1")) for i, t in enumerate(texts)]
    result = sh.run("set -- " + " ".join(f"'{p}'" for p in paths) + "\n" + SPLIT_WORDS)
    out: list[list[str] | None] = []
    for chunk in result.out.split(FS)[:-1]:
        out.append(None if chunk.endswith("ERROR") else chunk.split(CS)[:-1])
    return out


def python_split(text: str) -> list[str] | None:
    try:
        return split_words(text)
    except ValueError:
        return None


WORD_CASES = [
    "docker://img",
    "-ti --tls-verify=false docker://10.0.2.2:5000/x sh -c 'echo $(id); exit 3'",
    "-e \"A=b c\" -e B='d e' x",
    '--env="A B"C \'D\'"E"',
    "a '' b \"\"",
    "`id` ; $HOME * ?",
    "'open",
    'a "b',
    "  \t ",
]


def test_split_words_table(tmp_path: Path) -> None:
    assert shell_split(Shell(tmp_path), WORD_CASES) == [python_split(t) for t in WORD_CASES]


WORD_ALPHABET = st.sampled_from([" ", "\t", "'", '"', "a", "b", "$", "(", ")", "*", "\\", ";"])


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(st.text(alphabet=WORD_ALPHABET, max_size=25), min_size=1, max_size=25))
def test_split_words_property(tmp_path: Path, texts: list[str]) -> None:
    assert shell_split(Shell(tmp_path), texts) == [python_split(t) for t in texts]


def test_words_are_not_globbed(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write("glob/file", "")
    result = sh.run('cd "$B2C_ROOT/glob" && b2c_with_words "* ?ile" printf "%s\\n"')
    assert result.lines == ["*", "?ile"]


# --- value validation: the shell and Python agree ------------------------------------------

VALUES: dict[ValueKind, list[str]] = {
    ValueKind.seconds: ["0", "15", "007", "123456789", "1234567890", "", "abc", "1.5", "-1", "1 "],
    ValueKind.size: [
        "0",
        "1048576",
        "4G",
        "512M",
        "512MiB",
        "1k",
        "2TB",
        "1024T",
        "1025T",
        "G",
        "4X",
        "4 G",
        "1.5G",
        "99999999999999999",
    ],
    ValueKind.url: [
        "http://a",
        "https://10.0.0.1:9000/x?y=z",
        "http:///x",
        "ftp://x",
        "http://",
        "http://a b",
        "x",
    ],
    ValueKind.hostname: ["dut-01", "a", "a.b-c", "-a", "a_b", "a" * 64, "a" * 65, "", "$(id)"],
    ValueKind.ntp_peer: ["none", "auto", "10.42.0.1", "pool.ntp.org", "fe80::1", "a b", "", "$(x)"],
    ValueKind.modules: [
        "e1000e",
        "e1000e,igb",
        "virtio-net,virtio_blk",
        "",
        ",",
        "a,,b",
        "a,",
        "a b",
        "a.ko",
    ],
    ValueKind.podman_args: [
        "docker://x",
        "-ti docker://x sh -c 'a b'",
        "",
        "   ",
        "'",
        'a "b',
        "''",
    ],
    ValueKind.command: ["poweroff -f", "", "sh -c 'x"],
    ValueKind.cache_device: [
        "none",
        "auto",
        "reset",
        "/dev/sda",
        "/dev/disk/by-id/usb-X_1:0-part1",
        "/dev/",
        "/dev/../etc/x",
        "/dev/a/..",
        "/dev/a b",
        "share",
        "my_fs-1",
        "a.b",
        "/tmp/x",
        "",
    ],
    ValueKind.filesystem: [
        "share,type=9p,src=share,opts=trans=virtio|version=9p2000.L",
        "nfs,src=10.0.0.1:/x",
        "n,src=x,type=fuse.sshfs",
        "n",
        "n,type=nfs",
        "n,src=",
        "n,src=x,",
        "n,src=x,bogus=1",
        "n,src=x,type=a b",
        "n,src=x,opts=",
        ",src=x",
        "a b,src=x",
    ],
    ValueKind.volume: [
        "v",
        "v,filesystem=share",
        "v,expiration=never",
        "v,expiration=pipeline_end",
        "v,expiration=soon",
        "v,filesystem=",
        "v,bogus",
        "v,",
        "-v",
        "v.1_2-3",
        "v,mirror=a/b,overwrite",
    ],
    ValueKind.iface: [
        "eth0",
        "eth0,dhcp",
        "eth0,auto,forward",
        "eth0,address=10.0.0.2/24,gateway=10.0.0.1,nameserver=10.0.0.1",
        "eth0,route=10.0.0.0/8:10.0.0.1,route=10.1.2.3:10.0.0.1",
        "eth0,address=10.0.0.2",
        "eth0,address=10.0.0.256/24",
        "eth0,address=10.0.0.2/33",
        "eth0,gateway=010.0.0.1",
        "eth0,gateway=1.2.3",
        "eth0,route=10.0.0.0/8",
        "eth0,auto=1",
        "eth0,",
        "averyveryverylongname",
        "",
        "eth 0",
    ],
    ValueKind.network: ["auto", "none", "", "off", "None", "none "],
    ValueKind.cache_evict: ["unused", "never", "all", "", "lru", "All", "never,all"],
    ValueKind.swap: [
        "4G",
        "512M,swappiness=10",
        "/dev/vdb",
        "/dev/vdb,swappiness=200",
        "/dev/vdb,swappiness=201",
        "4G,swappiness=",
        "4G,swapiness=1",
        "4G,",
        "/dev/../etc",
        "lots",
        ",swappiness=1",
    ],
    ValueKind.storage: [
        "additionalimagestores=/mnt/store",
        "additionalimagestores=/a|/b|shared,overlay.mountopt=nodev",
        "size=10G",
        "additionalimagestores=bad name",
        "additionalimagestores=",
        "=x",
        'mount_program="x"',
        "a.b.c=1",
        "",
    ],
    ValueKind.proxy: [
        "http://p:3128",
        "https=http://p:3128",
        "http=http://p:3128,https=http://q:3129",
        "ftp=http://p",
        "https=",
        "https=p:3128",
        "http://p:3128,https=http://q",
    ],
    ValueKind.kernel_ip: ["dhcp", "10.0.2.15::10.0.2.2:255.255.255.0::eth0:off", "off", ""],
    ValueKind.kernel_modules: ["ahci", "ahci,nvme", "", "virtio-blk", ",,"],
    ValueKind.device_drivers: [
        "auto",
        "none",
        "virtio_blk",
        "nvme,e1000e",
        "auto,virtio_blk",
        "none,e1000",
        "e1000,none",
        "AUTO",
        "",
        "a b",
        "nvme,",
    ],
}


def python_verdict(kind: ValueKind, value: str) -> bool:
    try:
        validate(kind, value)
    except Invalid:
        return False
    return True


def shell_verdicts(sh: Shell, cases: list[tuple[ValueKind, str]]) -> list[bool]:
    code = []
    for i, (kind, value) in enumerate(cases):
        sh.write(f"values/{i}", value.encode("latin-1"))
        code.append(
            f'b2c_read_file "$B2C_ROOT/values/{i}"; '
            f'if b2c_check {kind} b2c.test 1 "$B2C_TEXT" >/dev/null; '
            "then echo ok; else echo bad; fi"
        )
    result = sh.run("\n".join(code))
    return [line == "ok" for line in result.lines]


def test_validators_agree_with_python(tmp_path: Path) -> None:
    cases = [(kind, value) for kind, values in VALUES.items() for value in values]
    expected = [python_verdict(kind, value) for kind, value in cases]
    assert True in expected and False in expected
    verdicts = shell_verdicts(Shell(tmp_path), cases)
    assert list(zip(cases, verdicts, strict=True)) == list(zip(cases, expected, strict=True))


VALUE_ALPHABET = st.sampled_from([*"a0159./:,=|-_ '\"$G", "src=", "type=", "auto", "route="])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cases=st.lists(
        st.tuples(
            st.sampled_from(
                [k for k in ValueKind if k not in (ValueKind.flag, ValueKind.unsupported)]
            ),
            st.lists(VALUE_ALPHABET, max_size=12).map("".join),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_validators_agree_property(tmp_path: Path, cases: list[tuple[ValueKind, str]]) -> None:
    expected = [python_verdict(kind, value) for kind, value in cases]
    assert shell_verdicts(Shell(tmp_path), cases) == expected


@pytest.mark.parametrize(
    ("value", "norm"),
    [(None, "1"), ("1", "1"), ("yes", "1"), ("on", "1"), ("true", "1"), ("0", "0"), ("off", "0")],
)
def test_flag_values(tmp_path: Path, value: str | None, norm: str) -> None:
    hasval = 0 if value is None else 1
    result = Shell(tmp_path).run(
        f'b2c_apply_option b2c.pipefail {hasval} "{value or ""}" cmdline; echo "$B2C_PIPEFAIL"'
    )
    assert result.lines == [norm]


# --- the option dispatch ------------------------------------------------------------------

SAMPLES: dict[ValueKind, tuple[str, str]] = {  # value -> what the shell variable holds
    ValueKind.podman_args: ("-ti docker://x sh -c 'a; b'", "-ti docker://x sh -c 'a; b'"),
    ValueKind.command: ("poweroff -f", "poweroff -f"),
    ValueKind.flag: ("", "1"),
    ValueKind.cache_device: ("/dev/vda", "/dev/vda"),
    ValueKind.size: ("2G", str(2 << 30)),
    ValueKind.filesystem: ("s,src=x,type=9p", "s,src=x,type=9p"),
    ValueKind.volume: ("v,expiration=pipeline_end", "v,expiration=pipeline_end"),
    ValueKind.url: ("http://10.0.0.1/x", "http://10.0.0.1/x"),
    ValueKind.iface: ("eth0,dhcp", "eth0,dhcp"),
    ValueKind.kernel_ip: ("dhcp", "dhcp"),
    ValueKind.kernel_modules: ("ahci,nvme", "ahci,nvme"),
    ValueKind.device_drivers: ("nvme,e1000e", "nvme,e1000e"),
    ValueKind.ntp_peer: ("auto", "auto"),
    ValueKind.network: ("none", "none"),
    ValueKind.cache_evict: ("never", "never"),
    ValueKind.swap: ("2G,swappiness=10", f"{2 << 30},swappiness=10"),
    ValueKind.storage: ("additionalimagestores=/a|fs", "additionalimagestores=/a|fs"),
    ValueKind.proxy: ("https=http://p:3128", "https=http://p:3128"),
    ValueKind.hostname: ("dut-01", "dut-01"),
    ValueKind.modules: ("a,b", "a,b"),
    ValueKind.seconds: ("15", "15"),
}
SUPPORTED = [opt for opt in OPTIONS if opt.kind is not ValueKind.unsupported]


@pytest.mark.parametrize(
    ("name", "opt"),
    [(n, o) for o in SUPPORTED for n in o.names],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_every_option_and_alias_is_stored(tmp_path: Path, name: str, opt: object) -> None:
    assert opt in SUPPORTED
    option = next(o for o in SUPPORTED if o is opt)
    value, stored = SAMPLES[option.kind]
    param = name if option.kind is ValueKind.flag else f'{name}="{value}"'
    sh = Shell(tmp_path)
    sh.write("line", param)
    result = sh.run(
        f'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline; echo "rc=$?"\n'
        f"printf '[%s]\\n' \"${option.var}\""
    )
    expected = f"[{stored}\n]" if option.repeatable else f"[{stored}]"
    assert result.out == f"rc=0\n{expected}\n", result.out


def test_repeatable_options_accumulate_in_order(tmp_path: Path) -> None:
    result = Shell(tmp_path).run(
        'b2c_parse_cmdline \'b2c.container=docker://a b2c.run="docker://b x" '
        "b2c.container=docker://c' cmdline\n"
        'printf "%s" "$B2C_CONTAINER"'
    )
    assert result.out == "docker://a\ndocker://b x\ndocker://c\n"


def test_scalar_options_last_one_wins(tmp_path: Path) -> None:
    result = Shell(tmp_path).run(
        "b2c_parse_cmdline 'b2c.hostname=a b2c.hostname=b' cmdline; echo \"$B2C_HOSTNAME\""
    )
    assert result.lines == ["b"]


def test_the_note_on_a_repeated_option_names_the_value_init_keeps(tmp_path: Path) -> None:
    """check-cmdline's note (hostlint) and /init agree on which value wins, job included."""
    line, job = "b2c.cache_device=auto b2c.cache_device=reset", ["b2c.cache_device=none"]
    result = Shell(tmp_path).run(
        f"b2c_parse_cmdline '{line}' cmdline; b2c_parse_cmdline '{job[0]}' job; "
        'echo "$B2C_CACHE_DEVICE"'
    )
    (note,) = [p for p in check_cmdline(line, job=job) if p.severity == "note"]
    assert note.message == f"given 3 times: /init keeps the last one ({result.lines[-1]!r})"
    assert result.lines[-1] == "none"


def test_defaults_when_absent(tmp_path: Path) -> None:
    result = Shell(tmp_path).run(
        'b2c_parse_cmdline "console=ttyS0" cmdline; '
        'echo "$B2C_CACHE_DEVICE|$B2C_NTP_PEER|$B2C_HOSTNAME|$B2C_POWEROFF_DELAY|'
        '$B2C_SHUTDOWN_CMD|$B2C_REBOOT_CMD|$B2C_PIPEFAIL"'
    )
    assert result.lines == ["none|none|boot2container|0|poweroff -f|reboot -f|0"]


def test_default_cmdline_is_overridden_by_the_boot_loader(tmp_path: Path) -> None:
    default = "b2c.container=docker://default b2c.hostname=built b2c.pipefail b2c.volume=v1"
    sh = Shell(tmp_path, init=rendered_init(default))
    sh.write(
        "proc/cmdline",
        "b2c.container=docker://mine b2c.container=docker://mine2 b2c.hostname=boot\n",
    )
    result = sh.run(
        'b2c_parse_all; echo "rc=$?"; '
        'printf "%s|" "$B2C_CONTAINER" "$B2C_HOSTNAME" "$B2C_PIPEFAIL" "$B2C_VOLUME"'
    )
    assert result.out == "rc=0\ndocker://mine\ndocker://mine2\n|boot|1|v1\n|"


def test_extra_args_append_and_cannot_change_early_options(tmp_path: Path) -> None:
    result = Shell(tmp_path).run(
        "b2c_parse_cmdline 'b2c.container=docker://a b2c.iface=eth0' cmdline\n"
        "b2c_parse_cmdline 'b2c.container=docker://b b2c.iface=eth1 b2c.ntp_peer=auto "
        "b2c.extra_args_url=http://x' extra\n"
        'printf "%s|" "$B2C_CONTAINER" "$B2C_IFACE" "$B2C_NTP_PEER" "$B2C_EXTRA_ARGS_URL"'
    )
    assert result.out.endswith("docker://a\ndocker://b\n|eth0\n|none||")
    assert len(result.warnings()) == 3
    assert (
        "b2c: warning: b2c.iface in the extra command line comes too late to take effect (ignored)"
        in result.lines
    )


def test_unknown_and_unsupported_options_warn(tmp_path: Path) -> None:
    result = Shell(tmp_path).run(
        "b2c_parse_cmdline 'b2c.frobnicate=1 b2c.keymap=fr b2c.contianer=docker://x "
        'console=ttyS0 quiet\' cmdline; echo "rc=$?"'
    )
    assert result.warnings() == [
        "b2c: warning: unknown option b2c.frobnicate (ignored)",
        "b2c: warning: b2c.keymap: not supported by b2c-builder (ignored)",
        "b2c: warning: unknown option b2c.contianer (ignored)",
    ]
    assert result.lines[-1] == "rc=0"


@pytest.mark.parametrize(
    ("param", "message"),
    [
        (
            "b2c.poweroff_delay=abc",
            "b2c: error: b2c.poweroff_delay: must be a whole number of seconds, not 'abc'",
        ),
        ("b2c.poweroff_delay", "b2c: error: b2c.poweroff_delay: needs a value"),
        ("b2c.pipefail=maybe", "b2c: error: b2c.pipefail: takes no value"),
        ("b2c.swap=lots", "b2c: error: b2c.swap: must be a size"),
        (
            'b2c.container="docker://x \'oops"',
            "b2c: error: b2c.container: unbalanced ' quote in: docker://x 'oops",
        ),
        ('b2c.container=""', "b2c: error: b2c.container: is empty"),
        ("b2c.cache_device=/dev/../etc", "b2c: error: b2c.cache_device: must be"),
        (
            "b2c.iface=eth0,bogus",
            "b2c: error: b2c.iface: eth0: unknown or malformed parameter 'bogus'",
        ),
        ('b2c.hostname="$(reboot)"', "b2c: error: b2c.hostname: must be a host name"),
        ('b2c.container="a\nb"', "b2c: error: b2c.container: must not contain a newline"),
    ],
)
def test_malformed_values_are_errors(tmp_path: Path, param: str, message: str) -> None:
    sh = Shell(tmp_path)
    sh.write("line", param)
    result = sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline; echo "rc=$?"'
    )
    assert result.lines[-1] == "rc=1"
    assert any(line.startswith(message) for line in result.errors()), result.out
    assert [p for p in lint_cmdline(param) if p.severity == "error"]
