# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# network.sh: b2c.iface, else the kernel's ip=, else DHCP on every eth*/en* interface.

# b2c_connect: bring the network up; returns 1 (after an error line) if it could not.
b2c_connect() {
    local spec old_ifs=$IFS
    ip link set lo up || b2c_warn "could not bring the loopback interface up"
    [ -e "$B2C_ROOT/etc/resolv.conf" ] || : >"$B2C_ROOT/etc/resolv.conf"

    if [ "$B2C_NETWORK" = none ]; then
        b2c_log "No network (b2c.network=none): only the loopback interface is up"
        return 0
    fi
    if [ -n "$B2C_IFACE" ]; then
        IFS=$B2C_NL
        for spec in $B2C_IFACE; do
            IFS=$old_ifs
            b2c_iface_setup "$spec" || return 1
        done
        IFS=$old_ifs
        return 0
    fi

    case $B2C_KERNEL_IP in
        '' | off | none) ;;
        *)
            if b2c_kernel_configured; then
                b2c_log "Network configured by the kernel (ip=$B2C_KERNEL_IP): DHCP skipped"
                b2c_pnp_dns
                return 0
            fi
            # Debian's kernels have no IP autoconfiguration (CONFIG_IP_PNP): they hand ip=
            # to /init, which applies it as the kernel would have.
            b2c_log "The kernel did not configure the network: applying ip=$B2C_KERNEL_IP"
            b2c_ip_apply "$B2C_KERNEL_IP"
            return
            ;;
    esac

    b2c_dhcp "" || {
        b2c_error "could not get an address by DHCP on any eth*/en* interface within ${B2C_WAIT_SECS}s"
        return 1
    }
}

# b2c_kernel_configured: the kernel's IP autoconfiguration really configured an interface:
# it has /proc/net/pnp (CONFIG_IP_PNP) and an interface other than lo has an IPv4 address
# (/init has configured none yet). /proc/net/pnp alone says "#MANUAL" even when nothing was.
b2c_kernel_configured() {
    local _n name family _rest
    [ -r "$B2C_ROOT/proc/net/pnp" ] || return 1
    while read -r _n name family _rest; do
        [ "$family" = inet ] && [ "$name" != lo ] && return 0
    done <<EOF
$(ip -4 -o address show 2>/dev/null)
EOF
    return 1
}

# b2c_prefix DOTTED_MASK: B2C_PREFIX = its length (255.255.255.0 -> 24); 1 if not a mask.
b2c_prefix() {
    local rest=$1. octet bits=0 zero=0
    b2c_is_ipv4 "$1" || return 1
    while [ -n "$rest" ]; do
        octet=${rest%%.*}
        rest=${rest#*.}
        case $zero:$octet in
            0:255) bits=$((bits + 8)) ;;
            0:254) bits=$((bits + 7)) zero=1 ;;
            0:252) bits=$((bits + 6)) zero=1 ;;
            0:248) bits=$((bits + 5)) zero=1 ;;
            0:240) bits=$((bits + 4)) zero=1 ;;
            0:224) bits=$((bits + 3)) zero=1 ;;
            0:192) bits=$((bits + 2)) zero=1 ;;
            0:128) bits=$((bits + 1)) zero=1 ;;
            *:0) zero=1 ;;
            *) return 1 ;;
        esac
    done
    B2C_PREFIX=$bits
}

