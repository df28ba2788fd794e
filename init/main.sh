# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# main.sh: the boot sequence. b2c_init runs as PID 1: it mounts the API filesystems,
# parses the command line, runs b2c_main in a subshell (whatever goes wrong in there,
# PID 1 goes on), then prints the pipeline status and shuts down.

# b2c_mount_early: the API filesystems, written to /etc/fstab and mounted by two mount -a
# processes, where a mount apiece forked eight (3-4 ms each under TCG). The first pass mounts
# those whose folders the image has; the second, once devtmpfs is there to make /dev's in,
# the rest (mount -a leaves what is mounted alone, devtmpfs too if the kernel mounted it).
# B2C_ROOT, a test's scratch root, must hold no white space: fstab separates fields with it.
b2c_mount_early() {
    local r=$B2C_ROOT status=0
    # The image has these folders; b2c_mkdirs forks a mkdir only for those it lacks.
    b2c_mkdirs "$r/proc" "$r/sys" "$r/dev" "$r/run" "$r/tmp"
    b2c_fstab_early first >"$r/etc/fstab" && mount -a -T "$r/etc/fstab" || status=1
    b2c_kernel_modprobe
    b2c_mkdirs "$r/dev/pts" "$r/dev/shm" "$r/sys/fs/cgroup"
    b2c_fstab_early >"$r/etc/fstab" && mount -a -T "$r/etc/fstab" || status=1
    [ "$status" = 0 ] ||
        echo "b2c: error: could not mount every file system of /etc/fstab (see mount's messages above)"
    b2c_cgroup_controllers
    # The state folder is on /run's tmpfs: this mkdir forks; crun's folder comes with it.
    b2c_mkdirs "$r/var/tmp" "$r/var/lib/containers" "$r/root" "$r$B2C_STATE/crun"
    [ -k "$r/var/tmp" ] || chmod 1777 "$r/var/tmp"
    [ -e "$r/etc/mtab" ] || ln -s /proc/self/mounts "$r/etc/mtab"
    [ -e "$r/etc/resolv.conf" ] || : >"$r/etc/resolv.conf"
}

# b2c_fstab_early [first]: the fstab lines of the API filesystems (only those of the first
# pass with "first"), in mount order.
b2c_fstab_early() {
    local r=$B2C_ROOT
    printf '%s\n' "proc $r/proc proc defaults 0 0" "sysfs $r/sys sysfs defaults 0 0" \
        "devtmpfs $r/dev devtmpfs defaults 0 0" "tmpfs $r/run tmpfs mode=0755 0 0" \
        "tmpfs $r/tmp tmpfs mode=1777 0 0"
    [ "${1:-}" = first ] && return 0
    printf '%s\n' "devpts $r/dev/pts devpts gid=5,mode=0620,ptmxmode=0666 0 0" \
        "tmpfs $r/dev/shm tmpfs mode=1777 0 0" "cgroup2 $r/sys/fs/cgroup cgroup2 defaults 0 0"
}

# b2c_kernel_modprobe: the kernel runs /proc/sys/kernel/modprobe for its request_module()
# calls (a filesystem, a crypto algorithm, a device's modalias). The image has busybox's modprobe
# in /usr/bin only, not at the kernel's default /sbin/modprobe, so that the kernel's requests
# during boot, before /init, fail at once (b2c_builder/build/image.py SBIN_APPLETS); from here
# on it gets modprobe. Silent when the kernel has no modules support (no such file).
b2c_kernel_modprobe() {
    [ -e "$B2C_ROOT/proc/sys/kernel/modprobe" ] || return 0
    { echo /usr/bin/modprobe >"$B2C_ROOT/proc/sys/kernel/modprobe"; } 2>/dev/null ||
        echo "b2c: warning: could not set /proc/sys/kernel/modprobe: the kernel cannot load modules on demand"
}

# Delegate every available controller to child cgroups (podman's cgroupfs manager).
b2c_cgroup_controllers() {
    local controller controllers=''
    { read -r controllers <"$B2C_ROOT/sys/fs/cgroup/cgroup.controllers"; } 2>/dev/null
    for controller in $controllers; do
        echo "+$controller" >"$B2C_ROOT/sys/fs/cgroup/cgroup.subtree_control" 2>/dev/null || :
    done
}

b2c_console_setup() {
    # podman's progress bars need a width on a serial console.
    stty -F "$B2C_ROOT/dev/console" cols 120 rows 40 2>/dev/null || :
}

b2c_banner() {
    local kernel='' arch
    { read -r kernel <"$B2C_ROOT/proc/sys/kernel/osrelease"; } 2>/dev/null
    arch=$(uname -m 2>/dev/null)
    b2c_log "b2c-builder's boot2container $B2C_VERSION, Linux $kernel, $arch"
}

# b2c_parse_all: the build's default command line, then /proc/cmdline (the boot loader
# wins). Returns 1 if a value was malformed.
b2c_parse_all() {
    local status=0
    b2c_option_defaults
    b2c_parse_cmdline "$B2C_DEFAULT_CMDLINE" default || status=1
    if b2c_read_file "$B2C_ROOT/proc/cmdline"; then
        b2c_parse_cmdline "${B2C_TEXT%"$B2C_NL"}" cmdline || status=1
    else
        b2c_error "could not read /proc/cmdline"
        status=1
    fi
    b2c_job_parse || status=1
    return $status
}

