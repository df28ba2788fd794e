"""Network (b2c.iface, ip=, DHCP fallback, the udhcpc script), clock, proxy, modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from b2c_builder.guest.options import lint_cmdline
from b2c_builder.resources import data_path
from tests.shell import Result, Shell


def connect(sh: Shell, cmdline: str) -> Result:
    sh.write("line", cmdline)
    return sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline || exit 99\n'
        'b2c_connect; echo "rc=$?"; b2c_uptime_cs; echo "uptime=$B2C_UPTIME_CS"'
    )


def ifaces(sh: Shell, *names: str) -> None:
    for name in names:
        sh.write(f"sys/class/net/{name}/operstate", "down\n")


def test_static_interface(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "eth0", "eth1")
    sh.write("etc/resolv.conf", "nameserver 9.9.9.9\n")
    result = connect(
        sh,
        "b2c.iface=eth1,address=10.0.0.2/24,gateway=10.0.0.1,nameserver=10.0.0.53,"
        "nameserver=10.0.0.54,route=10.1.0.0/16:10.0.0.254,forward",
    )
    assert result.lines[-2] == "rc=0"
    assert result.called("ip") == [
        ["link", "set", "lo", "up"],
        ["link", "set", "eth1", "up"],
        ["address", "add", "10.0.0.2/24", "dev", "eth1"],
        ["route", "replace", "default", "via", "10.0.0.1", "dev", "eth1"],
        ["route", "replace", "10.1.0.0/16", "via", "10.0.0.254", "dev", "eth1"],
    ]
    assert result.called("udhcpc") == []
    assert (sh.root / "etc/resolv.conf").read_text() == (
        "nameserver 10.0.0.53\nnameserver 10.0.0.54\nnameserver 9.9.9.9\n"
    )
    assert (sh.root / "proc/sys/net/ipv4/ip_forward").read_text() == "1\n"


def test_interface_with_dhcp_and_several_ifaces(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "eth0", "eth1")
    result = connect(sh, "b2c.iface=eth0,dhcp b2c.iface=eth1,address=192.168.0.2/24")
    assert result.lines[-2] == "rc=0"
    assert [c[:2] for c in result.called("udhcpc")] == [["-i", "eth0"]]
    assert ["address", "add", "192.168.0.2/24", "dev", "eth1"] in result.called("ip")


def test_missing_interface_fails_after_ten_seconds(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    result = connect(sh, "b2c.iface=eth7,dhcp")
    assert result.lines[-2] == "rc=1"
    assert result.errors() == [
        "b2c: error: b2c.iface: the network interface eth7 did not appear within 10s"
    ]
    assert 1000 <= int(result.lines[-1].split("=")[1]) - 100 <= 1050


# `ip -4 -o address show` once the kernel's autoconfiguration gave eth0 an address.
KERNEL_ADDRESSES = """\
case "$*" in
    "-4 -o address show")
        echo '1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever'
        echo '2: eth0    inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0\\       valid_lft'
        ;;