# b2c_ip_apply VALUE: the kernel's ip= (Documentation/admin-guide/nfs/nfsroot.rst), in user
# space: "dhcp" (or on, any, bootp, rarp, both), or
# CLIENT:SERVER:GATEWAY:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1:NTP0 where an empty CLIENT
# (or AUTOCONF dhcp...) means DHCP, else a static address. SERVER is the boot server (unused).
# Returns 1 after an error line.
b2c_ip_apply() {
    local rest=$1: client server gateway netmask host device autoconf dns0 dns1 ntp0 conf bad=''
    case $1 in
        dhcp | on | any | bootp | rarp | both) rest=:::::: autoconf=dhcp ;;
    esac
    client=${rest%%:*} rest=${rest#*:}
    server=${rest%%:*} rest=${rest#*:}
    gateway=${rest%%:*} rest=${rest#*:}
    netmask=${rest%%:*} rest=${rest#*:}
    host=${rest%%:*} rest=${rest#*:}
    device=${rest%%:*} rest=${rest#*:}
    autoconf=${autoconf:-${rest%%:*}} rest=${rest#*:}
    dns0=${rest%%:*} rest=${rest#*:}
    dns1=${rest%%:*} rest=${rest#*:}
    ntp0=${rest%%:*}
    for rest in "$client" "$server" "$gateway" "$dns0" "$dns1" "$ntp0"; do
        [ -z "$rest" ] || b2c_is_ipv4 "$rest" || {
            b2c_error "ip=$1: '$rest' is not an IPv4 address"
            return 1
        }
    done
    # Linux's dev_valid_name(): at most 15 bytes (IFNAMSIZ - 1), neither . nor ..
    case $device in
        *[!A-Za-z0-9_.-]* | . | ..) bad=1 ;;
        *) [ "${#device}" -le 15 ] || bad=1 ;;
    esac
    [ -z "$bad" ] || {
        b2c_error "ip=$1: '$device' is not a network interface name (at most 15 letters, digits, '_', '.' or '-')"
        return 1
    }
    [ -z "$host" ] || b2c_is_hostname "$host" || {
        b2c_error "ip=$1: '$host' is not a host name ($B2C_HOSTNAME_RULE)"
        return 1
    }
    [ -z "$host" ] || B2C_IP_HOSTNAME=$host
    if [ -n "$ntp0" ]; then
        mkdir -p "$B2C_ROOT$B2C_STATE" && echo "$ntp0" >"$B2C_ROOT$B2C_STATE/ntpsrv"
    fi
    case $autoconf in
        '' | off | none | static) [ -n "$client" ] || autoconf=dhcp ;;
        on | any | dhcp | bootp | rarp | both) autoconf=dhcp ;;
        *)
            b2c_error "ip=$1: unknown autoconfiguration '$autoconf' (off, none, dhcp, bootp, rarp, both, on, any)"
            return 1
            ;;
    esac
    if [ "$autoconf" = dhcp ]; then
        b2c_dhcp "$device" || {
            b2c_error "ip=$1: no DHCP lease on ${device:-any eth*/en* interface} within ${B2C_WAIT_SECS}s"
            return 1
        }
    else
        b2c_ip_static "$1" "$client" "$gateway" "$netmask" "$device" || return 1
    fi
    if [ -n "$dns0$dns1" ]; then
        conf=$B2C_ROOT/etc/resolv.conf
        if [ "$autoconf" = dhcp ]; then
            # Before the servers udhcpc wrote: the new file is written aside, then moved.
            {
                for rest in $dns0 $dns1; do
                    printf 'nameserver %s\n' "$rest"
                done
                cat "$conf" 2>/dev/null
            } >"$conf.new"
            mv "$conf.new" "$conf"
        else
            for rest in $dns0 $dns1; do
                printf 'nameserver %s\n' "$rest"
            done >"$conf"
        fi
    fi
    b2c_log "Applied ip=$1"
    return 0
}

# b2c_ip_static VALUE CLIENT GATEWAY NETMASK DEVICE: ip='s static address on DEVICE (else the
# first eth*/en* interface to appear). Without NETMASK, the address class's, as the kernel.
b2c_ip_static() {
    local client=$2 gateway=$3 device=$5 first
    if [ -n "$4" ]; then
        b2c_prefix "$4" || {
            b2c_error "ip=$1: '$4' is not a netmask"
            return 1
        }
    else
        first=${client%%.*}
        if [ "$first" -lt 128 ]; then
            B2C_PREFIX=8
        elif [ "$first" -lt 192 ]; then
            B2C_PREFIX=16
        else
            B2C_PREFIX=24
        fi
    fi
    if [ -z "$device" ]; then
        b2c_first_iface || {
            b2c_error "ip=$1: no eth*/en* interface appeared within ${B2C_WAIT_SECS}s"
            return 1
        }
        device=$B2C_IFACE_FOUND
    elif ! b2c_wait_for "$B2C_ROOT/sys/class/net/$device"; then
        b2c_error "ip=$1: the network interface $device did not appear within ${B2C_WAIT_SECS}s"
        return 1
    fi
    if ! { ip link set "$device" up && ip address add "$client/$B2C_PREFIX" dev "$device"; }; then
        b2c_error "ip=$1: could not give $device the address $client/$B2C_PREFIX"
        return 1
    fi
    if [ -n "$gateway" ]; then
        ip route replace default via "$gateway" dev "$device" || {
            b2c_error "ip=$1: could not route through the gateway $gateway on $device"
            return 1
        }
    fi
    b2c_log "Gave $device the address $client/$B2C_PREFIX${gateway:+, gateway $gateway}"
}

# b2c_first_iface: B2C_IFACE_FOUND = the first eth*/en* interface, waiting up to
# B2C_WAIT_SECS for one to appear.
b2c_first_iface() {
    local deadline
    b2c_uptime_cs
    deadline=$((B2C_UPTIME_CS + B2C_WAIT_SECS * 100))
    while :; do
        b2c_candidate_ifaces
        B2C_IFACE_FOUND=${B2C_IFACES%% *}
        [ -z "$B2C_IFACE_FOUND" ] || return 0
        b2c_uptime_cs
        [ "$B2C_UPTIME_CS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

# DNS servers (and domain) the kernel's ip= autoconfiguration got: /proc/net/pnp.
b2c_pnp_dns() {
    local key value _rest conf
    conf=$B2C_ROOT/etc/resolv.conf
    [ -r "$B2C_ROOT/proc/net/pnp" ] || return 0
    : >"$conf.new"
    while read -r key value _rest; do
        case $key in
            nameserver | domain | search) printf '%s %s\n' "$key" "$value" >>"$conf.new" ;;
        esac
    done <"$B2C_ROOT/proc/net/pnp"
    mv "$conf.new" "$conf"
}

# Network interfaces that DHCP is tried on: eth* and en*, sorted.
b2c_candidate_ifaces() {
    local name
    B2C_IFACES=
    b2c_list_dir "$B2C_ROOT/sys/class/net"
    for name in $B2C_LIST; do
        case $name in eth* | en*) B2C_IFACES="$B2C_IFACES $name" ;; esac
    done
    B2C_IFACES=${B2C_IFACES# }
}

# b2c_dhcp [IFACE]: DHCP on IFACE (default: every candidate) for up to B2C_WAIT_SECS.
b2c_dhcp() {
    local deadline iface
    b2c_uptime_cs
    deadline=$((B2C_UPTIME_CS + B2C_WAIT_SECS * 100))
    while :; do
        if [ -n "$1" ]; then
            B2C_IFACES=$1
        else
            b2c_candidate_ifaces
        fi
        for iface in $B2C_IFACES; do
            ip link set "$iface" up 2>/dev/null || continue
            if udhcpc -i "$iface" -s "$B2C_UDHCPC_SCRIPT" -O ntpsrv -t 2 -T 1 -n </dev/null; then
                b2c_log "Got an address by DHCP on $iface"
                return 0
            fi
        done
        b2c_uptime_cs
        [ "$B2C_UPTIME_CS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

# b2c_iface_setup SPEC: NAME[,auto|dhcp][,address=CIDR][,gateway=IP][,nameserver=IP]...
# [,route=NET:GW]...[,forward] (validated when the command line was parsed).
b2c_iface_setup() {
    local rest=$1, name param dhcp=0 address='' gateway='' forward=0 routes='' servers='' conf
    name=${rest%%,*}
    rest=${rest#*,}
    while [ -n "$rest" ]; do
        param=${rest%%,*}
        rest=${rest#*,}
        case $param in
            auto | dhcp) dhcp=1 ;;
            forward) forward=1 ;;
            address=*) address=${param#*=} ;;
            gateway=*) gateway=${param#*=} ;;
            nameserver=*) servers="$servers ${param#*=}" ;;
            route=*) routes="$routes ${param#*=}" ;;
        esac
    done
    b2c_log "Set up the network interface $name"
    b2c_wait_for "$B2C_ROOT/sys/class/net/$name" || {
        b2c_error "b2c.iface: the network interface $name did not appear within ${B2C_WAIT_SECS}s"
        return 1
    }
    ip link set "$name" up || {
        b2c_error "b2c.iface: could not bring $name up"
        return 1
    }
    if [ "$dhcp" = 1 ]; then
        b2c_dhcp "$name" || {
            b2c_error "b2c.iface: no DHCP lease on $name within ${B2C_WAIT_SECS}s"
            return 1
        }
    fi
    if [ -n "$address" ]; then
        ip address add "$address" dev "$name" || {
            b2c_error "b2c.iface: could not give $name the address $address"
            return 1
        }
    fi
    if [ "$forward" = 1 ]; then
        echo 1 >"$B2C_ROOT/proc/sys/net/ipv4/ip_forward" || b2c_warn "could not enable IP forwarding"
    fi
    if [ -n "$gateway" ]; then
        ip route replace default via "$gateway" dev "$name" || {
            b2c_error "b2c.iface: could not route through the gateway $gateway on $name"
            return 1
        }
    fi
    for param in $routes; do
        ip route replace "${param%%:*}" via "${param#*:}" dev "$name" || {
            b2c_error "b2c.iface: could not add the route $param on $name"
            return 1
        }
    done
    if [ -n "$servers" ]; then
        conf=$B2C_ROOT/etc/resolv.conf
        {
            for param in $servers; do
                printf 'nameserver %s\n' "$param"
            done
            cat "$conf" 2>/dev/null
        } >"$conf.new"
        mv "$conf.new" "$conf"
    fi
    return 0
}

# b2c_apply_proxy: b2c.proxy for podman pulls and wget: URL (both schemes), or
# [http=URL,]https=URL (each scheme its own; one not named goes direct).
b2c_apply_proxy() {
    local rest param http='' https=''
    [ -n "$B2C_PROXY" ] || return 0
    case ${B2C_PROXY%%://*} in
        *=*)
            rest=$B2C_PROXY,
            while [ -n "$rest" ]; do
                param=${rest%%,*}
                rest=${rest#*,}
                case $param in
                    http=*) http=${param#http=} ;;
                    https=*) https=${param#https=} ;;
                esac
            done
            ;;
        *) http=$B2C_PROXY https=$B2C_PROXY ;;
    esac
    unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY
    [ -z "$http" ] || export http_proxy="$http" HTTP_PROXY="$http"
    [ -z "$https" ] || export https_proxy="$https" HTTPS_PROXY="$https"
    export no_proxy="${no_proxy:-localhost,127.0.0.1,::1}"
    export NO_PROXY="$no_proxy"
    if [ "$http" = "$https" ]; then
        b2c_mask_urls "$http"
        b2c_log "Using the HTTP(S) proxy $B2C_MASKED"
        return 0
    fi
    b2c_mask_urls "http: ${http:-none}, https: ${https:-none}"
    b2c_log "Using the proxies $B2C_MASKED"
}
