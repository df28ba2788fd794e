# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# cmdline.sh: the kernel's command-line splitting rules, option values, argument splitting.
#
# Nothing here evaluates command-line content as shell: values are only ever compared
# with patterns, stored in variables and passed as single arguments to commands.

# b2c_next_arg: take the next parameter off $B2C_REST, as the kernel's next_arg() does.
# Sets B2C_PARAM, B2C_HASVAL (0: no '=') and B2C_VAL. Returns 1 when nothing is left.
b2c_next_arg() {
    local quoted=0 in_quote=0 token='' seg head stripped=0
    B2C_REST=${B2C_REST#"${B2C_REST%%[!"$B2C_WS"]*}"}
    [ -n "$B2C_REST" ] || return 1
    case $B2C_REST in
        \"*)
            quoted=1 in_quote=1
            B2C_REST=${B2C_REST#?}
            ;;
    esac
    while :; do
        seg=${B2C_REST%%[\""$B2C_WS"]*}
        token=$token$seg
        B2C_REST=${B2C_REST#"$seg"}
        case $B2C_REST in
            '') break ;;
            \"*)
                in_quote=$((1 - in_quote))
                token=$token\"
                B2C_REST=${B2C_REST#?}
                ;;
            *)
                # White space: part of the token inside quotes, its end outside.
                if [ "$in_quote" = 1 ]; then
                    token=$token${B2C_REST%"${B2C_REST#?}"}
                    B2C_REST=${B2C_REST#?}
                else
                    B2C_REST=${B2C_REST#?}
                    break
                fi
                ;;
        esac
    done
    # The first '=' after the first character separates the name from the value.
    head=${token#?}
    case $head in
        *=*)
            B2C_PARAM=${token%"$head"}${head%%=*}
            B2C_VAL=${head#*=}
            B2C_HASVAL=1
            ;;
        *)
            B2C_PARAM=$token B2C_VAL='' B2C_HASVAL=0
            ;;
    esac
    # Quotes around the value, then around the whole parameter, are removed.
    if [ "$B2C_HASVAL" = 1 ]; then
        case $B2C_VAL in
            \"*)
                B2C_VAL=${B2C_VAL#?}
                case $token in *\") stripped=1 B2C_VAL=${B2C_VAL%\"} ;; esac
                ;;
        esac
    fi
    if [ "$quoted" = 1 ] && [ "$stripped" = 0 ]; then
        case $token in
            *\")
                if [ "$B2C_HASVAL" = 1 ]; then
                    B2C_VAL=${B2C_VAL%\"}
                else
                    B2C_PARAM=${B2C_PARAM%\"}
                fi
                ;;
        esac
    fi
    return 0
}

# b2c_parse_cmdline TEXT SOURCE: apply every parameter of TEXT (SOURCE: default, cmdline or
# extra). Returns 1 if any value was malformed (each one gets a "b2c: error:" line).
b2c_parse_cmdline() {
    local status=0
    B2C_REST=$1
    while b2c_next_arg; do
        b2c_place_param "$B2C_PARAM" "$2" || {
            status=1
            continue
        }
        b2c_apply_option "$B2C_PARAM" "$B2C_HASVAL" "$B2C_VAL" "$2" || status=1
    done
    return $status
}

# b2c_place_param NAME SOURCE: a parameter that is not a b2c option cannot be placed in the
# extra command line (it only carries b2c options): an error, never a silent drop. On the
# kernel's command line, other parameters are the kernel's; one that holds "b2c." after
# stray bytes (a byte-order mark, a non-breaking space's first byte) gets a warning.
b2c_place_param() {
    case $1 in
        b2c.* | ip | module_blacklist) return 0 ;;
    esac
    b2c_show_bytes "$1"
    if [ "$2" = extra ]; then
        b2c_error "the extra command line holds '$B2C_SHOWN', which is not a b2c option"
        return 1
    fi
    case $1 in
        *b2c.*) b2c_warn "'$B2C_SHOWN' is not a b2c option: stray bytes before its name? (ignored)" ;;
    esac
    return 0
}

# b2c_show_bytes TEXT: B2C_SHOWN = TEXT for the console: as is when it is printable ASCII,
# else its bytes in hexadecimal (the first 24).
b2c_show_bytes() {
    case $1 in
        *[!\ -~]*)
            B2C_SHOWN=$(printf '%s' "$1" | head -c 24 | od -An -tx1 | tr -s ' \n' '  ')
            B2C_SHOWN="bytes${B2C_SHOWN% }"
            [ "${#1}" -le 24 ] || B2C_SHOWN="$B2C_SHOWN ..."
            ;;
        *) B2C_SHOWN=$1 ;;
    esac
}

# b2c_extra_text FILE: B2C_TEXT = the extra command line in FILE, ready for the kernel's
# splitting rules: a leading UTF-8 byte-order mark is dropped (CR is white space already).
# Returns 1 after an error line for a byte nothing can place: NUL, a control character
# other than white space, a byte-order mark elsewhere.
b2c_extra_text() {
    local bom ctrl head lead=0
    bom=$(printf '\357\273\277')
    ctrl=$(printf '\001\002\003\004\005\006\007\010\016\017\020\021\022\023\024\025\026\027\030\031\032\033\034\035\036\037\177')
    if [ "$(tr -d '\000' <"$1" | wc -c)" != "$(wc -c <"$1")" ]; then
        b2c_error "the extra command line holds a NUL byte"
        return 1
    fi
    b2c_read_file "$1" || return 1
    case $B2C_TEXT in "$bom"*) lead=3 ;; esac
    B2C_TEXT=${B2C_TEXT#"$bom"}
    case $B2C_TEXT in
        *"$bom"*)
            head=${B2C_TEXT%%"$bom"*}
            b2c_error "the extra command line holds a byte-order mark (ef bb bf) at byte $((lead + ${#head} + 1)), not at its start"
            return 1
            ;;
        *["$ctrl"]*)
            head=${B2C_TEXT%%["$ctrl"]*}
            ctrl=$(printf '%s' "${B2C_TEXT#"$head"}" | head -c 1 | od -An -tx1 | tr -d ' \n')
            b2c_error "the extra command line holds a control character (byte $ctrl) at byte $((lead + ${#head} + 1)): only printable text and white space can be placed"
            return 1
            ;;
    esac
    return 0
}

# b2c_too_late NAME SOURCE: options acting before b2c.extra_args_url is fetched.
b2c_too_late() {
    [ "$2" = extra ] || return 1
    b2c_warn "$1 in the extra command line comes too late to take effect (ignored)"
    return 0
}

# b2c_with_words STRING [CMD ARG...]: run CMD ARG... followed by the words of STRING.
# Words are split on white space; '...' and "..." group (quotes removed, adjacent parts
# joined); nothing is expanded and there are no escapes. Returns 2 on an unbalanced quote
# (B2C_SPLIT_ERROR says which), without running anything.
b2c_with_words() {
    local text=$1 rest=$1 word='' have=0 seg
    shift
    while :; do
        seg=${rest%%[\"\'\""$B2C_WS"]*}
        if [ -n "$seg" ]; then
            word=$word$seg have=1
            rest=${rest#"$seg"}
        fi
        case $rest in
            \'*)
                rest=${rest#?}
                case $rest in *\'*) ;; *)
                    B2C_SPLIT_ERROR="unbalanced ' quote"
                    return 2
                    ;;
                esac
                word=$word${rest%%\'*} have=1
                rest=${rest#*\'}
                ;;
            \"*)
                rest=${rest#?}
                case $rest in *\"*) ;; *)
                    B2C_SPLIT_ERROR="unbalanced \" quote"
                    return 2
                    ;;
                esac
                word=$word${rest%%\"*} have=1
                rest=${rest#*\"}
                ;;
            '')
                [ "$have" = 1 ] && set -- "$@" "$word"
                break
                ;;
            *)
                [ "$have" = 1 ] && set -- "$@" "$word"
                word='' have=0
                rest=${rest#?}
                ;;
        esac
    done
    "$@"
}

b2c_count_words() {
    B2C_NWORDS=$#
}

# --- values -------------------------------------------------------------------------------
# b2c_check KIND NAME HASVAL VALUE: validate a value; B2C_NORM = the value to store.
b2c_check() {
    B2C_NORM=$4
    if [ "$1" = flag ]; then
        b2c_valid_flag "$2" "$3" "$4"
        return
    fi
    if [ "$3" != 1 ]; then
        case $1 in kernel_ip | kernel_modules) B2C_NORM= && return 0 ;; esac
        b2c_error "$2: needs a value"
        return 1
    fi
    case $4 in *"$B2C_NL"*)
        b2c_error "$2: must not contain a newline"
        return 1
        ;;
    esac
    "b2c_valid_$1" "$2" "$4"
}

b2c_bad() {
    b2c_error "$1: $2"
    return 1
}

b2c_valid_flag() {
    [ "$2" = 1 ] || { B2C_NORM=1 && return 0; }
    case $3 in
        1 | yes | true | on) B2C_NORM=1 ;;
        0 | no | false | off) B2C_NORM=0 ;;
        *) b2c_bad "$1" "takes no value (or one of 1/0, yes/no, true/false, on/off), not '$3'" ;;
    esac
}

b2c_valid_seconds() {
    case $2 in
        '' | *[!0-9]*) ;;
        *) [ "${#2}" -le 9 ] && return 0 ;;
    esac
    b2c_bad "$1" "must be a whole number of seconds, not '$2'"
}

b2c_valid_size() {
    b2c_size_bytes "$2" && return 0
    b2c_bad "$1" "must be a size such as 4G, 512M or 1048576 (at most 1P), not '$2'"
}

# b2c_size_bytes SIZE: B2C_NORM = SIZE in bytes; returns 1 (silently) if it is not a size.
b2c_size_bytes() {
    local num suffix mult=1
    num=${1%%[!0-9]*}
    suffix=${1#"$num"}
    case $suffix in
        '') ;;
        [Kk] | [Kk]B | [Kk]iB) mult=1024 ;;
        [Mm] | [Mm]B | [Mm]iB) mult=1048576 ;;
        [Gg] | [Gg]B | [Gg]iB) mult=1073741824 ;;
        [Tt] | [Tt]B | [Tt]iB) mult=1099511627776 ;;
        *) num= ;;
    esac
    # At most 1 PiB (B2C_MAX_SIZE), which keeps the shell's 64-bit arithmetic exact.
    if [ -n "$num" ] && [ "${#num}" -le 16 ] && [ "$num" -le $((B2C_MAX_SIZE / mult)) ]; then
        B2C_NORM=$((num * mult))
        return 0
    fi
    return 1
}

