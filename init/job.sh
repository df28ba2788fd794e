# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# job.sh: the job that `b2c-builder run` delivers in an extra initrd, under $B2C_JOB:
#
#   cmdline              more b2c options, parsed after /proc/cmdline (no length limit)
#   share/N/tag          the 9p mount tag of a host folder shared by QEMU (N = 1, 2...)
#   share/N/path         where to mount it, byte for byte
#   container/N/0, 1...  the podman create arguments of a container, one file each, byte
#                        for byte (b2c.container=--b2c-argv-dir=$B2C_JOB/container/N)
#   container/N/title    how the console names that container
#   image/...            local images (OCI layouts and archives) the arguments refer to
#
#   nonce                a per-boot secret: the console contract's tag (see b2c_job_nonce)
#
# Nothing in the job is evaluated as shell: files are read whole and passed as arguments.

# b2c_job_nonce: with the job's nonce, the init's contract lines start with "[b2c:NONCE] "
# (B2C_TAG), and `b2c-builder run` trusts only those: a container can print "Execution is
# over, pipeline status: 0" but cannot know the nonce, which the init reads and deletes
# before anything else runs and never exports.
# Why a tag and not a second serial port only the init writes to: bare-metal machines and
# arm64's virt board have one UART, GitLab's log needs the sections inline with the
# containers' output, and a privileged container could open a second port's device node too.
b2c_job_nonce() {
    local file=$B2C_ROOT$B2C_JOB/nonce nonce=''
    [ -f "$file" ] || return 0
    { read -r nonce <"$file"; } 2>/dev/null
    # Emptied, not removed: the same for anything that reads it later, and no rm process.
    : >"$file"
    case $nonce in
        *[!0-9a-f]* | '') return 0 ;;
    esac
    [ "${#nonce}" -ge 16 ] || return 0
    B2C_TAG="[b2c:$nonce] "
}

# b2c_job_parse: parse $B2C_JOB/cmdline, if the job has one. Returns 1 if it is invalid.
b2c_job_parse() {
    [ -f "$B2C_ROOT$B2C_JOB/cmdline" ] || return 0
    b2c_read_file "$B2C_ROOT$B2C_JOB/cmdline" || {
        b2c_error "could not read the job's command line $B2C_JOB/cmdline"
        return 1
    }
    b2c_parse_cmdline "$B2C_TEXT" job
}

# b2c_job_mount_shares: mount the job's 9p shares. Returns 1 if one cannot be mounted.
b2c_job_mount_shares() {
    local n=1 dir tag path
    while [ -d "$B2C_ROOT$B2C_JOB/share/$n" ]; do
        dir=$B2C_ROOT$B2C_JOB/share/$n
        if ! b2c_read_file "$dir/tag"; then
            b2c_error "the job's share $n has no tag"
            return 1
        fi
        tag=$B2C_TEXT
        if ! b2c_read_file "$dir/path"; then
            b2c_error "the job's share $n has no path"
            return 1
        fi
        path=$B2C_TEXT
        if ! b2c_mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none \
            "$tag" "$B2C_ROOT$path"; then
            b2c_error "could not mount the shared folder $path (9p tag $tag): the kernel needs CONFIG_9P_FS and CONFIG_NET_9P_VIRTIO"
            return 1
        fi
        b2c_log "Mounted the shared folder $path"
        n=$((n + 1))
    done
    return 0
}

# b2c_with_argv_dir DIR CMD [ARG...]: run CMD ARG... followed by the contents of DIR/0,
# DIR/1... as one argument each, byte for byte (trailing newlines included).
b2c_with_argv_dir() {
    local dir=$1 i=0
    shift
    while [ -f "$dir/$i" ]; do
        b2c_read_file "$dir/$i" || return 125
        set -- "$@" "$B2C_TEXT"
        i=$((i + 1))
    done
    "$@"
}

# b2c_spec_argv_dir SPEC: a spec whose first word is --b2c-argv-dir=DIR takes the rest of
# its arguments from DIR (see b2c_with_argv_dir). Sets B2C_ARGV_DIR (empty: none),
# B2C_SPEC_REST (the other words) and B2C_SPEC_TITLE (how the console names the container,
# secrets masked: see secrets.sh).
b2c_spec_argv_dir() {
    local first
    B2C_ARGV_DIR='' B2C_SPEC_REST=$1 B2C_SPEC_TITLE=$1
    case $1 in
        --b2c-argv-dir=*)
            first=${1%%["$B2C_WS"]*}
            B2C_SPEC_REST=${1#"$first"}
            B2C_ARGV_DIR=$B2C_ROOT${first#--b2c-argv-dir=}
            if [ -f "$B2C_ARGV_DIR/title" ] && b2c_read_file "$B2C_ARGV_DIR/title"; then
                B2C_SPEC_TITLE=${B2C_TEXT%"$B2C_NL"}
            fi
            ;;
    esac
    b2c_mask_spec "$B2C_SPEC_TITLE"
    B2C_SPEC_TITLE=$B2C_MASKED
}
