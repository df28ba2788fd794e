# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# store.sh: podman's image store on the cache partition: a probe that repairs a store podman
# cannot open, and the eviction of images this boot does not use when space runs short.
#
# On the cache, podman's graphroot is $B2C_CACHE_MNT/containers/storage: images and layers
# (overlay*/), the libpod database (db.sql, libpod/) and the volumes (volumes/). The init
# keeps, beside it, $B2C_CACHE_MNT/b2c/boots (a boot counter), $B2C_CACHE_MNT/b2c/lru
# ("BOOT IMAGE-ID" lines: the last boot whose pipeline used each image) and
# $B2C_CACHE_MNT/b2c/closed: present while the store is at rest, as the last boot left it
# once its podman calls were over and had all succeeded (written after a sync, removed and
# synced before this boot's first podman call), like ext4's "clean" state. It holds the
# store's fingerprint (b2c_store_fingerprint): a store changed since, by anything that does
# not know the mark, is probed; so is one whose last boot crashed or lost power.

# b2c_store_probe: 0 if podman can open its store (its image list and its database).
b2c_store_probe() {
    mkdir -p "$B2C_ROOT$B2C_STATE"
    timeout 120 podman images --quiet </dev/null >/dev/null 2>"$B2C_ROOT$B2C_STATE/probe.err"
}

# b2c_check_store: on a cache that outlives the boot, a store podman cannot open (an
# images.json cut short, a db.sql with a zeroed header: a power cut or a full disk) is
# wiped, its volumes kept, and the boot goes on with an empty store. Returns 1 only if
# podman still cannot open it afterwards. The probe is a podman process (about a second
# under TCG): skipped for a store that does not exist yet, or that the last boot closed.
b2c_check_store() {
    local storage=$B2C_ROOT/var/lib/containers/storage name
    [ "${B2C_CACHE_ON:-0}" = 1 ] || return 0
    if b2c_store_reopen; then
        b2c_log "podman's storage on the cache was closed by the last boot: not probed"
        return 0
    fi
    [ "$B2C_STORE_MARK" != changed ] ||
        b2c_log "podman's storage on the cache changed since the last boot closed it: probing it"
    b2c_list_dir "$storage"
    [ -n "$B2C_LIST" ] || return 0
    b2c_store_probe && return 0
    b2c_podman_message "$B2C_ROOT$B2C_STATE/probe.err"
    b2c_warn "podman cannot open its storage on the cache ($B2C_PODMAN_MESSAGE): wiping it, volumes kept"
    b2c_list_dir "$storage"
    for name in $B2C_LIST; do
        [ "$name" = volumes ] || rm -rf "${storage:?}/$name"
    done
    rm -f "$B2C_ROOT$B2C_CACHE_MNT/b2c/lru"
    if b2c_store_probe; then
        b2c_log "Wiped podman's storage on the cache (volumes kept): images will be pulled again"
        return 0
    fi
    b2c_podman_message "$B2C_ROOT$B2C_STATE/probe.err"
    b2c_error "podman still cannot open its storage after wiping it: $B2C_PODMAN_MESSAGE (boot with b2c.cache_device=reset to reformat the cache)"
    return 1
}

# b2c_store_fingerprint: B2C_FINGERPRINT = name, size, mtime, ctime and inode of the
# store's database and of its image, layer and container lists (those that exist).
b2c_store_fingerprint() {
    B2C_FINGERPRINT=$(cd "$B2C_ROOT/var/lib/containers/storage" 2>/dev/null &&
        stat -c '%n %s %Y %Z %i' db.sql db.sql-wal overlay-images/images.json \
            overlay-layers/layers.json overlay-containers/containers.json 2>/dev/null)
}

