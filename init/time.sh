# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# time.sh: b2c.ntp_peer, set the clock by SNTP before pulling (TLS needs a sane clock).

# b2c_ntp_server: B2C_NTP_SERVER = the peer to ask, for b2c.ntp_peer=auto: the server
# offered by DHCP (recorded by the udhcpc script) or by the kernel's ip=, else a pool.
b2c_ntp_server() {
    local servers=''
    B2C_NTP_SERVER=$B2C_NTP_PEER
    [ "$B2C_NTP_PEER" = auto ] || return 0
    { read -r servers <"$B2C_ROOT$B2C_STATE/ntpsrv"; } 2>/dev/null ||
        { read -r servers <"$B2C_ROOT/proc/net/ipconfig/ntp_servers"; } 2>/dev/null
    B2C_NTP_SERVER=${servers%% *}
    case $B2C_NTP_SERVER in
        '' | 0.0.0.0) B2C_NTP_SERVER=$B2C_NTP_POOL ;;
    esac
}

# b2c_set_clock: a few bounded SNTP attempts; a failure is a warning, not fatal.
b2c_set_clock() {
    local attempt
    if [ "$B2C_NTP_PEER" = none ]; then
        b2c_log "The clock was not set (use b2c.ntp_peer=auto to set it at boot)"
        return 0
    fi
    b2c_ntp_server
    for attempt in 1 2 3; do
        if timeout 10 "$B2C_RDATE" -n "$B2C_NTP_SERVER" </dev/null; then
            b2c_state_set epoch_base '' # b2c_epoch: date(1) again
            b2c_log "Set the clock from the NTP server $B2C_NTP_SERVER"
            return 0
        fi
        [ "$attempt" = 3 ] || sleep 1
    done
    b2c_warn "could not set the clock from the NTP server $B2C_NTP_SERVER"
    return 0
}
