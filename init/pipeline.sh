# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# pipeline.sh: services, the b2c.container pipeline, post containers, cleanup.
#
# Each container runs with one podman run: podman writes the container's id to a FIFO (its
# --cidfile) as soon as it has created it, which ends the pull section and opens the run
# section before the container can print (b2c_direct_run). When podman cannot create the
# container, or for what podman run cannot do here (-i, --creds, secrets to mask in podman's
# messages), the container is created with podman create (pulling; a transient failure is
# retried a bounded number of times, see podman.sh), then run attached with podman start.
# Either way a failure to pull is never mistaken for the container's status.

# b2c_save_status: make the status visible to the shutdown path (see main.sh).
b2c_save_status() {
    b2c_state_set status "$B2C_PIPELINE_STATUS"
    b2c_state_set failed_by "$B2C_PIPELINE_FAILED_BY"
    b2c_state_set shutdown_mode "$B2C_PIPELINE_SHUTDOWN_MODE"
}

# b2c_fail STATUS WHAT: record the first failure of the boot.
b2c_fail() {
    if [ "$B2C_PIPELINE_STATUS" = 0 ]; then
        B2C_PIPELINE_STATUS=$1
        B2C_PIPELINE_FAILED_BY=$2
    fi
    b2c_save_status
}

# b2c_container_create SPEC: podman create with the pipeline's defaults, then the words of
# SPEC (split with quotes, never evaluated). Sets B2C_CID; on a failure, an error line with
# podman's message, and returns podman's status.
b2c_container_create() {
    local status
    b2c_spec_argv_dir "$1"
    b2c_with_words "$B2C_SPEC_REST" b2c_with_argv_dir "$B2C_ARGV_DIR" b2c_create_argv
    status=$?
    [ "$status" = 0 ] && return 0
    b2c_error "could not pull or create the container ($B2C_PODMAN_FAILURE): $B2C_SPEC_TITLE"
    return "$status"
}

# b2c_create_argv ARGS...: podman create ARGS with the pipeline's defaults. With --creds or
# --authfile among the options (podman create has no --creds), the image is pulled first
# with them, then created with --pull=never. Sets B2C_CID.
b2c_create_argv() {
    B2C_CID=
    B2C_PODMAN_FAILURE=
    b2c_podman_scan "$@"
    if [ "$B2C_SCAN_AUTH" = 1 ] && [ -n "$B2C_SCAN_IMAGE" ]; then
        b2c_pull_for "$@" || return
        b2c_create_for "$@" || return
    else
        b2c_roomy create create --pull=always "$@" || return
    fi
    B2C_CID=$B2C_PODMAN_OUT
    if [ -n "$B2C_CID" ]; then
        b2c_cache_used "$B2C_CID"
        return 0
    fi
    B2C_PODMAN_FAILURE="podman create printed no container id"
    return 125
}

# b2c_roomy WHAT ARGS...: b2c_podman WHAT [defaults] ARGS; when the storage is full, images
# this boot does not use are evicted and it is tried once more (store.sh). ARGS start with
# podman's subcommand; "create --pull=MODE" gets the pipeline's options and environment.
b2c_roomy() {
    local status err=$B2C_ROOT$B2C_STATE/podman.err
    b2c_podman_defaults "$@" && return 0
    status=$?
    b2c_no_space "$err" || return "$status"
    if b2c_cache_evict all; then
        b2c_log "Trying once more after the eviction"
        b2c_podman_defaults "$@" && return 0
        status=$?
        b2c_no_space "$err" || return "$status"
    fi
    b2c_no_space_hint
    return "$status"
}

b2c_podman_defaults() {
    local what=$1
    [ "$2" = create ] || {
        shift
        b2c_podman "$what" "$@"
        return
    }
    shift
    b2c_with_defaults b2c_podman "$what" "$@"
}

