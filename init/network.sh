# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# network.sh: b2c.iface, else the kernel's ip=, else DHCP on every eth*/en* interface.

b2c_resolv_conf() {
    printf '%s' "$B2C_ROOT/etc/resolv.conf"
}

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
            b2c_log "Network configured by the kernel (ip=$B2C_KERNEL_IP): DHCP skipped"
            b2c_pnp_dns
            return 0
            ;;
    esac

    b2c_dhcp "" || {
        b2c_error "could not get an address by DHCP on any eth*/en* interface within ${B2C_WAIT_SECS}s"
        return 1
    }
}

# DNS servers (and domain) the kernel's ip= autoconfiguration got: /proc/net/pnp.
b2c_pnp_dns() {
    local key value _rest conf
    conf=$(b2c_resolv_conf)
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
        conf=$(b2c_resolv_conf)
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

# b2c_apply_proxy: b2c.proxy for podman pulls and wget.
b2c_apply_proxy() {
    [ -n "$B2C_PROXY" ] || return 0
    export http_proxy="$B2C_PROXY" https_proxy="$B2C_PROXY"
    export HTTP_PROXY="$B2C_PROXY" HTTPS_PROXY="$B2C_PROXY"
    export no_proxy="${no_proxy:-localhost,127.0.0.1,::1}"
    export NO_PROXY="$no_proxy"
    b2c_mask_urls "$B2C_PROXY"
    b2c_log "Using the HTTP(S) proxy $B2C_MASKED"
}