b2c_valid_url() {
    local host
    case $2 in
        *[$B2C_WS]*) host= ;;
        http://*) host=${2#http://} ;;
        https://*) host=${2#https://} ;;
        *) host= ;;
    esac
    case $host in
        '' | /*)
            b2c_mask_urls "$2"
            b2c_bad "$1" "must be an http:// or https:// URL, not '$B2C_MASKED'"
            ;;
    esac
}

# b2c_is_hostname NAME: NAME starts with a letter or digit, has only letters, digits, '.' and
# '-', and at most 64 of them (HOST_NAME_MAX). B2C_HOSTNAME_RULE says it in the errors.
B2C_HOSTNAME_RULE="up to 64 letters, digits, '.' and '-', the first a letter or digit"
b2c_is_hostname() {
    case $1 in
        [A-Za-z0-9]*) case $1 in *[!A-Za-z0-9.-]*) return 1 ;; esac ;;
        *) return 1 ;;
    esac
    [ "${#1}" -le 64 ]
}

b2c_valid_hostname() {
    b2c_is_hostname "$2" || b2c_bad "$1" "must be a host name ($B2C_HOSTNAME_RULE), not '$2'"
}

b2c_valid_ntp_peer() {
    case $2 in
        '' | *[!A-Za-z0-9.:-]*) b2c_bad "$1" "must be none, auto or a host name or address, not '$2'" ;;
    esac
}

b2c_valid_cache_evict() {
    case $2 in
        unused | never | all) ;;
        *) b2c_bad "$1" "must be unused, never or all, not '$2'" ;;
    esac
}

# b2c_valid_swap NAME SIZE|/dev/NODE[,swappiness=N]: B2C_NORM has the size in bytes.
b2c_valid_swap() {
    local what=${2%%,*} rest='' param
    case $2 in *,*) rest=${2#*,}, ;; esac
    if b2c_is_dev_path "$what"; then
        :
    elif b2c_size_bytes "$what"; then
        what=$B2C_NORM
    else
        b2c_bad "$1" "must be a size such as 4G or a /dev/NODE, then [,swappiness=N], not '$2'"
        return
    fi
    while [ -n "$rest" ]; do
        param=${rest%%,*}
        rest=${rest#*,}
        case $param in
            swappiness=[0-9] | swappiness=[0-9][0-9] | swappiness=[0-9][0-9][0-9])
                [ "${param#swappiness=}" -le 200 ] && continue
                ;;
        esac
        b2c_bad "$1" "unknown or malformed parameter '$param' (swappiness=0-200)"
        return
    done
    B2C_NORM=$what${2#"${2%%,*}"}
}

# b2c_valid_storage NAME KEY=VALUE[,KEY=VALUE...]: containers-storage options.
b2c_valid_storage() {
    local rest=$2, param key value store
    while [ -n "$rest" ]; do
        param=${rest%%,*}
        rest=${rest#*,}
        key=${param%%=*}
        value=${param#*=}
        case $param in
            *=?*) ;;
            *) key= ;;
        esac
        case $key in
            '' | *[!A-Za-z0-9_.]* | .* | *. | *.*.*) key= ;;
        esac
        case $value in *[\"\\]*) key= ;; esac
        [ -n "$key" ] || {
            b2c_bad "$1" "KEY=VALUE[,KEY=VALUE...] without quotes or backslashes, not '$param'"
            return
        }
        [ "$key" = additionalimagestores ] || continue
        value=$value'|'
        while [ -n "$value" ]; do
            store=${value%%|*}
            value=${value#*|}
            case $store in
                /*) ;;
                *) b2c_is_name "$store" || {
                    b2c_bad "$1" "'$store' is neither a /PATH nor a b2c.filesystem name"
                    return
                } ;;
            esac
        done
    done
}

# b2c_valid_proxy NAME URL or http=URL,https=URL
b2c_valid_proxy() {
    local rest param
    case ${2%%://*} in
        *=*) ;;
        *)
            b2c_valid_url "$1" "$2"
            return
            ;;
    esac
    rest=$2,
    while [ -n "$rest" ]; do
        param=${rest%%,*}
        rest=${rest#*,}
        case $param in
            http=* | https=*) b2c_valid_url "$1" "${param#*=}" || return ;;
            *)
                b2c_bad "$1" "must be a URL or http=URL/https=URL, not '$param'"
                return
                ;;
        esac
    done
}

b2c_valid_network() {
    case $2 in
        auto | none) ;;
        *) b2c_bad "$1" "must be auto or none, not '$2'" ;;
    esac
}

b2c_is_name() {
    case $1 in '' | *[!A-Za-z0-9_-]*) return 1 ;; esac
    return 0
}

# b2c_are_names LIST: every comma-separated item of LIST is a name (none is empty).
b2c_are_names() {
    local rest=$1, item
    while [ -n "$rest" ]; do
        item=${rest%%,*}
        rest=${rest#*,}
        b2c_is_name "$item" || return 1
    done
}

b2c_valid_modules() {
    b2c_are_names "$2" ||
        b2c_bad "$1" "must be a comma-separated list of module names, not '$2'"
}

# auto or none alone, else module names (neither of those among them).
b2c_valid_device_drivers() {
    case ,$2, in
        ,auto, | ,none,) return 0 ;;
        *,auto,* | *,none,*) ;;
        *) b2c_are_names "$2" && return 0 ;;
    esac
    b2c_bad "$1" "must be auto, none or a comma-separated list of module names, not '$2'"
}

b2c_valid_podman_args() {
    b2c_with_words "$2" b2c_count_words || {
        b2c_mask_spec "$2"
        b2c_bad "$1" "$B2C_SPLIT_ERROR in: $B2C_MASKED"
        return
    }
    [ "$B2C_NWORDS" -gt 0 ] || b2c_bad "$1" "is empty"
}

b2c_valid_command() {
    b2c_valid_podman_args "$@"
}

# b2c_is_dev_path PATH: /dev/NODE, without ".." or unusual bytes.
b2c_is_dev_path() {
    case $1 in
        /dev/?*)
            case /${1#/dev/}/ in
                */../* | *[!A-Za-z0-9/_.:+@-]*) return 1 ;;
                *) return 0 ;;
            esac
            ;;
    esac
    return 1
}

b2c_valid_cache_device() {
    case $2 in
        none | auto | reset) return 0 ;;
        /dev/*) b2c_is_dev_path "$2" && return 0 ;;
        *) b2c_is_name "$2" && return 0 ;;
    esac
    b2c_bad "$1" "must be none, auto, reset, /dev/NODE or a b2c.filesystem name, not '$2'"
}

# b2c_is_ipv4 ADDR [cidr]
b2c_is_ipv4() {
    local rest=$1 octet count=0
    if [ "${2:-}" = cidr ]; then
        case $1 in */?*) ;; *) return 1 ;; esac
        octet=${1##*/}
        case $octet in *[!0-9]* | ???*) return 1 ;; esac
        [ "$octet" -le 32 ] || return 1
        rest=${1%/*}
    fi
    case $rest in '' | *[!0-9.]* | .* | *. | *..*) return 1 ;; esac
    rest=$rest.
    while [ -n "$rest" ]; do
        octet=${rest%%.*}
        rest=${rest#*.}
        count=$((count + 1))
        case $octet in ????* | 0?*) return 1 ;; esac
        [ "$octet" -le 255 ] || return 1
    done
    [ "$count" = 4 ]
}

# The structured values: NAME,key=value,...
b2c_valid_filesystem() {
    local rest=$2, name param key src=0
    name=${rest%%,*}
    rest=${rest#*,}
    b2c_is_name "$name" || {
        b2c_bad "$1" "needs a name (letters, digits, '_', '-') first, not '$name'"
        return
    }
    while [ -n "$rest" ]; do
        param=${rest%%,*}
        rest=${rest#*,}
        key=${param%%=*}
        case $param in
            src=?*) src=1 ;;
            type=?*) case ${param#type=} in *[!A-Za-z0-9._-]*) key= ;; esac ;;
            opts=?*) ;;
            *) key= ;;
        esac
        [ -n "$key" ] || {
            b2c_bad "$1" "$name: unknown or malformed parameter '$param'"
            return
        }
    done
    [ "$src" = 1 ] || b2c_bad "$1" "$name: the parameter src= is mandatory"
}

b2c_valid_volume() {
    local rest=$2, name param ok
    name=${rest%%,*}
    rest=${rest#*,}
    case $name in
        [A-Za-z0-9]*) case $name in *[!A-Za-z0-9_.-]*) name= ;; esac ;;
        *) name= ;;
    esac
    [ -n "$name" ] || {
        b2c_bad "$1" "needs a volume name first, not '${2%%,*}'"
        return
    }
    while [ -n "$rest" ]; do
        param=${rest%%,*}
        rest=${rest#*,}
        ok=1
        case $param in
            filesystem=*) b2c_is_name "${param#filesystem=}" || ok=0 ;;
            expiration=never | expiration=pipeline_end) ;;
            mirror | mirror=* | pull_from | pull_from=* | push_to | push_to=* | pull_on | pull_on=* | \
                push_on | push_on=* | overwrite | overwrite=* | remove | remove=* | exclude | \
                exclude=* | encrypt_key | encrypt_key=* | preserve | preserve=* | fscrypt_key | \
                fscrypt_key=* | fscrypt_reset_key | fscrypt_reset_key=*)
                b2c_warn "$1: $name: ${param%%=*} (S3 mirroring) is not supported, ignored"
                ;;
            *) ok=0 ;;
        esac
        [ "$ok" = 1 ] || {
            b2c_bad "$1" "$name: unknown or malformed parameter '$param'"
            return
        }
    done
}

b2c_valid_iface() {
    local rest=$2, name param ok
    name=${rest%%,*}
    rest=${rest#*,}
    case $name in
        '' | *[!A-Za-z0-9_.:-]*) name= ;;
        *) [ "${#name}" -le 15 ] || name= ;;
    esac
    [ -n "$name" ] || {
        b2c_bad "$1" "needs an interface name first, not '${2%%,*}'"
        return
    }
    while [ -n "$rest" ]; do
        param=${rest%%,*}
        rest=${rest#*,}
        ok=0
        case $param in
            auto | dhcp | forward) ok=1 ;;
            address=*) b2c_is_ipv4 "${param#*=}" cidr && ok=1 ;;
            gateway=* | nameserver=*) b2c_is_ipv4 "${param#*=}" && ok=1 ;;
            route=*:*) b2c_is_route "${param#route=}" && ok=1 ;;
        esac
        [ "$ok" = 1 ] || {
            b2c_bad "$1" "$name: unknown or malformed parameter '$param'"
            return
        }
    done
}

b2c_is_route() {
    local net=${1%%:*} gateway=${1#*:}
    { b2c_is_ipv4 "$net" cidr || b2c_is_ipv4 "$net"; } && b2c_is_ipv4 "$gateway"
}

b2c_valid_kernel_ip() {
    return 0
}

# The kernel's own module list (module_blacklist=): whatever it accepts.
b2c_valid_kernel_modules() {
    return 0
}
