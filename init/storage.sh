# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# storage.sh: b2c.filesystem mounts, the cache partition (b2c.cache_device), b2c.swap and
# b2c.volume. Every mount is recorded in $B2C_STATE/mounts so that the shutdown path can
# undo them even if the main flow died.

# b2c_mount ARGS... MOUNTPOINT: mount and record the mount point (the last argument).
b2c_mount() {
    local target
    for target in "$@"; do :; done
    mkdir -p "$target" && mount "$@" || return 1
    b2c_state_add mounts "$target"
}

# b2c_fs_lookup NAME: B2C_FS_TYPE, B2C_FS_SRC, B2C_FS_OPTS of the first b2c.filesystem NAME.
b2c_fs_lookup() {
    local spec rest param old_ifs=$IFS
    IFS=$B2C_NL
    for spec in $B2C_FILESYSTEM; do
        IFS=$old_ifs
        [ "${spec%%,*}" = "$1" ] || continue
        B2C_FS_TYPE='' B2C_FS_SRC='' B2C_FS_OPTS=''
        rest=$spec,
        rest=${rest#*,}
        while [ -n "$rest" ]; do
            param=${rest%%,*}
            rest=${rest#*,}
            case $param in
                type=*) B2C_FS_TYPE=${param#type=} ;;
                src=*) B2C_FS_SRC=${param#src=} ;;
                opts=*) B2C_FS_OPTS=$(printf '%s' "${param#opts=}" | tr '|' ',') ;;
            esac
        done
        return 0
    done
    IFS=$old_ifs
    return 1
}

# b2c_mount_filesystem NAME MOUNTPOINT
b2c_mount_filesystem() {
    local name=$1 target=$2
    b2c_modules_settle
    b2c_fs_lookup "$name" || {
        b2c_error "there is no b2c.filesystem named '$name'"
        return 1
    }
    set --
    [ -z "$B2C_FS_TYPE" ] || set -- "$@" -t "$B2C_FS_TYPE"
    [ -z "$B2C_FS_OPTS" ] || set -- "$@" -o "$B2C_FS_OPTS"
    b2c_mount "$@" "$B2C_FS_SRC" "$target" && return 0
    b2c_error "could not mount the b2c.filesystem '$name' on ${target#"$B2C_ROOT"}"
    return 1
}

# --- block devices ------------------------------------------------------------------------

# b2c_ext_label DEVICE: B2C_LABEL = the label of the ext2/3/4 filesystem on DEVICE.
# Returns 1 if DEVICE holds no ext filesystem (busybox has no blkid applet).
b2c_ext_label() {
    local magic
    B2C_LABEL=
    magic=$(dd if="$1" bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
    [ "$magic" = 53ef ] || return 1
    B2C_LABEL=$(dd if="$1" bs=1 skip=1144 count=16 2>/dev/null | tr -d '\000')
    return 0
}

# b2c_is_partition NAME: NAME (e.g. sda1) is a partition in sysfs.
b2c_is_partition() {
    [ -e "$B2C_ROOT/sys/class/block/$1/partition" ]
}

# b2c_find_labelled [DISK]: B2C_CACHE_PART = the first partition (of DISK) labelled
# $B2C_CACHE_LABEL.
b2c_find_labelled() {
    local name
    b2c_list_dir "$B2C_ROOT/sys/class/block"
    for name in $B2C_LIST; do
        b2c_is_partition "$name" || continue
        if [ -n "${1:-}" ]; then
            [ -e "$B2C_ROOT/sys/block/$1/$name" ] || continue
        fi
        b2c_ext_label "$B2C_ROOT/dev/$name" || continue
        if [ "$B2C_LABEL" = "$B2C_CACHE_LABEL" ]; then
            B2C_CACHE_PART=$B2C_ROOT/dev/$name
            return 0
        fi
    done
    return 1
}

# b2c_first_disk: B2C_DISK = the first non-removable, non-optical disk with a size.
b2c_first_disk() {
    local name removable size type
    b2c_list_dir "$B2C_ROOT/sys/block"
    for name in $B2C_LIST; do
        case $name in loop* | ram* | zram* | sr* | fd* | dm-* | md* | nbd* | mtdblock*) continue ;; esac
        [ -e "$B2C_ROOT/sys/block/$name/device" ] || continue
        removable=1 size=0 type=0
        { read -r removable <"$B2C_ROOT/sys/block/$name/removable"; } 2>/dev/null
        { read -r size <"$B2C_ROOT/sys/block/$name/size"; } 2>/dev/null
        { read -r type <"$B2C_ROOT/sys/block/$name/device/type"; } 2>/dev/null
        if [ "$removable" = 0 ] && [ "$size" != 0 ] && [ "$type" != 5 ]; then
            B2C_DISK=$name
            return 0
        fi
    done
    return 1
}

# b2c_part_name DISK N: the kernel's name of partition N of DISK (sda1, nvme0n1p1).
b2c_part_name() {
    case $1 in
        *[0-9]) B2C_PART_NAME=${1}p$2 ;;
        *) B2C_PART_NAME=$1$2 ;;
    esac
}