# b2c_store_reopen: 0 if the last boot closed the store (b2c_store_close) and it has not
# changed since (B2C_STORE_MARK: none, changed or closed). The mark is removed first, and
# synced, so that a crash during this boot has the next one probe.
b2c_store_reopen() {
    local mark=$B2C_ROOT$B2C_CACHE_MNT/b2c/closed closed
    B2C_STORE_MARK=none
    [ -e "$mark" ] || return 1
    closed=$(cat "$mark" 2>/dev/null)
    rm -f "$mark" && sync && [ ! -e "$mark" ] || return 1
    b2c_store_fingerprint
    B2C_STORE_MARK=changed
    [ "$closed" = "$B2C_FINGERPRINT" ] || return 1
    B2C_STORE_MARK=closed
}

# b2c_store_close: once the pipeline's clean-up has succeeded (B2C_CLEANED_UP=1: podman
# opened the store), with no podman or conmon process left, no ENOSPC seen and room left
# on the cache (a full disk can leave a store half written), mark the store closed with its
# fingerprint: the next boot need not probe it. The store is synced before the mark is
# written; nothing calls podman after it.
b2c_store_close() {
    local dir=$B2C_ROOT$B2C_CACHE_MNT/b2c
    [ "${B2C_CACHE_ON:-0}" = 1 ] && [ "${B2C_CLEANED_UP:-0}" = 1 ] || return 0
    [ "${B2C_STORE_FULL:-0}" = 0 ] || return 0
    # pidof: 1 when it finds none; anything else (found, or no pidof) leaves no mark.
    pidof podman conmon >/dev/null 2>&1
    [ "$?" = 1 ] || return 0
    b2c_cache_free && [ "$B2C_FREE_KB" -ge 1024 ] || return 0
    sync && mkdir -p "$dir" || return 0
    b2c_store_fingerprint
    printf '%s\n' "$B2C_FINGERPRINT" >"$dir/closed"
}

# --- eviction -----------------------------------------------------------------------------

# b2c_cache_count_boot: B2C_BOOT_NUMBER = this boot's number on the cache (1, 2...).
b2c_cache_count_boot() {
    local dir=$B2C_ROOT$B2C_CACHE_MNT/b2c n=0
    B2C_BOOT_NUMBER=0
    [ "${B2C_CACHE_ON:-0}" = 1 ] || return 0
    mkdir -p "$dir" || return 0
    { read -r n <"$dir/boots"; } 2>/dev/null
    case $n in '' | *[!0-9]*) n=0 ;; esac
    B2C_BOOT_NUMBER=$((n + 1))
    echo "$B2C_BOOT_NUMBER" >"$dir/boots"
}

# b2c_cache_used CID: record that this boot's pipeline uses the image of container CID.
b2c_cache_used() {
    local lru=$B2C_ROOT$B2C_CACHE_MNT/b2c/lru id
    # Only a cache evicts: without one, a podman call (about a second under TCG) is saved.
    [ "${B2C_CACHE_ON:-0}" = 1 ] || return 0
    if b2c_container_image "$1"; then
        id=$B2C_IMAGE_ID
    else
        b2c_log "Container $1 is not in containers/storage's lists: asking podman for its image"
        id=$(podman container inspect --format '{{.Image}}' "$1" 2>/dev/null) || return 0
    fi
    id=${id%"${id#????????????}"}
    [ -n "$id" ] || return 0
    B2C_USED_IDS="$B2C_USED_IDS $id"
    {
        grep -v " $id\$" "$lru" 2>/dev/null
        echo "$B2C_BOOT_NUMBER $id"
    } >"$lru.new" && mv "$lru.new" "$lru"
}

# b2c_container_image CID: B2C_IMAGE_ID = the id of the image that container CID (64
# lowercase hex digits) was created from, read from containers/storage's lists of
# containers, where podman wrote it before it gave the container's id:
# volatile-containers.json (podman run --rm's containers) and containers.json, in the graph
# root's overlay-containers folder (newContainerStore in containers/storage's containers.go).
# Each is one JSON array of objects whose first keys are "id", "names" (omitted when empty)
# and "image" (its Container struct). Returns 1 when CID is no such container's: the caller
# asks podman instead. A podman call takes about 0.4 s of CPU under TCG; on podman run's
# path it ran while the container started, on the one vCPU.
b2c_container_image() {
    local dir=$B2C_ROOT/var/lib/containers/storage/overlay-containers
    B2C_IMAGE_ID=
    case $1 in *[!0-9a-f]* | '') return 1 ;; esac
    [ "${#1}" = 64 ] || return 1
    B2C_IMAGE_ID=$(sed -n -e "/{\"id\":\"$1\",/{" \
        -e "s/.*{\"id\":\"$1\",\(\"names\":\[[^]]*\],\)\{0,1\}\"image\":\"\([0-9a-f]\{64\}\)\".*/\2/p" \
        -e q -e '}' \
        "$dir/volatile-containers.json" "$dir/containers.json" 2>/dev/null)
    [ "${#B2C_IMAGE_ID}" = 64 ]
}