# b2c_with_defaults CMD WHAT SUBCOMMAND PULL ARGS...: CMD WHAT SUBCOMMAND with the pipeline's
# options and environment, PULL (--pull=MODE), then ARGS.
b2c_with_defaults() {
    local cmd=$1 what=$2 sub=$3 pull=$4
    shift 4
    "$cmd" "$what" "$sub" --rm --privileged --network=host "$pull" \
        -e "B2C_PIPELINE_STATUS=$B2C_PIPELINE_STATUS" \
        -e "B2C_PIPELINE_FAILED_BY=$B2C_PIPELINE_FAILED_BY" \
        -e "B2C_PIPELINE_PREV_CONTAINER=$B2C_PIPELINE_PREV_CONTAINER" \
        -e "B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE=$B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE" \
        -e "B2C_PIPELINE_SHUTDOWN_MODE=$B2C_PIPELINE_SHUTDOWN_MODE" "$@"
}

# b2c_podman_direct WHAT ARGS...: podman ARGS, its output straight to the console (WHAT is
# b2c_podman's, unused: nothing is retried). conmon leaves out podman's exit command
# (init/conmon-no-exit-command): the attached podman run --rm cleans up and removes the
# container itself, and would otherwise wait for the exit command's container lock.
b2c_podman_direct() {
    shift
    B2C_CONMON_NO_EXIT_COMMAND=1 podman "$@"
}

# What b2c_direct_run's FIFO says when podman run exits without having written a container
# id there: 64 bytes, as an id, but never hexadecimal.
B2C_NO_CONTAINER=no-container-was-created-by-podman-run--------------------------

# b2c_direct_run KIND N ARGS...: podman run ARGS attached, with the pipeline's defaults, in
# the pull section b2c_container_run opened; podman gives the container's id through a FIFO
# (--cidfile) as it creates it, and the run section opens then: the container's output comes
# later (podman still mounts it, writes its OCI spec and starts conmon and crun). Sets
# B2C_CID and B2C_DIRECT_STATUS (the container's exit status) and returns 0 once the
# container ran; returns 1, having run nothing, when podman run cannot do it (see
# b2c_direct_eligible), could not create it (its messages went to the console) or the FIFO
# cannot be made: the caller then creates it with podman create, which retries what can pass
# and reports podman's message.
b2c_direct_run() {
    local kind=$1 n=$2 fifo=$B2C_ROOT$B2C_STATE/cid.fifo rc=$B2C_ROOT$B2C_STATE/run.rc pid cid
    shift 2
    B2C_CID='' B2C_DIRECT_STATUS=125
    b2c_direct_eligible "$@" || return 1
    if [ -e "$fifo" ] || [ -e "$rc" ]; then
        rm -f "$fifo" "$rc"
    fi
    mkfifo "$fifo" 2>/dev/null || return 1
    # Held open for reading and writing: opening it never blocks, and the end-of-run marker
    # always has a reader, even after the id was read.
    exec 5<>"$fifo"
    # Through cat, one pipe for both streams: their order is kept, and podman's pull messages
    # are plain lines, as podman create's were (on a terminal they are progress bars, redrawn
    # every 0.15 s for the whole pull).
    {
        {
            b2c_with_defaults b2c_podman_direct run run --pull=always \
                --cidfile="${fifo#"$B2C_ROOT"}" "$@" </dev/null 2>&1
            echo "$?" >"$rc"
        } | cat
        printf '%s' "$B2C_NO_CONTAINER" >"$fifo"
    } 5<&- &
    pid=$!
    # 64 bytes: the id, or the marker. The read builtin, not $(head -c 64): no process.
    # shellcheck disable=SC3045 # busybox ash's read takes -n
    IFS= read -r -n 64 cid <&5 || cid=''
    case $cid in
        *[!0-9a-f]* | '') ;; # the end-of-run marker: no container
        *)
            B2C_CID=$cid
            # The section first: the container may print while the cache records its image.
            b2c_section "${kind}_$n" "Run $kind $n: $B2C_SPEC_TITLE" open
            b2c_cache_used "$cid"
            ;;
    esac
    wait "$pid"
    exec 5<&-
    rm -f "$fifo"
    [ -n "$B2C_CID" ] || return 1
    read -r B2C_DIRECT_STATUS <"$rc" 2>/dev/null || B2C_DIRECT_STATUS=125
    return 0
}

# b2c_direct_eligible ARGS...: podman run can run the container of podman create's ARGS:
# no --creds/--authfile (pulled first, see b2c_create_argv) and no word that could be -i
# (its stdin is known only after podman create); and, for the whole boot, no secret that
# podman's messages could show (podman run's output is not masked: it is the container's).
b2c_direct_eligible() {
    [ -z "${B2C_SECRETS:-}" ] || return 1
    b2c_may_be_interactive "$@" && return 1
    b2c_podman_scan "$@"
    [ "$B2C_SCAN_AUTH" = 0 ]
}

