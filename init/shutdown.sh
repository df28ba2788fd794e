# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# shutdown.sh: the end of every boot, whatever happened before: storage released, the
# console contract's last lines, then poweroff or reboot. Never returns in the image.

# b2c_final_action MODE: MODE is reboot, poweroff or default (= poweroff).
b2c_final_action() {
    local sysrq=o
    if [ "$1" = reboot ]; then
        sysrq=b
        b2c_log "Rebooting the computer"
        b2c_log "It's now safe to turn off your computer"
        b2c_with_words "$B2C_REBOOT_CMD"
        b2c_error "b2c.reboot_cmd ($B2C_REBOOT_CMD) returned: forcing a reboot"
        reboot -f
    else
        if [ "$B2C_POWEROFF_DELAY" != 0 ]; then
            b2c_log "Waiting ${B2C_POWEROFF_DELAY}s before powering off (b2c.poweroff_delay)"
            sleep "$B2C_POWEROFF_DELAY"
        fi
        b2c_log "It's now safe to turn off your computer"
        b2c_with_words "$B2C_SHUTDOWN_CMD"
        b2c_error "b2c.shutdown_cmd ($B2C_SHUTDOWN_CMD) returned: forcing a power off"
        poweroff -f
    fi
    sleep 1
    echo "$sysrq" >"$B2C_ROOT/proc/sysrq-trigger"
    # PID 1 must never exit (the kernel would panic): keep asking.
    while [ "$B2C_HALT_LOOP" = 1 ]; do
        sleep 10
        echo "$sysrq" >"$B2C_ROOT/proc/sysrq-trigger"
    done
}

# b2c_shutdown STATUS MODE: print the status line, release storage, final action.
b2c_shutdown() {
    b2c_section_end
    b2c_log "Execution is over, pipeline status: $1"
    b2c_section shutdown "Release the storage and shut down"
    b2c_release_storage
    b2c_section_end
    b2c_final_action "$2"
}
