# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# modules.sh: load the kernel modules of the modules archive, then b2c.insmods.

# b2c_load_modules: modules listed in /lib/modules/<kver>/b2c.modules (one a line, from the
# modules archive riding beside the image: the build's default set and its --module), then
# b2c.insmods.
# No modules directory is fine: everything is built into the kernel.
b2c_load_modules() {
    local kver='' dir module failed=0 loaded=0 old_ifs=$IFS
    { read -r kver <"$B2C_ROOT/proc/sys/kernel/osrelease"; } 2>/dev/null
    dir=$B2C_ROOT/lib/modules/$kver
    if [ -n "$kver" ] && [ -f "$dir/b2c.modules" ]; then
        while read -r module _; do
            case $module in '' | \#*) continue ;; esac
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
    # b2c.insmods is repeatable: one comma-separated list a line.
    IFS=",$B2C_NL"
    for module in $B2C_INSMODS; do
        IFS=$old_ifs
        if modprobe "$module" </dev/null; then
            b2c_log "Loaded the kernel module $module"
        else
            b2c_warn "could not load the kernel module $module"
        fi
    done
    IFS=$old_ifs
    return 0
}
