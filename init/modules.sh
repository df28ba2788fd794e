# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# modules.sh: load the kernel modules of the modules archive, then b2c.insmods.

# b2c_load_modules: the modules listed in /lib/modules/<kver>/b2c.modules ("NAME WHEN" lines,
# from the modules archive; b2c_builder/build/kmod.py LoadWhen), then b2c.insmods. WHEN says
# when a boot pays for it: boot (or none): now; network: now, if this boot brings the network
# up; device: in the background, waited for by b2c_modules_settle before anything uses a
# device; demand: never here, the kernel asks modprobe for it through modules.alias when
# something uses it (fs-ext4 on mount, crypto-crc32c, 9p-virtio), and b2c_kernel_probe loads
# what it checks.
# b2c.device_drivers other than auto replaces the device class: none, or the modules it names
# (b2c-builder run names those of its QEMU devices).
# Modules named in the kernel's module_blacklist= are not tried: the kernel would refuse them.
# No modules directory is fine: everything is built into the kernel.
b2c_load_modules() {
    local kver='' dir module when devices='' skipped='' failed=0 loaded=0 old_ifs=$IFS
    B2C_MODULES_PID=''
    { read -r kver <"$B2C_ROOT/proc/sys/kernel/osrelease"; } 2>/dev/null
    dir=$B2C_ROOT/lib/modules/$kver
    if [ -n "$kver" ] && [ -f "$dir/b2c.modules" ]; then
        while read -r module when _; do
            case $module in '' | \#*) continue ;; esac
            if [ "$when" != demand ] && b2c_module_blacklisted "$module"; then
                skipped="$skipped $module"
                continue
            fi
            case $when in
                demand) continue ;;
                network) b2c_kernel_network_needed || continue ;;
                device)
                    [ "$B2C_DEVICE_DRIVERS" != auto ] || devices="$devices $module"
                    continue
                    ;;
            esac
            if modprobe "$module" </dev/null; then
                loaded=$((loaded + 1))
            else
                b2c_warn "could not load the kernel module $module"
                failed=$((failed + 1))
            fi
        done <"$dir/b2c.modules"
        b2c_log "Loaded $loaded kernel modules listed in $dir/b2c.modules ($failed failed)"
    elif [ ! -d "$dir" ]; then
        b2c_log "No modules for kernel $kver: everything needed is built in"
    fi
    case $B2C_DEVICE_DRIVERS in
        auto) ;;
        none) b2c_log "No device drivers to load (b2c.device_drivers=none)" ;;
        *)
            IFS=,
            for module in $B2C_DEVICE_DRIVERS; do
                IFS=$old_ifs
                if b2c_module_blacklisted "$module"; then
                    skipped="$skipped $module"
                else
                    devices="$devices $module"
                fi
            done
            IFS=$old_ifs
            ;;
    esac
    [ -z "$skipped" ] || b2c_log "Not loading$skipped: module_blacklist=$B2C_KERNEL_MODULE_BLACKLIST"
    if [ -n "$devices" ]; then
        b2c_log "Loading the device drivers$devices in the background"
        b2c_state_set devices_loading 1
        # shellcheck disable=SC2086 # one word a module
        b2c_load_devices $devices &
        B2C_MODULES_PID=$!
    fi
    # b2c.insmods is repeatable: one comma-separated list a line.
    IFS=",$B2C_NL"
    for module in $B2C_INSMODS; do
        IFS=$old_ifs
        if b2c_module_blacklisted "$module"; then
            b2c_warn "b2c.insmods: the kernel refuses $module (module_blacklist=$B2C_KERNEL_MODULE_BLACKLIST)"
        elif modprobe "$module" </dev/null; then
            b2c_log "Loaded the kernel module $module"
        else
            b2c_warn "could not load the kernel module $module"
        fi
    done
    IFS=$old_ifs
    return 0
}

# b2c_module_blacklisted NAME: true if the kernel's module_blacklist= names NAME. The kernel
# compares names byte for byte (kernel/module/main.c, blacklisted()), and so does this.
b2c_module_blacklisted() {
    case ,$B2C_KERNEL_MODULE_BLACKLIST, in
        *,"$1",*) return 0 ;;
    esac
    return 1
}

# b2c_load_devices MODULE...: load the device drivers, then remove $B2C_STATE/devices_loading.
# Runs in the background (b2c_load_modules).
b2c_load_devices() {
    local module
    for module; do
        modprobe "$module" </dev/null || b2c_warn "could not load the kernel module $module"
    done
    rm -f "$B2C_ROOT$B2C_STATE/devices_loading"
}

# b2c_modules_settle: the device drivers that b2c_load_modules loads in the background are
# loaded (their devices probed): called before the cache device, a swap device, volumes and
# each container or service start. Waits at most B2C_WAIT_SECS * 6 seconds.
b2c_modules_settle() {
    local deadline
    [ -e "$B2C_ROOT$B2C_STATE/devices_loading" ] || return 0
    # Our child when called from b2c_main's shell; otherwise wait returns at once.
    [ -z "${B2C_MODULES_PID:-}" ] || wait "$B2C_MODULES_PID" 2>/dev/null || :
    b2c_uptime_cs
    deadline=$((B2C_UPTIME_CS + B2C_WAIT_SECS * 600))
    while [ -e "$B2C_ROOT$B2C_STATE/devices_loading" ]; do
        b2c_uptime_cs
        if [ "$B2C_UPTIME_CS" -ge "$deadline" ]; then
            b2c_warn "the device drivers are still loading: going on without them"
            return 0
        fi
        sleep 0.1
    done
    return 0
}
