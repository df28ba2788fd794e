# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# kernel.sh: once the modules are loaded, check that the kernel has what this boot needs,
# and name the missing kernel option in one error line instead of letting podman or mount
# fail obscurely. The list of checks, b2c_kernel_checks, is generated into /init from
# b2c_builder/kconfig.py (templates/init.sh.j2); it calls b2c_kernel_probe for each.

# b2c_kernel_check: 0 when the kernel has everything this boot needs (warnings allowed);
# else one error line naming the kernel option, and 1.
b2c_kernel_check() {
    b2c_kernel_fs_types
    b2c_kernel_filesystems
    b2c_kernel_checks || return 1
    if [ ! -e "$B2C_ROOT/sys/fs/cgroup/cgroup.controllers" ]; then
        b2c_error "cgroup2 is not mounted on /sys/fs/cgroup: podman cannot create containers"
        return 1
    fi
    return 0
}

# b2c_kernel_fs_types: B2C_FS_TYPES = " TYPE TYPE ... " of the b2c.filesystem options (and
# 9p when the job shares folders).
b2c_kernel_fs_types() {
    local spec param old_ifs=$IFS
    B2C_FS_TYPES=' '
    [ ! -d "$B2C_ROOT$B2C_JOB/share/1" ] || B2C_FS_TYPES=' 9p '
    IFS=$B2C_NL
    for spec in $B2C_FILESYSTEM; do
        IFS=,
        for param in $spec; do
            case $param in type=?*) B2C_FS_TYPES="$B2C_FS_TYPES${param#type=} " ;; esac
        done
        IFS=$B2C_NL
    done
    IFS=$old_ifs
}

# b2c_kernel_network_needed: this boot brings the network up (not with b2c.network=none).
b2c_kernel_network_needed() {
    [ "$B2C_NETWORK" != none ]
}

# b2c_kernel_probe SEVERITY WHEN KIND NAME MODULE MESSAGE: if this boot needs it (WHEN:
# always, network, or a b2c.filesystem type) and the kernel lacks it even once its MODULE (if
# any) is loaded, print "the kernel lacks MESSAGE" as SEVERITY (error or warning). Returns 1
# only for a missing error-level one.
b2c_kernel_probe() {
    case $2 in
        always) ;;
        network) b2c_kernel_network_needed || return 0 ;;
        *) case $B2C_FS_TYPES in *" $2 "*) ;; *) return 0 ;; esac ;;
    esac
    b2c_kernel_has "$3" "$4" && return 0
    # Loaded on demand (init/modules.sh): load it now, then look again.
    [ -z "$5" ] || ! modprobe -q "$5" </dev/null 2>/dev/null || ! b2c_kernel_filesystems ||
        ! b2c_kernel_has "$3" "$4" || return 0
    if [ "$1" = error ]; then
        b2c_error "the kernel lacks $6"
        return 1
    fi
    b2c_warn "the kernel lacks $6"
    return 0
}

# b2c_kernel_filesystems: B2C_FILESYSTEMS = " NAME NAME ... " of /proc/filesystems, read once
# for all the probes (again after a modprobe): read(1) reads a byte a system call, and each
# probe used to read the file up to its name.
b2c_kernel_filesystems() {
    local first second
    B2C_FILESYSTEMS=' '
    # Lines are "nodev<TAB>NAME" or "<TAB>NAME".
    while read -r first second; do
        B2C_FILESYSTEMS="$B2C_FILESYSTEMS${second:-$first} "
    done <"$B2C_ROOT/proc/filesystems" 2>/dev/null
    return 0
}

# b2c_kernel_has KIND NAME: what a kernel option provides is there (see kconfig.ProbeKind).
b2c_kernel_has() {
    local words
    case $1 in
        filesystem)
            [ -n "${B2C_FILESYSTEMS:-}" ] || b2c_kernel_filesystems
            case $B2C_FILESYSTEMS in *" $2 "*) return 0 ;; esac
            return 1
            ;;
        controller)
            # Unmounted cgroup2: b2c_kernel_check says so once, after the probes.
            { read -r words <"$B2C_ROOT/sys/fs/cgroup/cgroup.controllers"; } 2>/dev/null || return 0
            case " $words " in *" $2 "*) return 0 ;; esac
            return 1
            ;;
        path)
            [ -e "$B2C_ROOT/$2" ]
            ;;
        netdev)
            b2c_kernel_has_netdev
            ;;
        *)
            return 0
            ;;
    esac
}

# b2c_kernel_has_netdev: an eth*/en* interface for DHCP appears within B2C_WAIT_SECS. With
# b2c.iface or the kernel's ip=, the interface setup reports a missing interface by name.
b2c_kernel_has_netdev() {
    local deadline
    [ -z "$B2C_IFACE" ] || return 0
    case $B2C_KERNEL_IP in '' | off | none) ;; *) return 0 ;; esac
    b2c_uptime_cs
    deadline=$((B2C_UPTIME_CS + B2C_WAIT_SECS * 100))
    while :; do
        b2c_candidate_ifaces
        [ -z "$B2C_IFACES" ] || return 0
        b2c_uptime_cs
        [ "$B2C_UPTIME_CS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}
