# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# common.sh: fixed paths, console logging, GitLab sections, small helpers.
#
# The console contract's lines (stamped log lines, "b2c: error:"/"b2c: warning:", section
# markers, hence "Execution is over, pipeline status: N") start with $B2C_TAG: empty on a
# bare-metal console, "[b2c:NONCE] " when `b2c-builder run` gave a nonce (job.sh).
#
# Every function of init/ can be sourced and run on a host under busybox sh: all file
# paths go through $B2C_ROOT (empty in the image), real binaries that busybox applets would
# shadow are called through B2C_* path variables, and tests reassign both after sourcing.

# No pathname expansion anywhere: command-line values are never globbed.
set -f

B2C_NL='
'
# The kernel's isspace(): ASCII white space plus Latin-1's non-breaking space.
B2C_WS=$(printf ' \t\n\v\f\r\240')
# The largest b2c.swap accepted: 1 PiB.
B2C_MAX_SIZE=1125899906842624

# Fixed settings. They are set here, never taken from the environment: the kernel turns
# unknown "name=value" parameters into environment variables of /init.
b2c_defaults() {
    B2C_ROOT=
    B2C_STATE=/run/b2c
    # The job of `b2c-builder run`, from an extra initrd (see job.sh).
    B2C_JOB=/etc/b2c/job
    # Debian's rdate (SNTP with -n), not busybox's applet of the same name.
    B2C_RDATE=/usr/sbin/rdate
    [ -x "$B2C_RDATE" ] || B2C_RDATE=/usr/bin/rdate
    B2C_MKFS_EXT4=/usr/sbin/mkfs.ext4
    B2C_SFDISK=/usr/sbin/sfdisk
    B2C_UDHCPC_SCRIPT=/etc/udhcpc/default.script
    B2C_CACHE_LABEL=B2C_CACHE
    B2C_CACHE_MNT=/storage
    B2C_NTP_POOL=pool.ntp.org
    B2C_WAIT_SECS=10
    # Transient podman failures (see podman.sh): attempts, and the cap of the doubling delay.
    B2C_PULL_ATTEMPTS=3
    B2C_RETRY_MAX_DELAY=30
    # b2c.cache_evict=unused evicts before pulling until this share of the cache is free.
    B2C_CACHE_FLOOR_PCT=20
    B2C_HALT_LOOP=1
    B2C_SECTION=
    # Values the console must never show (secrets.sh), one a line.
    B2C_SECRETS=
    # The host name of ip=, when /init applies it (network.sh).
    B2C_IP_HOSTNAME=
    # Prefix of the console contract's lines: "[b2c:NONCE] " with the job's nonce (job.sh).
    B2C_TAG=
}

# Seconds since boot, in hundredths (integer arithmetic only).
b2c_uptime_cs() {
    local up int frac
    up=0
    { read -r up _ <"$B2C_ROOT/proc/uptime"; } 2>/dev/null
    int=${up%%.*}
    frac=${up#"$int"}
    frac=${frac#.}00
    frac=${frac%"${frac#??}"}
    frac=${frac#0}
    case $int$frac in '' | *[!0-9]*) int=0 frac=0 ;; esac
    B2C_UPTIME_CS=$((int * 100 + frac))
}

b2c_stamp() {
    local up=0
    { read -r up _ <"$B2C_ROOT/proc/uptime"; } 2>/dev/null
    B2C_STAMP=$up
}

b2c_log() {
    b2c_stamp
    printf '%s[%s]: %s\n' "$B2C_TAG" "$B2C_STAMP" "$*"
}

# Errors and warnings are not stamped: CI log parsers match lines starting with these
# prefixes. An error closes the current (collapsed) section so that it stays visible.
b2c_warn() {
    printf '%sb2c: warning: %s\n' "$B2C_TAG" "$*"
}

b2c_error() {
    b2c_section_end
    printf '%sb2c: error: %s\n' "$B2C_TAG" "$*"
}

# b2c_epoch: B2C_EPOCH = seconds since the Epoch, for the section lines. The clock is read
# once (and once more after b2c_set_clock empties $B2C_STATE/epoch_base); then the uptime says
# how far from it we are, without a process: a fork costs milliseconds under TCG, and every
# section line needs the time. Up to a second behind the clock, like date +%s itself.
b2c_epoch() {
    local base='' rtc=$B2C_ROOT/sys/class/rtc/rtc0 hctosys=''
    b2c_uptime_cs
    { read -r base <"$B2C_ROOT$B2C_STATE/epoch_base"; } 2>/dev/null
    case $base in
        '' | *[!0-9-]* | -)
            # The first time, when the kernel set the clock from rtc0 (its hctosys says 1),
            # rtc0's since_epoch is what date +%s says, read without a process. Else, and
            # once b2c_set_clock has set the clock (epoch_base emptied), date(1).
            if [ ! -e "$B2C_ROOT$B2C_STATE/epoch_base" ]; then
                { read -r hctosys <"$rtc/hctosys" && [ "$hctosys" = 1 ] &&
                    read -r base <"$rtc/since_epoch"; } 2>/dev/null || base=''
            fi
            case $base in '' | *[!0-9]*) base=$(date +%s 2>/dev/null) || base=0 ;; esac
            case $base in '' | *[!0-9]*) base=0 ;; esac
            base=$((base * 100 - B2C_UPTIME_CS))
            b2c_state_set epoch_base "$base" 2>/dev/null
            ;;
    esac
    B2C_EPOCH=$(((base + B2C_UPTIME_CS) / 100))
}