esac
"""


def test_kernel_ip_skips_dhcp_and_uses_pnp_dns(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "eth0")
    sh.write("proc/net/pnp", "#PROTO: DHCP\ndomain lab\nnameserver 10.0.2.3\nbootserver 10.0.2.2\n")
    sh.stub("ip", KERNEL_ADDRESSES)
    result = connect(sh, "ip=dhcp")
    assert result.lines[-2] == "rc=0"
    assert result.called("udhcpc") == []
    assert (sh.root / "etc/resolv.conf").read_text() == "domain lab\nnameserver 10.0.2.3\n"


@pytest.mark.parametrize(
    "pnp", [None, "#MANUAL\n"], ids=["no-ip-pnp", "pnp-but-nothing-configured"]
)
def test_kernel_ip_the_kernel_did_not_apply_is_applied_by_dhcp(
    tmp_path: Path, pnp: str | None
) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "eth0", "eth1")
    if pnp is not None:
        sh.write("proc/net/pnp", pnp)
    sh.stub("udhcpc", '[ "$2" = eth1 ]')
    result = connect(sh, "ip=dhcp")
    assert result.lines[-2] == "rc=0"
    assert [c[:2] for c in result.called("udhcpc")] == [["-i", "eth0"], ["-i", "eth1"]]
    assert "[1.00]: The kernel did not configure the network: applying ip=dhcp" in result.lines
    assert "[1.00]: Applied ip=dhcp" in result.lines


def test_kernel_ip_dhcp_on_one_device(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "eth0", "eth1")
    result = connect(sh, "ip=:::::eth1:dhcp")
    assert result.lines[-2] == "rc=0"
    assert [c[:2] for c in result.called("udhcpc")] == [["-i", "eth1"]]


def test_kernel_ip_static_form_in_user_space(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "eth0", "eth1")
    sh.write("etc/resolv.conf", "nameserver 9.9.9.9\n")
    value = "10.0.2.42:10.0.2.2:10.0.2.1:255.255.240.0:dut-7:eth1:off:10.0.2.3:10.0.2.4:10.0.2.5"
    sh.write("line", f"ip={value}")
    result = sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline || exit 99\n'
        'b2c_connect; echo "rc=$?"; b2c_set_hostname'
    )
    assert "rc=0" in result.lines
    assert result.called("udhcpc") == []
    assert result.called("ip")[1:] == [
        ["link", "set", "eth1", "up"],
        ["address", "add", "10.0.2.42/20", "dev", "eth1"],
        ["route", "replace", "default", "via", "10.0.2.1", "dev", "eth1"],
    ]
    assert (sh.root / "etc/resolv.conf").read_text() == "nameserver 10.0.2.3\nnameserver 10.0.2.4\n"
    assert (sh.root / "run/b2c/ntpsrv").read_text() == "10.0.2.5\n"
    assert (sh.root / "proc/sys/kernel/hostname").read_text() == "dut-7\n"  # sethostname(2)
    assert "[1.00]: Gave eth1 the address 10.0.2.42/20, gateway 10.0.2.1" in result.lines
    assert lint_cmdline(f"ip={value}") == []


def test_kernel_ip_static_defaults_mask_by_class_and_the_first_interface(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("sleep", sh.stubs["sleep"] + '\nmkdir -p "$B2C_ROOT/sys/class/net/enp1s0"')
    result = connect(sh, "ip=172.16.0.9 b2c.hostname=mine")
    assert result.lines[-2] == "rc=0"
    assert ["address", "add", "172.16.0.9/16", "dev", "enp1s0"] in result.called("ip")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("10.0.2.300", "'10.0.2.300' is not an IPv4 address"),
        ("bogus", "'bogus' is not an IPv4 address"),
        ("10.0.2.4:10.0.2.2:10.0.2.1:255.255.255.0::eth0:off:dns", "'dns' is not an IPv4 address"),
        ("10.0.2.4:::255.0.255.0", "'255.0.255.0' is not a netmask"),
        (
            "10.0.2.4::::::sometimes",
            "unknown autoconfiguration 'sometimes' (off, none, dhcp, bootp, rarp, both, on, any)",
        ),
        *(
            (
                f"10.0.2.4:::::{name}",
                f"'{name}' is not a network interface name "
                "(at most 15 letters, digits, '_', '.' or '-')",
            )
            # 16 bytes: one over IFNAMSIZ - 1; Linux refuses . and ..
            for name in ("eth;0", "enx0123456789abc", ".", "..")
        ),
        *(
            (
                f"10.0.2.4::::{host}:eth0",
                f"'{host}' is not a host name "
                "(up to 64 letters, digits, '.' and '-', the first a letter or digit)",
            )
            for host in ("-lab", "lab_7", "h" * 65)
        ),
    ],
)
def test_a_malformed_kernel_ip_is_an_error(tmp_path: Path, value: str, error: str) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "eth0")
    result = connect(sh, f"ip={value}")
    assert result.lines[-2] == "rc=1"
    assert result.errors() == [f"b2c: error: ip={value}: {error}"]
    # check-cmdline (options.lint_cmdline) reports it with the same words, before any boot.
    assert [str(p) for p in lint_cmdline(f"ip={value}")] == [f"error: ip: {error}"]


def test_kernel_ip_takes_a_15_byte_interface_and_a_host_name(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "enx0123456789ab")
    value = "10.0.2.4::10.0.2.2:255.255.255.0:lab-7.example:enx0123456789ab:off"
    result = connect(sh, f"ip={value}")
    assert result.lines[-2] == "rc=0"
    assert ["address", "add", "10.0.2.4/24", "dev", "enx0123456789ab"] in result.called("ip")
    assert lint_cmdline(f"ip={value}") == []
    named = sh.run(f"b2c_ip_apply '{value}' >/dev/null; echo \"host=$B2C_IP_HOSTNAME\"")
    assert named.lines[-1] == "host=lab-7.example"


def test_iface_takes_precedence_over_kernel_ip(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "eth0")
    sh.write("proc/net/pnp", "nameserver 10.0.2.3\n")
    result = connect(sh, "ip=dhcp b2c.iface=eth0,dhcp")
    assert [c[:2] for c in result.called("udhcpc")] == [["-i", "eth0"]]
    assert "10.0.2.3" not in (sh.root / "etc/resolv.conf").read_text()
    # check-cmdline says that /init leaves ip= alone, even a malformed one (new-user trial).
    for line, why in [
        ("ip=. b2c.iface=eth0,dhcp", "b2c.iface configures the network"),
        ("ip=dhcp b2c.network=none", "b2c.network=none"),
    ]:
        assert [str(p) for p in lint_cmdline(line)] == [f"warning: ip: not applied by /init: {why}"]
    assert lint_cmdline("b2c.iface=eth0,dhcp") == []


@pytest.mark.parametrize("ip", ["", "ip=off", "ip=none"])
def test_dhcp_fallback_on_eth_and_en_interfaces(tmp_path: Path, ip: str) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "lo", "wlan0", "eth0", "enp0s3", "docker0")
    sh.stub("udhcpc", '[ "$2" = enp0s3 ]')  # only enp0s3 gets a lease
    result = connect(sh, ip)
    assert result.lines[-2] == "rc=0"
    assert result.called("udhcpc") == [
        [
            "-i",
            "enp0s3",
            "-s",
            "/etc/udhcpc/default.script",
            "-O",
            "ntpsrv",
            "-t",
            "2",
            "-T",
            "1",
            "-n",
        ]
    ]
    assert ["link", "set", "wlan0", "up"] not in result.called("ip")


def test_dhcp_gives_up_after_ten_seconds(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    ifaces(sh, "eth0", "eth1")
    sh.stub("udhcpc", "return 1")
    result = connect(sh, "")
    assert result.lines[-2] == "rc=1"
    assert result.errors() == [
        "b2c: error: could not get an address by DHCP on any eth*/en* interface within 10s"
    ]
    assert 1000 <= int(result.lines[-1].split("=")[1]) - 100 <= 1050
    assert len(result.called("udhcpc")) == 2 * (len(result.called("sleep")) + 1)


def test_dhcp_waits_for_an_interface_to_appear(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("sleep", sh.stubs["sleep"] + '\nmkdir -p "$B2C_ROOT/sys/class/net/eth0"')
    result = connect(sh, "")
    assert result.lines[-2] == "rc=0"
    assert [c[1] for c in result.called("udhcpc")] == ["eth0"]


def test_no_network_interface_at_all(tmp_path: Path) -> None:
    result = connect(Shell(tmp_path), "")
    assert result.lines[-2] == "rc=1" and result.called("udhcpc") == []


# --- the udhcpc script --------------------------------------------------------------------


def udhcpc_event(sh: Shell, event: str, env: str) -> Result:
    script = data_path("init") / "udhcpc.script"
    return sh.run(f"{env}\nset -- {event}\n. '{script}'")


def test_udhcpc_bound(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    result = udhcpc_event(
        sh,
        "bound",
        "interface=eth0 ip=10.0.2.15 mask=24 broadcast=10.0.2.255 router='10.0.2.2 10.0.2.1' "
        "dns='10.0.2.3 10.0.2.4' domain=lab ntpsrv='10.0.2.2 10.0.2.5'",
    )
    assert result.status == 0
    assert result.called("ip") == [
        ["-4", "address", "flush", "dev", "eth0"],
        ["address", "add", "10.0.2.15/24", "broadcast", "10.0.2.255", "dev", "eth0"],
        ["route", "del", "default", "dev", "eth0"],
        ["route", "add", "default", "via", "10.0.2.2", "dev", "eth0"],
    ]
    assert (sh.root / "etc/resolv.conf").read_text() == (
        "search lab\nnameserver 10.0.2.3\nnameserver 10.0.2.4\n"
    )
    assert (sh.root / "run/b2c/ntpsrv").read_text() == "10.0.2.2 10.0.2.5\n"
    assert result.lines == [
        "udhcpc: eth0 got 10.0.2.15/24 via 10.0.2.2 10.0.2.1, DNS 10.0.2.3 10.0.2.4"
    ]


def test_udhcpc_never_globs_or_splits_lease_values(tmp_path: Path) -> None:
    """Lease values come from the network: '*' must not expand to the files of the working
    directory, and a value with a blank in it is one value (or a list item that is checked)."""
    sh = Shell(tmp_path)
    (tmp_path / "GLOBBED").write_text("a file a glob of * would find\n")
    result = udhcpc_event(
        sh,
        "bound",
        "interface=eth0 ip=10.0.2.15 mask=24 router='*' dns='* 10.0.2.3 a?b -n' "
        "domain='a b' mtu='1500 9000' ntpsrv='* 10.0.2.5'",
    )
    assert result.status == 0
    assert "GLOBBED" not in result.out + repr(result.calls)
    assert result.called("ip") == [
        ["-4", "address", "flush", "dev", "eth0"],
        ["address", "add", "10.0.2.15/24", "dev", "eth0"],
    ]
    assert (sh.root / "etc/resolv.conf").read_text() == "search a b\nnameserver 10.0.2.3\n"
    assert (sh.root / "run/b2c/ntpsrv").read_text() == "10.0.2.5\n"
    assert result.warnings() == [
        "b2c: warning: udhcpc: ignoring the router '*' (not an IPv4 address)",
        "b2c: warning: udhcpc: ignoring the DNS server '*' (not an IPv4 address)",
        "b2c: warning: udhcpc: ignoring the DNS server 'a?b' (not an IPv4 address)",
        "b2c: warning: udhcpc: ignoring the DNS server '-n' (not an IPv4 address)",
        "b2c: warning: udhcpc: ignoring the NTP server '*' (not an IPv4 address)",
        "b2c: warning: udhcpc: ignoring the MTU '1500 9000' (not a number)",
    ]
    assert result.lines[-1] == "udhcpc: eth0 got 10.0.2.15/24, DNS 10.0.2.3"


@pytest.mark.parametrize(
    ("value", "valid"),
    [("10.0.2.3", True), ("0.0.0.0", True), ("255.255.255.255", True), ("256.1.1.1", False),
     ("10.0.2", False), ("10.0.2.3.4", False), ("10..2.3", False), (".1.2.3", False),
     ("1.2.3.", False), ("1.2.3.0004", False), ("", False), ("*", False)],
)  # fmt: skip
def test_udhcpc_ipv4_check(tmp_path: Path, value: str, valid: bool) -> None:
    sh = Shell(tmp_path)
    udhcpc_event(sh, "bound", f"interface=eth0 ip=10.0.2.15 mask=24 dns='{value}'")
    expected = f"nameserver {value}\n" if valid else ""
    assert (sh.root / "etc/resolv.conf").read_text() == expected


def test_udhcpc_search_domains_are_checked(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    result = udhcpc_event(
        sh, "bound", "interface=eth0 ip=10.0.2.15 mask=24 search='lab;reboot' domain=ok"
    )
    assert result.warnings() == [
        "b2c: warning: udhcpc: ignoring the search domains 'lab;reboot' (not domain names)"
    ]
    assert (sh.root / "etc/resolv.conf").read_text() == ""


def test_udhcpc_prefix_from_subnet_and_renew(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    result = udhcpc_event(sh, "bound", "interface=eth0 ip=10.1.2.3 subnet=255.255.240.0")
    assert ["address", "add", "10.1.2.3/20", "dev", "eth0"] in result.called("ip")
    assert not (sh.root / "run/b2c/ntpsrv").exists()
    sh.stub(
        "ip",
        'case "$*" in "-4 address show dev eth0") echo "    inet 10.1.2.3/20 scope global" ;; esac',
    )
    result = udhcpc_event(sh, "renew", "interface=eth0 ip=10.1.2.3 mask=20")
    assert result.called("ip") == [["-4", "address", "show", "dev", "eth0"]]


def test_udhcpc_deconfig(tmp_path: Path) -> None:
    result = udhcpc_event(Shell(tmp_path), "deconfig", "interface=eth0")
    assert result.called("ip") == [
        ["-4", "address", "flush", "dev", "eth0"],
        ["link", "set", "dev", "eth0", "up"],
    ]


# --- clock --------------------------------------------------------------------------------


def set_clock(sh: Shell, cmdline: str) -> Result:
    return sh.run(f"b2c_parse_cmdline '{cmdline}' cmdline || exit 99\nb2c_set_clock")


def test_ntp_none_does_nothing(tmp_path: Path) -> None:
    result = set_clock(Shell(tmp_path), "")
    assert result.called("rdate") == [] and result.warnings() == []


@pytest.mark.parametrize(
    ("cmdline", "ntpsrv", "server"),
    [
        ("b2c.ntp_peer=10.42.0.1", None, "10.42.0.1"),
        ("b2c.ntp_peer=auto", "10.0.2.2 10.0.2.5", "10.0.2.2"),
        ("b2c.ntp_peer=auto", None, "pool.ntp.org"),
    ],
)
def test_ntp_peer(tmp_path: Path, cmdline: str, ntpsrv: str | None, server: str) -> None:
    sh = Shell(tmp_path)
    if ntpsrv:
        sh.write("run/b2c/ntpsrv", ntpsrv + "\n")
    result = set_clock(sh, cmdline)
    assert result.called("timeout") == [["10", "rdate", "-n", server]]
    assert result.called("rdate") == [["-n", server]]
    assert result.lines == [f"[1.00]: Set the clock from the NTP server {server}"]


def test_section_times_run_date_once_per_clock(tmp_path: Path) -> None:
    """b2c_epoch: date(1) once, then the uptime elapsed since (no process per section line);
    once b2c_set_clock has set the clock, date(1) once more."""
    sh = Shell(tmp_path)
    sh.stub("date", '[ -e "$B2C_ROOT/clock-set" ] && echo 1800000000 || echo 1700000000')
    sh.stub("rdate", ': >"$B2C_ROOT/clock-set"')
    result = sh.run(
        "b2c_parse_cmdline b2c.ntp_peer=10.42.0.1 cmdline || exit 99\n"
        'b2c_epoch; echo "epoch=$B2C_EPOCH"\n'
        "sleep 2.5\n"  # the fake uptime advances by 2.5 s
        'b2c_epoch; echo "epoch=$B2C_EPOCH"\n'
        'b2c_section one "One"; b2c_section_end\n'
        'b2c_set_clock; b2c_epoch; echo "epoch=$B2C_EPOCH"'
    )
    epochs = [line for line in result.lines if line.startswith("epoch=")]
    assert epochs == ["epoch=1700000000", "epoch=1700000002", "epoch=1800000000"]
    assert "section_start:1700000002:one" in result.out
    assert len(result.called("date")) == 2


@pytest.mark.parametrize(("hctosys", "dates"), [("1", 1), ("0", 2)])
def test_section_times_start_from_the_rtc_that_set_the_clock(
    tmp_path: Path, hctosys: str, dates: int
) -> None:
    """When the kernel set the clock from rtc0 (hctosys 1), its since_epoch is the first base,
    with no date(1) process; after b2c_set_clock, date(1) as before."""
    sh = Shell(tmp_path)
    sh.write("sys/class/rtc/rtc0/hctosys", f"{hctosys}\n")
    sh.write("sys/class/rtc/rtc0/since_epoch", "1600000000\n")
    sh.stub("date", '[ -e "$B2C_ROOT/clock-set" ] && echo 1800000000 || echo 1700000000')
    sh.stub("rdate", ': >"$B2C_ROOT/clock-set"')
    result = sh.run(
        "b2c_parse_cmdline b2c.ntp_peer=10.42.0.1 cmdline || exit 99\n"
        'b2c_epoch; echo "epoch=$B2C_EPOCH"\n'
        'b2c_set_clock; b2c_epoch; echo "epoch=$B2C_EPOCH"'
    )
    epochs = [line for line in result.lines if line.startswith("epoch=")]
    first = "1600000000" if hctosys == "1" else "1700000000"
    assert epochs == [f"epoch={first}", "epoch=1800000000"]
    assert len(result.called("date")) == dates


def test_ntp_from_kernel_ip(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write("proc/net/ipconfig/ntp_servers", "10.0.2.9\n")
    result = set_clock(sh, "b2c.ntp_peer=auto")
    assert result.called("rdate") == [["-n", "10.0.2.9"]]


def test_ntp_failure_is_bounded_and_not_fatal(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("rdate", "return 1")
    result = set_clock(sh, "b2c.ntp_peer=10.42.0.1")
    assert len(result.called("rdate")) == 3
    assert result.warnings() == [
        "b2c: warning: could not set the clock from the NTP server 10.42.0.1"
    ]
    assert result.status == 0


# --- proxy and modules --------------------------------------------------------------------


def test_proxy_is_exported(tmp_path: Path) -> None:
    result = Shell(tmp_path).run(
        "b2c_parse_cmdline b2c.proxy=http://10.0.0.1:3128 cmdline; b2c_apply_proxy >/dev/null\n"
        "env | grep -i _proxy= | sort"
    )
    assert result.lines == [
        "HTTPS_PROXY=http://10.0.0.1:3128",
        "HTTP_PROXY=http://10.0.0.1:3128",
        "NO_PROXY=localhost,127.0.0.1,::1",
        "http_proxy=http://10.0.0.1:3128",
        "https_proxy=http://10.0.0.1:3128",
        "no_proxy=localhost,127.0.0.1,::1",
    ]


def with_module_list(tmp_path: Path, listing: str) -> Shell:
    """A scratch root whose modules archive (kernel 6.1.0-test) has no modules.dep entries
    and the b2c.modules ``listing`` ("NAME WHEN" lines, kmod.LoadWhen)."""
    sh = Shell(tmp_path)
    sh.write("lib/modules/6.1.0-test/modules.dep", "")
    sh.write("lib/modules/6.1.0-test/b2c.modules", listing)
    return sh


def test_modules_from_the_archive_list_and_the_command_line(tmp_path: Path) -> None:
    sh = with_module_list(tmp_path, "virtio_net\n# comment\n\nmissing_mod\next4\n")
    sh.stub("modprobe", '[ "$1" != missing_mod ]')
    result = sh.run(
        "b2c_parse_cmdline 'b2c.insmods=e1000e,igb b2c.modules=r8169' cmdline || exit 99\n"
        "b2c_load_modules"
    )
    assert result.called("modprobe") == [
        ["virtio_net"],
        ["missing_mod"],
        ["ext4"],
        ["e1000e"],
        ["igb"],
        ["r8169"],
    ]
    assert result.warnings() == ["b2c: warning: could not load the kernel module missing_mod"]


@pytest.mark.parametrize("network", ["auto", "none"])
def test_modules_are_loaded_when_the_list_says(tmp_path: Path, network: str) -> None:
    """boot: now; network: now, only for a boot with a network; device: in the background,
    done once b2c_modules_settle returns; demand: never by /init (the kernel asks for it)."""
    sh = with_module_list(
        tmp_path, "virtio_pci boot\nvirtio_net network\nahci device\nnvme device\next4 demand\n"
    )
    # A slow device driver: settle must wait for it.
    sh.stub("modprobe", '[ "$1" != nvme ] || { sleep 0.5; : >"$B2C_ROOT/nvme-probed"; }')
    result = sh.run(
        f"b2c_parse_cmdline 'b2c.network={network}' cmdline || exit 99\n"
        "b2c_load_modules\n"
        'b2c_modules_settle\n[ -e "$B2C_ROOT/nvme-probed" ] || exit 98'
    )
    assert result.status == 0, result.out
    now = [["virtio_pci"], *([["virtio_net"]] if network == "auto" else [])]
    assert result.called("modprobe") == [*now, ["ahci"], ["nvme"]]
    assert result.warnings() == []
    assert "Loading the device drivers ahci nvme in the background" in result.out


def test_modules_in_the_kernels_module_blacklist_are_not_tried(tmp_path: Path) -> None:
    """module_blacklist=: the kernel would refuse them, so /init neither tries nor warns, in
    any class; the name must match byte for byte, as the kernel's does. Asked for by
    b2c.insmods, the refusal is a warning."""
    sh = with_module_list(
        tmp_path, "virtio_pci boot\nvirtio_blk device\nahci device\nsd_mod device\nnvme device\n"
    )
    result = sh.run(
        "b2c_parse_cmdline 'module_blacklist=ahci,virtio_pci,sd-mod b2c.insmods=nvme,ahci' "
        "cmdline || exit 99\nb2c_load_modules\nb2c_modules_settle"
    )
    assert result.status == 0, result.out
    # b2c.insmods' nvme runs while the device drivers load in the background: any order.
    assert sorted(result.called("modprobe")) == [["nvme"], ["nvme"], ["sd_mod"], ["virtio_blk"]]
    assert "Not loading virtio_pci ahci: module_blacklist=ahci,virtio_pci,sd-mod" in result.out
    assert "Loading the device drivers virtio_blk sd_mod nvme in the background" in result.out
    assert result.warnings() == [
        "b2c: warning: b2c.insmods: the kernel refuses ahci "
        "(module_blacklist=ahci,virtio_pci,sd-mod)"
    ]


@pytest.mark.parametrize(
    ("value", "background"),
    [
        ("auto", ["ahci", "nvme"]),
        ("none", []),
        ("virtio_blk", ["virtio_blk"]),
        ("igb,nvme", ["igb", "nvme"]),  # a driver the device class lacks is loaded too
    ],
)
def test_device_drivers_replace_the_device_class(
    tmp_path: Path, value: str, background: list[str]
) -> None:
    """b2c.device_drivers (b2c-builder run names its QEMU devices' drivers): the other
    device drivers are never loaded, nor waited for; none loads none."""
    sh = with_module_list(tmp_path, "virtio_pci boot\nahci device\nnvme device\next4 demand\n")
    result = sh.run(
        f"b2c_parse_cmdline 'b2c.network=none b2c.device_drivers={value}' cmdline || exit 99\n"
        'b2c_load_modules\nb2c_modules_settle\n[ ! -e "$B2C_ROOT$B2C_STATE/devices_loading" ]'
    )
    assert result.status == 0, result.out
    assert result.called("modprobe") == [["virtio_pci"]] + [[m] for m in background]
    assert result.warnings() == []
    if background:
        assert f"Loading the device drivers {' '.join(background)} in the background" in result.out
    else:
        assert "background" not in result.out
    assert ("No device drivers to load (b2c.device_drivers=none)" in result.out) == (
        value == "none"
    )


def test_settle_returns_at_once_without_device_drivers(tmp_path: Path) -> None:
    sh = with_module_list(tmp_path, "overlay demand\n")
    result = sh.run("b2c_load_modules\nb2c_modules_settle")
    assert result.status == 0 and result.called("modprobe") == []
    assert "background" not in result.out


def test_a_device_driver_that_fails_is_a_warning(tmp_path: Path) -> None:
    sh = with_module_list(tmp_path, "ahci device\n")
    sh.stub("modprobe", "false")
    result = sh.run("b2c_load_modules\nb2c_modules_settle")
    assert result.status == 0
    assert result.warnings() == ["b2c: warning: could not load the kernel module ahci"]


def test_no_modules_directory_is_fine(tmp_path: Path) -> None:
    result = Shell(tmp_path).run("b2c_load_modules")
    assert result.called("modprobe") == [] and result.warnings() == [] and result.status == 0