# b2c_pull_for ARGS...: podman pull of the image of create's ARGS (see b2c_podman_scan), with
# the options of ARGS that concern pulling: --creds, --authfile, --tls-verify, --arch, --os,
# --variant, --platform, --cert-dir.
b2c_pull_for() {
    local arg n=0 keep=0
    for arg; do
        shift
        n=$((n + 1))
        [ "$n" -lt "$B2C_SCAN_AT" ] || continue
        if [ "$keep" = 1 ]; then
            keep=0
            set -- "$@" "$arg"
            continue
        fi
        case $arg in
            --creds | --authfile | --arch | --os | --variant | --platform | --cert-dir)
                set -- "$@" "$arg"
                keep=1
                ;;
            --creds=* | --authfile=* | --arch=* | --os=* | --variant=* | --platform=* | \
                --cert-dir=* | --tls-verify | --tls-verify=*)
                set -- "$@" "$arg"
                ;;
        esac
    done
    b2c_roomy pull pull "$@" "$B2C_SCAN_IMAGE"
}

# b2c_create_for ARGS...: podman create ARGS without --creds and --pull, with --pull=never:
# b2c_pull_for pulled the image.
b2c_create_for() {
    local arg n=0 drop=0
    for arg; do
        shift
        n=$((n + 1))
        if [ "$drop" = 1 ]; then
            drop=0
            continue
        fi
        if [ "$n" -lt "$B2C_SCAN_AT" ]; then
            case $arg in
                --creds | --pull | --cert-dir)
                    drop=1
                    continue
                    ;;
                --creds=* | --pull=* | --cert-dir=*) continue ;;
            esac
        fi
        set -- "$@" "$arg"
    done
    b2c_roomy create create --pull=never "$@"
}

# b2c_may_be_interactive ARG...: true if one of the words could be podman's -i flag
# (-i, --interactive[=...], or a group of short flags holding an i, such as -ti).
b2c_may_be_interactive() {
    local word
    for word in "$@"; do
        case $word in
            -i* | --interactive | --interactive=* | -[!-]*i*) return 0 ;;
        esac
    done
    return 1
}

# b2c_container_run KIND N ARGS: run one container attached (podman run, else podman create
# then podman start). Returns its exit status (or podman's, if it could not be created).
b2c_container_run() {
    local status=0 interactive title
    b2c_spec_argv_dir "$3"
    title=$B2C_SPEC_TITLE
    b2c_section "pull_$1_$2" "Pull and create $1 $2: $title"
    # Its devices: the drivers loading in the background (init/modules.sh).
    b2c_modules_settle
    if b2c_with_words "$B2C_SPEC_REST" b2c_with_argv_dir "$B2C_ARGV_DIR" b2c_direct_run "$1" "$2"; then
        status=$B2C_DIRECT_STATUS
    else
        b2c_container_create "$3" || return
        b2c_section "$1_$2" "Run $1 $2: $title" open
        # Only -i/--interactive opens stdin: without a word that could be it, the answer is
        # known and a podman call (about a second under TCG) is saved.
        interactive=false
        if b2c_with_words "$B2C_SPEC_REST" b2c_with_argv_dir "$B2C_ARGV_DIR" b2c_may_be_interactive; then
            interactive=$(podman container inspect --format '{{.Config.OpenStdin}}' "$B2C_CID" 2>/dev/null)
        fi
        if [ "$interactive" = true ]; then
            podman start --attach --interactive "$B2C_CID" || status=$?
        else
            podman start --attach "$B2C_CID" </dev/null || status=$?
        fi
    fi
    b2c_section_end
    b2c_log "The $1 $2 exited with status $status"
    B2C_PIPELINE_PREV_CONTAINER=$title
    B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE=$status
    # A container calling reboot(2) kills its PID 1 with SIGHUP (129), poweroff with
    # SIGINT (130): honour the request as the final action.
    case $status in
        129) B2C_PIPELINE_SHUTDOWN_MODE=reboot ;;
        130) B2C_PIPELINE_SHUTDOWN_MODE=poweroff ;;
    esac
    return "$status"
}