b2c_format() {
    b2c_log "Formatting $1 as ext4, labelled $B2C_CACHE_LABEL"
    "$B2C_MKFS_EXT4" -q -F -L "$B2C_CACHE_LABEL" "$1" </dev/null || {
        b2c_error "could not format $1"
        return 1
    }
    B2C_CACHE_PART=$1
}

# b2c_format_disk DISK: one GPT partition spanning DISK, formatted for the cache.
b2c_format_disk() {
    b2c_log "Creating a cache partition on /dev/$1 (its partition table is replaced)"
    printf 'label: gpt\n,,L\n' | "$B2C_SFDISK" --quiet --wipe always "$B2C_ROOT/dev/$1" || {
        b2c_error "could not partition /dev/$1"
        return 1
    }
    b2c_part_name "$1" 1
    b2c_wait_for "$B2C_ROOT/dev/$B2C_PART_NAME" || {
        b2c_error "the partition /dev/$B2C_PART_NAME did not appear"
        return 1
    }
    b2c_format "$B2C_ROOT/dev/$B2C_PART_NAME"
}

# b2c_cache_auto [reset]: the labelled partition, else the first suitable disk, waiting up
# to B2C_WAIT_SECS for one to appear. Returns 1 if there is no disk at all.
b2c_cache_auto() {
    local deadline
    b2c_uptime_cs
    deadline=$((B2C_UPTIME_CS + B2C_WAIT_SECS * 100))
    while :; do
        if b2c_find_labelled; then
            [ "${1:-}" = reset ] || return 0
            b2c_format "$B2C_CACHE_PART"
            return
        fi
        if b2c_first_disk; then
            b2c_format_disk "$B2C_DISK"
            return
        fi
        b2c_uptime_cs
        [ "$B2C_UPTIME_CS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

# b2c_cache_node /dev/X: a partition is reused if it holds a labelled ext filesystem and
# formatted otherwise; a disk gets its labelled partition reused or is partitioned.
b2c_cache_node() {
    local node=$B2C_ROOT$1 name
    b2c_wait_for "$node" || {
        b2c_warn "the cache device $1 did not appear within ${B2C_WAIT_SECS}s: no cache"
        return 1
    }
    name=$(readlink -f "$node" 2>/dev/null) || name=$node
    name=${name##*/}
    if b2c_is_partition "$name"; then
        if b2c_ext_label "$node" && [ -n "$B2C_LABEL" ]; then
            B2C_CACHE_PART=$node
            return 0
        fi
        b2c_format "$node"
        return
    fi
    b2c_find_labelled "$name" && return 0
    b2c_format_disk "$name"
}

# b2c_setup_cache: mount the cache on $B2C_CACHE_MNT and put podman's storage and
# /var/tmp on it; without one, podman's storage goes to a tmpfs. Returns 1 on an error
# that must end the boot (a b2c.filesystem that does not exist or does not mount).
b2c_setup_cache() {
    local mnt=$B2C_ROOT$B2C_CACHE_MNT
    B2C_CACHE_PART='' B2C_CACHE_ON=0
    if [ "$B2C_CACHE_DEVICE" != none ]; then
        # The disk's driver, and ext4 for an untyped mount of the cache partition (mount only
        # tries the types in /proc/filesystems; the kernel loads nothing for it).
        b2c_modules_settle
        modprobe -q ext4 </dev/null 2>/dev/null || :
    fi
    case $B2C_CACHE_DEVICE in
        none) b2c_log "No cache device (b2c.cache_device=none)" ;;
        auto) b2c_cache_auto || b2c_warn "no disk found for b2c.cache_device=auto: no cache" ;;
        reset) b2c_cache_auto reset || b2c_warn "no disk found for b2c.cache_device=reset: no cache" ;;
        /dev/*) b2c_cache_node "$B2C_CACHE_DEVICE" ;;
        *)
            b2c_mount_filesystem "$B2C_CACHE_DEVICE" "$mnt" || return 1
            b2c_log "Mounted the b2c.filesystem $B2C_CACHE_DEVICE as the cache"
            b2c_cache_bind
            return
            ;;
    esac
    if [ -n "$B2C_CACHE_PART" ]; then
        if b2c_mount "$B2C_CACHE_PART" "$mnt"; then
            b2c_log "Mounted the cache partition ${B2C_CACHE_PART#"$B2C_ROOT"} on $B2C_CACHE_MNT"
            df -h "$mnt" 2>/dev/null
            b2c_cache_bind
            return
        fi
        b2c_warn "could not mount the cache partition ${B2C_CACHE_PART#"$B2C_ROOT"}: no cache"
    fi
    # Not recorded for the shutdown path (plain mount, not b2c_mount): a tmpfs has nothing to
    # flush, and podman may still hold mounts in it then.
    b2c_mkdirs "$B2C_ROOT/var/lib/containers"
    mount -t tmpfs -o mode=0700 tmpfs "$B2C_ROOT/var/lib/containers" || {
        b2c_error "could not mount a tmpfs for podman's storage"
        return 1
    }
    # Pulls stage blobs in /var/tmp: on that tmpfs, not in the initramfs, which already holds
    # the image and any local images (half the RAM each at most).
    if ! { mkdir -m 1777 "$B2C_ROOT/var/lib/containers/tmp" &&
        mount -o bind "$B2C_ROOT/var/lib/containers/tmp" "$B2C_ROOT/var/tmp"; }; then
        b2c_warn "could not put /var/tmp on podman's storage: large pulls may fill the RAM disk"
    fi
    return 0
}

b2c_cache_bind() {
    local mnt=$B2C_ROOT$B2C_CACHE_MNT
    B2C_CACHE_ON=1
    mkdir -p "$mnt/containers" && rm -rf "$mnt/tmp" && mkdir -p "$mnt/tmp" &&
        b2c_mount -o bind "$mnt/containers" "$B2C_ROOT/var/lib/containers" &&
        b2c_mount -o bind "$mnt/tmp" "$B2C_ROOT/var/tmp" && return 0
    b2c_error "could not put podman's storage on the cache"
    return 1
}

# b2c_setup_swap: b2c.swap: a swap file of SIZE bytes on the cache, or a swap device;
# ",swappiness=N" sets vm.swappiness once swapping is on.
b2c_setup_swap() {
    local what=${B2C_SWAP%%,*} swappiness=''
    [ -n "$B2C_SWAP" ] || return 0
    case $B2C_SWAP in *,swappiness=*) swappiness=${B2C_SWAP##*,swappiness=} ;; esac
    case $what in
        /dev/*) b2c_swap_device "$what" ;;
        *) b2c_swap_file "$what" ;;
    esac || return 0
    [ -n "$swappiness" ] || return 0
    if echo "$swappiness" >"$B2C_ROOT/proc/sys/vm/swappiness"; then
        b2c_log "Set vm.swappiness to $swappiness"
    else
        b2c_warn "could not set vm.swappiness to $swappiness"
    fi
    return 0
}

# b2c_swap_file BYTES: a swap file on the cache. Returns 1 if there is none.
b2c_swap_file() {
    local file=$B2C_ROOT$B2C_CACHE_MNT/swapfile
    if [ "${B2C_CACHE_ON:-0}" != 1 ]; then
        b2c_warn "b2c.swap needs a cache device: no swap"
        return 1
    fi
    rm -f "$file"
    if fallocate -l "$1" "$file" && chmod 600 "$file" && mkswap "$file" >/dev/null &&
        swapon "$file"; then
        b2c_state_set swapfile "$file"
        b2c_log "Using a swap file of $1 bytes"
        return 0
    fi
    rm -f "$file"
    b2c_warn "could not set up a swap file of $1 bytes"
    return 1
}

# b2c_swap_device /dev/NODE: swap on that device, given a swap signature (mkswap) if it has
# none ("SWAPSPACE2" at the end of its first 4 KiB page). Returns 1 if it is not used.
b2c_swap_device() {
    local node=$B2C_ROOT$1 magic
    b2c_modules_settle
    b2c_wait_for "$node" || {
        b2c_warn "the swap device $1 did not appear within ${B2C_WAIT_SECS}s: no swap"
        return 1
    }
    magic=$(dd if="$node" bs=1 skip=4086 count=10 2>/dev/null)
    if [ "$magic" != SWAPSPACE2 ]; then
        b2c_log "Giving $1 a swap signature (it had none)"
        mkswap "$node" >/dev/null || {
            b2c_warn "could not make $1 a swap device: no swap"
            return 1
        }
    fi
    swapon "$node" || {
        b2c_warn "could not swap on $1: no swap"
        return 1
    }
    b2c_state_set swapdev "$node"
    b2c_log "Swapping on $1"
}

# b2c_setup_storage_conf: b2c.storage: podman reads storage.conf with those options
# (CONTAINERS_STORAGE_CONF). A b2c.filesystem named in additionalimagestores is mounted on
# $B2C_STATE/filesystems/NAME. Returns 1 if one cannot be mounted.
b2c_setup_storage_conf() {
    local conf=$B2C_STATE/storage.conf rest=$B2C_STORAGE, param key value store
    local stores='' options='' overlay=''
    [ -n "$B2C_STORAGE" ] || return 0
    while [ -n "$rest" ]; do
        param=${rest%%,*}
        rest=${rest#*,}
        key=${param%%=*}
        value=${param#*=}
        case $key in
            additionalimagestores)
                value=$value'|'
                while [ -n "$value" ]; do
                    store=${value%%|*}
                    value=${value#*|}
                    case $store in
                        /*) ;;
                        *)
                            b2c_mount_filesystem "$store" "$B2C_ROOT$B2C_STATE/filesystems/$store" ||
                                return 1
                            store=$B2C_STATE/filesystems/$store
                            ;;
                    esac
                    stores="$stores${stores:+, }\"$store\""
                done
                ;;
            overlay.*) overlay="$overlay${key#overlay.} = \"$value\"$B2C_NL" ;;
            *) options="$options$key = \"$value\"$B2C_NL" ;;
        esac
    done
    {
        cat "$B2C_ROOT/etc/containers/storage.conf"
        printf '\n# b2c.storage\n[storage.options]\n'
        [ -z "$stores" ] || printf 'additionalimagestores = [%s]\n' "$stores"
        printf '%s' "$options"
        [ -z "$overlay" ] || printf '\n[storage.options.overlay]\n%s' "$overlay"
    } >"$B2C_ROOT$conf" || {
        b2c_error "could not write $conf"
        return 1
    }
    export CONTAINERS_STORAGE_CONF="$conf"
    b2c_log "containers-storage options from b2c.storage: $B2C_STORAGE"
}

# --- volumes ------------------------------------------------------------------------------

b2c_remove_expired_volumes() {
    local name
    for name in $(podman volume ls --quiet --filter label=expiration=pipeline_end 2>/dev/null); do
        podman volume rm --force "$name" >/dev/null || b2c_warn "could not remove the volume $name"
    done
}

# b2c_setup_volume SPEC: NAME[,filesystem=FS][,expiration=never|pipeline_end]
b2c_setup_volume() {
    local rest=$1, name param filesystem='' expiration=never mountpoint
    name=${rest%%,*}
    rest=${rest#*,}
    while [ -n "$rest" ]; do
        param=${rest%%,*}
        rest=${rest#*,}
        case $param in
            filesystem=*) filesystem=${param#*=} ;;
            expiration=*) expiration=${param#*=} ;;
        esac
    done
    b2c_log "Set up the volume $name"
    if ! podman volume exists "$name"; then
        podman volume create --label "expiration=$expiration" "$name" >/dev/null || {
            b2c_error "could not create the volume $name"
            return 1
        }
    fi
    [ -n "$filesystem" ] || return 0
    mountpoint=$(podman volume inspect --format '{{.Mountpoint}}' "$name") || mountpoint=
    if [ -z "$mountpoint" ]; then
        b2c_error "could not find where the volume $name lives"
        return 1
    fi
    b2c_mount_filesystem "$filesystem" "$B2C_ROOT$mountpoint" || return 1
    b2c_state_add volume_mounts "$B2C_ROOT$mountpoint"
}

b2c_setup_volumes() {
    local spec old_ifs=$IFS
    [ -n "$B2C_VOLUME" ] || return 0
    b2c_section volumes "Set up the volumes"
    b2c_modules_settle
    b2c_remove_expired_volumes
    IFS=$B2C_NL
    for spec in $B2C_VOLUME; do
        IFS=$old_ifs
        b2c_setup_volume "$spec" || return 1
    done
    IFS=$old_ifs
    return 0
}

# b2c_release_volumes: unmount the volumes' filesystems, drop pipeline_end volumes.
b2c_release_volumes() {
    local mountpoint mounts=$B2C_ROOT$B2C_STATE/mounts
    if [ -f "$B2C_ROOT$B2C_STATE/volume_mounts" ]; then
        for mountpoint in $(tac "$B2C_ROOT$B2C_STATE/volume_mounts"); do
            if umount "$mountpoint"; then
                # b2c_mount recorded it too: b2c_release_storage must not unmount it again.
                grep -vxF -e "$mountpoint" "$mounts" >"$mounts.new"
                mv "$mounts.new" "$mounts"
            else
                b2c_warn "could not unmount $mountpoint"
            fi
        done
        rm -f "$B2C_ROOT$B2C_STATE/volume_mounts"
    fi
    [ -z "$B2C_VOLUME" ] || b2c_remove_expired_volumes
}

# b2c_release_storage: swap off, then every recorded mount in reverse order, synced first.
# Used by the shutdown path: only state files, no parsed options.
b2c_release_storage() {
    local file target
    sync
    if b2c_state_get swapfile ""; then
        if swapoff "$B2C_VALUE"; then
            rm -f "$B2C_VALUE"
        else
            b2c_warn "could not stop swapping to ${B2C_VALUE#"$B2C_ROOT"}"
        fi
        rm -f "$B2C_ROOT$B2C_STATE/swapfile"
    fi
    if b2c_state_get swapdev ""; then
        swapoff "$B2C_VALUE" || b2c_warn "could not stop swapping to ${B2C_VALUE#"$B2C_ROOT"}"
        rm -f "$B2C_ROOT$B2C_STATE/swapdev"
    fi
    file=$B2C_ROOT$B2C_STATE/mounts
    [ -f "$file" ] || return 0
    for target in $(tac "$file"); do
        if umount "$target"; then
            b2c_log "Unmounted ${target#"$B2C_ROOT"}"
        elif mount -o remount,ro "$target"; then
            b2c_warn "could not unmount ${target#"$B2C_ROOT"}: remounted it read-only"
        else
            b2c_warn "could not unmount ${target#"$B2C_ROOT"}"
        fi
    done
    rm -f "$file"
    sync
}