# b2c_image_key REF: B2C_IMAGE_KEY = REF as podman lists it: no transport, ":latest" when it
# has neither tag nor digest.
b2c_image_key() {
    local ref=${1#docker://} last
    last=${ref##*/}
    case $last in *:* | *@*) ;; *) ref=$ref:latest ;; esac
    B2C_IMAGE_KEY=$ref
}

# b2c_cache_pins: B2C_PINS = the images named by this boot's containers, one a line.
b2c_cache_pins() {
    local spec old_ifs=$IFS
    B2C_PINS=
    IFS=$B2C_NL
    for spec in $B2C_SERVICE$B2C_CONTAINER$B2C_POST_CONTAINER; do
        IFS=$old_ifs
        b2c_spec_argv_dir "$spec"
        if b2c_with_words "$B2C_SPEC_REST" b2c_with_argv_dir "$B2C_ARGV_DIR" b2c_podman_scan &&
            [ -n "$B2C_SCAN_IMAGE" ]; then
            b2c_image_key "$B2C_SCAN_IMAGE"
            B2C_PINS=$B2C_PINS$B2C_IMAGE_KEY$B2C_NL
        fi
    done
    IFS=$old_ifs
}

# b2c_cache_free: B2C_FREE_KB and B2C_SIZE_KB of the cache's filesystem (0 if unknown).
b2c_cache_free() {
    local line _fs size _used avail _rest
    B2C_FREE_KB=0 B2C_SIZE_KB=0
    line=$(df -Pk "$B2C_ROOT$B2C_CACHE_MNT" 2>/dev/null | tail -n 1)
    read -r _fs size _used avail _rest <<EOF
$line
EOF
    case $size$avail in '' | *[!0-9]*) return 1 ;; esac
    B2C_FREE_KB=$avail B2C_SIZE_KB=$size
}

# b2c_cache_candidates: B2C_CANDIDATES = "BOOT ID NAME" lines of the images this boot does
# not use, least recently used first (BOOT 0: never recorded as used). An image is pinned
# when this boot created a container from it or when any of its names is a pin.
b2c_cache_candidates() {
    local lru=$B2C_ROOT$B2C_CACHE_MNT/b2c/lru images id name pinned="$B2C_USED_IDS" seen='' stamp list=''
    B2C_CANDIDATES=
    images=$(podman images --noheading --format '{{.ID}} {{.Repository}}:{{.Tag}}' 2>/dev/null)
    while read -r id name; do
        case $B2C_NL$B2C_PINS in *"$B2C_NL$name$B2C_NL"*) pinned="$pinned $id" ;; esac
    done <<EOF
$images
EOF
    while read -r id name; do
        [ -n "$id" ] || continue
        case " $pinned $seen " in *" $id "*) continue ;; esac
        seen="$seen $id"
        stamp=$(grep " $id\$" "$lru" 2>/dev/null | tail -n 1)
        stamp=${stamp%% *}
        list="$list${stamp:-0} $id $name$B2C_NL"
    done <<EOF
$images
EOF
    [ -z "$list" ] || B2C_CANDIDATES=$(printf '%s' "$list" | sort -n -s -k 1,1)
}