# b2c_extra_args: b2c.extra_args_url, parsed as if appended to the command line.
b2c_extra_args() {
    local file=$B2C_ROOT$B2C_STATE/extra_args
    local url
    [ -n "$B2C_EXTRA_ARGS_URL" ] || return 0
    b2c_mask_urls "$B2C_EXTRA_ARGS_URL"
    url=$B2C_MASKED
    b2c_section extra_args "Download and parse the extra command line"
    rm -f "$file"
    # Bounded by timeout(1): busybox 1.35's wget -T crashes.
    if ! timeout 60 wget -q -O "$file" "$B2C_EXTRA_ARGS_URL" </dev/null || [ ! -f "$file" ]; then
        rm -f "$file"
        b2c_error "could not download the extra command line from $url"
        return 1
    fi
    b2c_extra_text "$file" || {
        rm -f "$file"
        b2c_error "the extra command line from $url is invalid"
        return 2
    }
    # It may hold credentials (--creds): nothing keeps it once it is parsed.
    rm -f "$file"
    b2c_parse_cmdline "$B2C_TEXT" extra || {
        b2c_error "the extra command line from $url is invalid"
        return 2
    }
    b2c_log "Parsed the extra command line from $url"
}

b2c_set_hostname() {
    # ip='s host name, applied by /init, unless b2c.hostname names another.
    [ -z "${B2C_IP_HOSTNAME:-}" ] || [ "$B2C_HOSTNAME" != boot2container ] ||
        B2C_HOSTNAME=$B2C_IP_HOSTNAME
    printf '%s\n' "$B2C_HOSTNAME" >"$B2C_ROOT/etc/hostname"
    # sethostname(2) through its sysctl file, as hostname(1) would, without a process.
    { printf '%s\n' "$B2C_HOSTNAME" >"$B2C_ROOT/proc/sys/kernel/hostname"; } 2>/dev/null ||
        b2c_warn "could not set the host name $B2C_HOSTNAME"
    if [ ! -s "$B2C_ROOT/etc/hosts" ]; then
        printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost\n' \
            "$B2C_HOSTNAME" >"$B2C_ROOT/etc/hosts"
    fi
}

# b2c_main: everything between parsing and shutting down. Runs in a subshell; its results
# go through b2c_save_status.
b2c_main() {
    local status
    b2c_section modules "Load the kernel modules"
    b2c_load_modules
    b2c_kernel_check || {
        b2c_fail 1 "the kernel configuration"
        return
    }
    b2c_job_mount_shares || {
        b2c_fail 1 "shared folders"
        return
    }
    b2c_section network "Connect to the network"
    b2c_connect || {
        b2c_fail 1 "network"
        return
    }
    b2c_apply_proxy
    b2c_section clock "Set the clock"
    b2c_set_clock
    b2c_extra_args || {
        status=$?
        b2c_fail "$status" "b2c.extra_args_url"
        return
    }
    b2c_apply_proxy
    b2c_section cache "Set up the cache"
    b2c_setup_cache || {
        b2c_fail 1 "b2c.cache_device"
        return
    }
    b2c_setup_storage_conf || {
        b2c_fail 1 "b2c.storage"
        return
    }
    b2c_check_store || {
        b2c_fail 1 "podman's storage on the cache"
        return
    }
    b2c_cache_count_boot
    b2c_setup_swap
    b2c_set_hostname
    b2c_registry_auth
    b2c_crun_read_only
    b2c_run_pipeline
    b2c_section_end
    b2c_save_status
}

# b2c_init: PID 1.
b2c_init() {
    local status mode
    b2c_job_nonce
    b2c_mount_early
    b2c_console_setup
    b2c_section setup "Set up boot2container"
    b2c_banner
    b2c_go_memory
    B2C_PIPELINE_STATUS=0 B2C_PIPELINE_FAILED_BY='' B2C_PIPELINE_SHUTDOWN_MODE=default
    if b2c_parse_all; then
        b2c_section_end
        # Until b2c_main says otherwise, assume it died.
        b2c_state_set status 1
        b2c_state_set failed_by "the init runtime"
        b2c_state_set shutdown_mode default
        (b2c_main)
        b2c_state_get section ""
        B2C_SECTION=$B2C_VALUE
        b2c_section_end
        b2c_state_get status 1
        status=$B2C_VALUE
        b2c_state_get shutdown_mode default
        mode=$B2C_VALUE
        b2c_state_get failed_by ""
        case $status in '' | *[!0-9]*) status=1 ;; esac
        [ "$status" = 0 ] || b2c_log "The pipeline failed because of: $B2C_VALUE"
    else
        b2c_error "the kernel command line is invalid: nothing was run"
        status=2 mode=default
    fi
    b2c_shutdown "$status" "$mode"
}

# The entry point of /init: a fresh, known environment, then b2c_init.
b2c_entry() {
    # Space, tab, newline, written out: a command substitution would fork.
    IFS=' 	
'
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin
    HOME=/root
    export PATH HOME
    unset CDPATH ENV
    umask 022
    cd / || :
    b2c_init
}
