# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# podman.sh: one podman command with the runtime's retry policy.
#
# Only failures that can pass are retried (the network, DNS, a registry that is overloaded
# or answers 5xx/429), with a bounded, doubling delay; any other failure (an unknown flag,
# a malformed reference, an unsupported manifest, a damaged store...) cannot change by
# waiting, and fails at once with podman's own message.

# b2c_podman_transient FILE: podman's error output in FILE names a failure that can pass.
# The messages are those of Go's net package and of containers/image (podman's pulls).
b2c_podman_transient() {
    local text
    text=$(tr '[:upper:]' '[:lower:]' <"$1" 2>/dev/null) || return 1
    case $text in
        *"connection refused"* | *"connection reset"* | *"broken pipe"* | *"unexpected eof"* | \
            *"network is unreachable"* | *"no route to host"* | *"host is down"*) return 0 ;;
        *timeout* | *"timed out"* | *"deadline exceeded"*) return 0 ;;
        *"no such host"* | *"server misbehaving"* | *"temporary failure in name resolution"* | \
            *"try again"*) return 0 ;;
        *"too many requests"* | *toomanyrequests* | *"status: 429"* | *"status code 429"* | \
            *"statuscode: 429"* | *"status 429"*) return 0 ;;
        *"internal server error"* | *"bad gateway"* | *"service unavailable"* | \
            *"status: 5"[0-9][0-9]* | *"status code 5"[0-9][0-9]* | \
            *"statuscode: 5"[0-9][0-9]* | *"status 5"[0-9][0-9]* | *"registry 5"[0-9][0-9]*) return 0 ;;
    esac
    return 1
}

# b2c_podman_message FILE: B2C_PODMAN_MESSAGE = podman's last "Error: ..." line in FILE (else
# its last line), for the console.
b2c_podman_message() {
    local line last=''
    B2C_PODMAN_MESSAGE=
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
            Error:* | error:*) B2C_PODMAN_MESSAGE=$line ;;
            *[!"$B2C_WS"]*) last=$line ;;
        esac
    done <"$1"
    [ -n "$B2C_PODMAN_MESSAGE" ] || B2C_PODMAN_MESSAGE=${last:-(no message)}
}

# b2c_podman_once ARGS...: podman ARGS with no standard input. Its error output goes to the
# console as it comes and to $B2C_STATE/podman.err; B2C_PODMAN_OUT = the last line of its
# standard output (the id that create prints). Returns podman's status.
b2c_podman_once() {
    local err=$B2C_ROOT$B2C_STATE/podman.err rc=$B2C_ROOT$B2C_STATE/podman.rc out
    mkdir -p "$B2C_ROOT$B2C_STATE"
    : >"$err"
    echo 125 >"$rc"
    # fd 4 carries podman's standard output to the capture; its errors go through the pipe.
    out=$({ {
        podman "$@" </dev/null 2>&1 1>&4 4>&-
        echo "$?" >"$rc"
    } | b2c_podman_errors "$err" >&2; } 4>&1)
    B2C_PODMAN_OUT=${out##*"$B2C_NL"}
    read -r out <"$rc" 2>/dev/null || out=125
    return "$out"
}

# b2c_podman_errors FILE: copy podman's error output to the console and to FILE, with the
# secrets of the specs masked (secrets.sh).
b2c_podman_errors() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        b2c_mask_line "$line"
        printf '%s\n' "$B2C_MASKED"
        printf '%s\n' "$B2C_MASKED" >>"$1"
    done
}

# b2c_podman WHAT ARGS...: podman ARGS, retried while its failure is transient (at most
# B2C_PULL_ATTEMPTS attempts, 2, 4, 8... seconds apart, at most B2C_RETRY_MAX_DELAY).
# WHAT names the action in messages ("pull", "create"). On a final failure, an error line
# with podman's message; returns podman's status (125 if it printed nothing to go on).
b2c_podman() {
    local what=$1 attempt=1 status delay=2 err=$B2C_ROOT$B2C_STATE/podman.err
    shift
    while :; do
        b2c_podman_once "$@"
        status=$?
        [ "$status" != 0 ] || return 0
        b2c_podman_message "$err"
        if ! b2c_podman_transient "$err"; then
            B2C_PODMAN_FAILURE="podman $what failed (exit status $status, not retried: the error is not transient): $B2C_PODMAN_MESSAGE"
            return "$status"
        fi
        if [ "$attempt" -ge "$B2C_PULL_ATTEMPTS" ]; then
            B2C_PODMAN_FAILURE="podman $what failed (exit status $status, $attempt attempts): $B2C_PODMAN_MESSAGE"
            return "$status"
        fi
        b2c_warn "podman $what failed with a transient error (exit status $status), retrying in ${delay}s ($attempt/$B2C_PULL_ATTEMPTS)"
        sleep "$delay"
        attempt=$((attempt + 1))
        delay=$((delay * 2))
        [ "$delay" -le "$B2C_RETRY_MAX_DELAY" ] || delay=$B2C_RETRY_MAX_DELAY
    done
}

# b2c_registry_auth: registry credentials from an extra initrd: /etc/containers/auth.json
# (podman login's format) serves every pull (REGISTRY_AUTH_FILE).
b2c_registry_auth() {
    [ -f "$B2C_ROOT/etc/containers/auth.json" ] || return 0
    export REGISTRY_AUTH_FILE=/etc/containers/auth.json
    b2c_log "Using the registry credentials of /etc/containers/auth.json"
}