# b2c_section NAME TITLE [open]: start a GitLab collapsible section (collapsed unless "open").
b2c_section() {
    local flags='[collapsed=true]'
    b2c_section_end
    [ "${3:-}" = open ] && flags=
    b2c_epoch
    B2C_SECTION=$1
    # Recorded so that PID 1 can close it if the subshell running b2c_main dies in it.
    b2c_state_set section "$1" 2>/dev/null
    printf '%s\033[0Ksection_start:%s:%s%s\r\033[0K%s\n' "$B2C_TAG" "$B2C_EPOCH" "$1" "$flags" "$2"
}

b2c_section_end() {
    [ -n "$B2C_SECTION" ] || return 0
    b2c_epoch
    printf '%s\033[0Ksection_end:%s:%s\r\033[0K\n' "$B2C_TAG" "$B2C_EPOCH" "$B2C_SECTION"
    B2C_SECTION=
    b2c_state_set section "" 2>/dev/null
}

# b2c_mkdirs DIR...: mkdir -p the DIRs that do not exist yet, in one call, and none when they
# all do: each command that is not a shell builtin forks a process (a few ms under TCG).
b2c_mkdirs() {
    local dir missing=0
    for dir; do
        [ -d "$dir" ] || missing=1
    done
    [ "$missing" = 0 ] || mkdir -p "$@"
}

# b2c_read_file FILE: B2C_TEXT = the exact contents (trailing newlines included), up to a
# NUL byte if it has one (a shell variable cannot hold it); returns 1 if FILE is not a
# readable file. busybox ash's read, a builtin: $(cat FILE) forked twice, 5-7 ms under TCG,
# for /proc/cmdline, the job's command line and each argument of the job's containers.
b2c_read_file() {
    B2C_TEXT=''
    [ -f "$1" ] && [ -r "$1" ] || return 1
    # read -d '' ends at a NUL byte or at the end of the file (status 1: always, then).
    # shellcheck disable=SC3045 # busybox ash's read takes -d
    IFS= read -r -d '' B2C_TEXT <"$1" 2>/dev/null
    return 0
}

# b2c_wait_for PATH [SECONDS]: wait for PATH to exist, polling every half second.
b2c_wait_for() {
    local deadline
    [ -e "$1" ] && return 0
    b2c_uptime_cs
    deadline=$((B2C_UPTIME_CS + ${2:-$B2C_WAIT_SECS} * 100))
    while [ ! -e "$1" ]; do
        b2c_uptime_cs
        [ "$B2C_UPTIME_CS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
    return 0
}

# b2c_state_set NAME VALUE / b2c_state_get NAME DEFAULT (-> B2C_VALUE): small files in
# $B2C_STATE that survive the subshell running the main flow.
b2c_state_set() {
    b2c_mkdirs "$B2C_ROOT$B2C_STATE" &&
        printf '%s\n' "$2" >"$B2C_ROOT$B2C_STATE/$1"
}

b2c_state_get() {
    B2C_VALUE=$2
    [ -f "$B2C_ROOT$B2C_STATE/$1" ] || return 1
    { read -r B2C_VALUE <"$B2C_ROOT$B2C_STATE/$1"; } 2>/dev/null || B2C_VALUE=$2
}

# b2c_state_add NAME LINE: append a line (mount points to undo, ...).
b2c_state_add() {
    mkdir -p "$B2C_ROOT$B2C_STATE" && printf '%s\n' "$2" >>"$B2C_ROOT$B2C_STATE/$1"
}

# b2c_list_dir DIR: B2C_LIST = the names in DIR, sorted, space-separated.
b2c_list_dir() {
    local path
    B2C_LIST=
    set +f
    for path in "$1"/*; do
        [ -e "$path" ] || [ -L "$path" ] || continue
        B2C_LIST="$B2C_LIST ${path##*/}"
    done
    set -f
    B2C_LIST=${B2C_LIST# }
}