# b2c_cache_evict MODE: remove images this boot does not use, least recently used first;
# MODE "floor": until B2C_CACHE_FLOOR_PCT % of the cache is free; "all": every one of them.
# Says which images went and how much space that freed. Returns 1 if nothing was removed.
b2c_cache_evict() {
    local before after stamp id name removed=0 names='' old_ifs=$IFS
    [ "$B2C_CACHE_EVICT" != never ] || return 1
    [ "${B2C_CACHE_ON:-0}" = 1 ] || return 1
    b2c_cache_free || return 1
    before=$B2C_FREE_KB
    if [ "$1" = floor ] && [ $((B2C_FREE_KB * 100)) -ge $((B2C_SIZE_KB * B2C_CACHE_FLOOR_PCT)) ]; then
        return 1
    fi
    b2c_cache_candidates
    IFS=$B2C_NL
    for stamp in $B2C_CANDIDATES; do
        IFS=$old_ifs
        id=${stamp#* }
        name=${id#* }
        id=${id%% *}
        if podman image rm --force "$id" >/dev/null 2>&1; then
            removed=$((removed + 1))
            names="$names, $name"
            stamp=${stamp%% *}
            if [ "$stamp" = 0 ]; then
                b2c_log "Evicted the image $name ($id, never used by a pipeline on this cache)"
            else
                b2c_log "Evicted the image $name ($id, last used $((B2C_BOOT_NUMBER - stamp)) boots ago)"
            fi
        else
            b2c_warn "could not evict the image $name ($id)"
        fi
        if [ "$1" = floor ]; then
            b2c_cache_free
            [ $((B2C_FREE_KB * 100)) -lt $((B2C_SIZE_KB * B2C_CACHE_FLOOR_PCT)) ] || break
        fi
    done
    IFS=$old_ifs
    [ "$removed" -gt 0 ] || return 1
    b2c_cache_free
    after=$B2C_FREE_KB
    b2c_log "Evicted $removed image(s) this boot does not use (${names#, }): $(((after - before) / 1024)) MiB freed, $((after / 1024)) MiB free"
    return 0
}

# b2c_cache_prepare: before the pipeline, b2c.cache_evict=all removes every image the boot
# does not use; the default makes room down to the floor.
b2c_cache_prepare() {
    B2C_USED_IDS=
    [ "${B2C_CACHE_ON:-0}" = 1 ] || return 0
    b2c_cache_pins
    case $B2C_CACHE_EVICT in
        all) b2c_cache_evict all ;;
        unused) b2c_cache_evict floor ;;
    esac
    return 0
}

# b2c_no_space: podman's error output in FILE says the storage is full (B2C_STORE_FULL=1:
# the store is not marked closed at the end of this boot).
b2c_no_space() {
    grep -qi "no space left on device" "$1" 2>/dev/null || return 1
    B2C_STORE_FULL=1
}

# b2c_no_space_hint: B2C_PODMAN_FAILURE gets what to do about a full storage.
b2c_no_space_hint() {
    if [ "${B2C_CACHE_ON:-0}" = 1 ]; then
        B2C_PODMAN_FAILURE="$B2C_PODMAN_FAILURE; the cache is full even without the images this boot does not use: give it a bigger disk"
        [ "$B2C_CACHE_EVICT" != never ] ||
            B2C_PODMAN_FAILURE="$B2C_PODMAN_FAILURE, or let b2c evict images (b2c.cache_evict=unused)"
    else
        b2c_cache_size_of "$B2C_ROOT/var/lib/containers"
        B2C_PODMAN_FAILURE="$B2C_PODMAN_FAILURE; podman's storage is a tmpfs in RAM ($B2C_SIZE_MIB MiB, half the memory) and the image does not fit: use a disk (b2c.cache_device=auto or /dev/NODE) or give the machine more memory"
    fi
}

# b2c_cache_size_of DIR: B2C_SIZE_MIB = the size of DIR's filesystem in MiB ("?" unknown).
b2c_cache_size_of() {
    local line _fs size _rest
    B2C_SIZE_MIB='?'
    line=$(df -Pk "$1" 2>/dev/null | tail -n 1)
    read -r _fs size _rest <<EOF
$line
EOF
    case $size in '' | *[!0-9]*) ;; *) B2C_SIZE_MIB=$((size / 1024)) ;; esac
}