b2c_start_services() {
    local spec n=0 status old_ifs=$IFS
    B2C_SERVICE_IDS=
    IFS=$B2C_NL
    for spec in $B2C_SERVICE; do
        IFS=$old_ifs
        n=$((n + 1))
        b2c_spec_argv_dir "$spec"
        b2c_section "service_$n" "Start service $n: $B2C_SPEC_TITLE"
        b2c_container_create "$spec" || {
            status=$?
            b2c_fail "$status" "service: $B2C_SPEC_TITLE"
            return 1
        }
        b2c_modules_settle
        podman start "$B2C_CID" >/dev/null || {
            status=$?
            b2c_error "could not start the service $n: $B2C_SPEC_TITLE"
            b2c_fail "$status" "service: $B2C_SPEC_TITLE"
            return 1
        }
        B2C_SERVICE_IDS="$B2C_SERVICE_IDS $B2C_CID"
        b2c_log "Started the service $n"
    done
    IFS=$old_ifs
    return 0
}

b2c_stop_services() {
    local cid
    for cid in $B2C_SERVICE_IDS; do
        podman stop --time 10 "$cid" >/dev/null 2>&1 || b2c_warn "could not stop the service $cid"
    done
    B2C_SERVICE_IDS=
}

b2c_run_containers() {
    local spec n=0 status old_ifs=$IFS
    IFS=$B2C_NL
    for spec in $B2C_CONTAINER; do
        IFS=$old_ifs
        n=$((n + 1))
        status=0
        b2c_container_run container "$n" "$spec" || status=$?
        if [ "$status" != 0 ]; then
            b2c_fail "$status" "$B2C_SPEC_TITLE"
            if [ "$B2C_PIPEFAIL" = 1 ]; then
                b2c_log "The container $n failed with status $status: stopping the pipeline (b2c.pipefail)"
                break
            fi
            b2c_log "The container $n failed with status $status: going on"
        fi
        b2c_save_status
    done
    IFS=$old_ifs
}

b2c_run_post_containers() {
    local spec n=0 old_ifs=$IFS
    IFS=$B2C_NL
    for spec in $B2C_POST_CONTAINER; do
        IFS=$old_ifs
        n=$((n + 1))
        b2c_container_run post_container "$n" "$spec" || :
        b2c_save_status
    done
    IFS=$old_ifs
}

# b2c_cleanup_containers: on a cache, no container left behind (rm --force stops a running
# one first, SIGKILL after --time seconds), and no dangling image. Two podman calls: about
# a second each under TCG. Returns 1 if one of them failed (or timed out).
b2c_cleanup_containers() {
    local status=0
    timeout 40 podman container rm --all --force --time 5 >/dev/null 2>&1 || status=1
    timeout 30 podman image prune --force >/dev/null 2>&1 || status=1
    return "$status"
}

# b2c_run_pipeline: volumes, services, the pipeline, post containers, then clean up.
b2c_run_pipeline() {
    B2C_PIPELINE_FAILED_BY='' B2C_PIPELINE_PREV_CONTAINER='' B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE=''
    B2C_SERVICE_IDS=
    if [ -z "$B2C_CONTAINER$B2C_POST_CONTAINER$B2C_SERVICE" ]; then
        b2c_warn "no b2c.container was given: nothing to run"
        return 0
    fi
    if b2c_setup_volumes; then
        b2c_cache_prepare
        if b2c_start_services; then
            b2c_run_containers
        fi
        b2c_run_post_containers
        b2c_stop_services
    else
        b2c_fail 1 "volume setup"
    fi
    b2c_section cleanup "Clean up the containers and volumes"
    # Without a cache device podman's storage is a tmpfs that the power-off discards: the
    # containers ran with --rm and the services were stopped, nothing else is worth a podman
    # call (about a second each under TCG).
    if [ "$B2C_CACHE_DEVICE" = none ]; then
        b2c_log "No cache device: podman's storage goes away with the power-off"
    elif b2c_cleanup_containers; then
        B2C_CLEANED_UP=1
    fi
    b2c_release_volumes
    b2c_store_close
    b2c_save_status
}