# b2c_go_memory: podman's Go garbage collector runs only near a memory limit: GOGC=off with
# GOMEMLIMIT at 1/16 of the RAM, at most 128 MiB (https://go.dev/doc/gc-guide, "Memory
# limit"). By default Go collects each time the heap doubles from 4 MiB: six collections in
# one registry pull and run of a small image, whose code TCG translates on every boot; with
# the limit, none, and podman pulls and starts the container about 0.2 s sooner (measured,
# 5 interleaved pairs). Below 512 MiB of RAM, or when the kernel command line sets GOGC or
# GOMEMLIMIT (the kernel hands name=value words to /init's environment), Go's defaults stay.
# Containers do not inherit it: podman gives them the environment of their image and -e.
b2c_go_memory() {
    local key kib='' _
    [ -z "${GOGC+set}${GOMEMLIMIT+set}" ] && [ -r "$B2C_ROOT/proc/meminfo" ] || return 0
    while read -r key kib _; do
        [ "$key" != MemTotal: ] || break
        kib=''
    done <"$B2C_ROOT/proc/meminfo"
    case $kib in '' | *[!0-9]*) return 0 ;; esac
    kib=$((kib / 16))
    [ "$kib" -ge $((32 * 1024)) ] || return 0
    [ "$kib" -le $((128 * 1024)) ] || kib=$((128 * 1024))
    GOGC=off GOMEMLIMIT=$((kib / 1024))MiB
    export GOGC GOMEMLIMIT
    b2c_log "podman's Go runtime collects garbage only near GOMEMLIMIT=$GOMEMLIMIT (GOGC=off)"
}

# b2c_crun_read_only: run crun from a read-only mount of a ramfs copy of itself (bound over
# /usr/bin/crun). Against CVE-2019-5736, crun re-executes itself from a sealed copy unless
# /proc/self/exe is a sealed memfd or sits on a read-only mount; a file that answers
# F_GET_SEALS without being a sealed memfd is never trusted (is_self_cloned() in crun's
# src/libcrun/cloned_binary.c). The initramfs is tmpfs, whose files answer F_GET_SEALS, so
# every crun call (create, start, delete) would execute crun three times and copy it into
# a memfd, whose fresh pages TCG translates anew: 50-80 ms a call. ramfs files do not
# answer F_GET_SEALS. A failure costs only that time: one warning, and crun stays as it is.
b2c_crun_read_only() {
    local dir=$B2C_ROOT$B2C_STATE/crun crun=$B2C_ROOT/usr/bin/crun
    if ! b2c_mkdirs "$dir" || ! mount -t ramfs -o mode=0755 ramfs "$dir"; then
        b2c_warn "could not mount a ramfs for crun: every crun call copies crun first"
        return 0
    fi
    if ! { cp -p "$crun" "$dir/crun" && mount --bind "$dir/crun" "$crun"; }; then
        b2c_warn "could not put crun on a ramfs: every crun call copies crun first"
    elif mount -o remount,bind,ro "$crun"; then
        # The ramfs stays mounted on $dir as well: unmounting it would fork once more.
        return 0
    else
        b2c_warn "could not make crun's mount read-only: every crun call re-executes crun"
    fi
    # On a failure, the ramfs's own mount point goes (a bound copy keeps the ramfs).
    umount "$dir"
}

# b2c_podman_scan ARGS...: find the image among podman create's ARGS: the first word that is
# neither an option nor an option's value. Sets B2C_SCAN_IMAGE (empty: none), B2C_SCAN_AT
# (its position, from 1) and B2C_SCAN_AUTH (1 if --creds or --authfile is given). The flags that take no value are podman-create(1)'s (5.x);
# any other option takes one, in the next word unless it is written --flag=value or -fVALUE.
b2c_podman_scan() {
    local arg i=0 take=0 letters
    B2C_SCAN_IMAGE='' B2C_SCAN_AT=0 B2C_SCAN_AUTH=0
    for arg; do
        i=$((i + 1))
        case $take in
            1)
                take=0
                continue
                ;;
            2)
                # After "--", the next word is the image whatever it looks like.
                B2C_SCAN_IMAGE=$arg B2C_SCAN_AT=$i
                return 0
                ;;
        esac
        case $arg in
            --creds | --creds=* | --authfile | --authfile=*) B2C_SCAN_AUTH=1 ;;
        esac
        case $arg in
            --)
                take=2
                ;;
            --*=*) ;;
            --disable-content-trust | --env-host | --help | --http-proxy | --init | --interactive | \
                --no-healthcheck | --no-hosts | --oom-kill-disable | --passwd | --privileged | \
                --publish-all | --quiet | --read-only | --read-only-tmpfs | --replace | --rm | \
                --rmi | --rootfs | --sig-proxy | --tls-verify | --tty | --detach) ;;
            --?*) take=1 ;;
            -?*)
                # Short flags may be grouped: -it, -ite VALUE, -eNAME=VALUE.
                letters=${arg#-}
                letters=${letters#"${letters%%[!itPqd]*}"}
                [ "${#letters}" = 1 ] && take=1
                ;;
            *)
                B2C_SCAN_IMAGE=$arg B2C_SCAN_AT=$i
                return 0
                ;;
        esac
    done
    return 0
}
