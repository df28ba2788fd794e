# shellcheck shell=dash disable=SC2034,SC2153
# (SC2034/SC2153: globals shared by the init/ libraries; /init is checked whole.)
# secrets.sh: what the console shows of a container spec or a URL, secrets masked.
#
# Masked: the value after a long option whose name looks secret (--creds USER:PASSWORD,
# --password X, --token X), the value of a NAME=VALUE word whose NAME looks secret
# (-e API_TOKEN=..., --env=DB_PASSWORD=..., --db-password=...), and the user information of
# URLs (https://user:password@host/ -> https://***@host/). Names look secret when they hold
# PASSWORD, PASSWD, PASSPHRASE, TOKEN, SECRET, KEY or CRED, in any case. Every masked value
# of 4 bytes or more also joins B2C_SECRETS, so that podman's own messages are masked too.

# b2c_secret_name NAME: NAME looks like the name of a secret.
# The patterns match either case letter by letter: no tr(1) process (a few ms under TCG).
b2c_secret_name() {
    case $1 in
        *[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]* | *[Pp][Aa][Ss][Ss][Ww][Dd]* | \
            *[Pp][Aa][Ss][Ss][Pp][Hh][Rr][Aa][Ss][Ee]* | *[Tt][Oo][Kk][Ee][Nn]* | \
            *[Ss][Ee][Cc][Rr][Ee][Tt]* | *[Kk][Ee][Yy]* | *[Cc][Rr][Ee][Dd]*) return 0 ;;
    esac
    return 1
}

# b2c_secret_add VALUE: remember VALUE to mask it in podman's messages.
b2c_secret_add() {
    [ "${#1}" -ge 4 ] || return 0
    case $B2C_NL${B2C_SECRETS:-} in *"$B2C_NL$1$B2C_NL"*) return 0 ;; esac
    case $1 in *"$B2C_NL"*) return 0 ;; esac
    B2C_SECRETS=${B2C_SECRETS:-}$1$B2C_NL
}

# b2c_mask_urls TEXT: B2C_MASKED = TEXT with the user information of every URL as ***.
b2c_mask_urls() {
    local rest=$1 head authority after
    B2C_MASKED=
    while :; do
        case $rest in *://*) ;; *) break ;; esac
        head=${rest%%://*}://
        rest=${rest#*://}
        authority=${rest%%[/"$B2C_WS"\'\"]*}
        after=${rest#"$authority"}
        case $authority in
            *@*)
                b2c_secret_add "${authority%@*}"
                case ${authority%@*} in *:*) b2c_secret_add "${authority#*:}" ;; esac
                authority='***@'${authority##*@}
                ;;
        esac
        B2C_MASKED=$B2C_MASKED$head$authority
        rest=$after
    done
    B2C_MASKED=$B2C_MASKED$rest
}

# b2c_mask_token TOKEN AFTER: B2C_TOKEN = TOKEN masked; AFTER = 1 when TOKEN follows a long
# option whose name looks secret. B2C_AFTER = 1 when the next token is such a value.
b2c_mask_token() {
    local token=$1 name
    B2C_AFTER=0
    if [ "$2" = 1 ]; then
        b2c_secret_add "$token"
        case $token in *:*) b2c_secret_add "${token#*:}" ;; esac
        token='***'
    else
        case $token in
            --env=*=*)
                name=${token#--env=}
                if b2c_secret_name "${name%%=*}"; then
                    b2c_secret_add "${token#--env=*=}"
                    token=${token%"${token#--env=*=}"}'***'
                fi
                ;;
            [!=]*=*)
                if b2c_secret_name "${token%%=*}"; then
                    b2c_secret_add "${token#*=}"
                    token=${token%%=*}'=***'
                fi
                ;;
            --?*)
                b2c_secret_name "$token" && B2C_AFTER=1
                ;;
        esac
    fi
    b2c_mask_urls "$token"
    B2C_TOKEN=$B2C_MASKED
}

# b2c_mask_words WORD...: B2C_MASKED = the words as the console shows them, secrets masked
# (quoted with '...' where they need it, unless B2C_MASK_RAW=1); B2C_MASK_HIT = 1 if
# anything was masked. A word holding white space (a script for sh -c) is masked token by
# token.
b2c_mask_words() {
    local word shown after=0 inner_after token masked out='' old_ifs=$IFS
    B2C_MASK_HIT=0
    for word; do
        case $word in
            *[$B2C_WS]*)
                shown='' inner_after=0 masked=0
                IFS=$B2C_WS
                for token in $word; do
                    IFS=$old_ifs
                    b2c_mask_token "$token" "$inner_after"
                    inner_after=$B2C_AFTER
                    [ "$B2C_TOKEN" = "$token" ] || masked=1
                    shown="$shown $B2C_TOKEN"
                done
                IFS=$old_ifs
                # Nothing masked: the word as it is, its white space included.
                if [ "$masked" = 1 ]; then
                    shown=${shown# }
                else
                    shown=$word
                fi
                after=0
                ;;
            *)
                b2c_mask_token "$word" "$after"
                after=$B2C_AFTER
                shown=$B2C_TOKEN
                ;;
        esac
        [ "$shown" = "$word" ] || B2C_MASK_HIT=1
        if [ "${B2C_MASK_RAW:-0}" != 1 ]; then
            case $shown in
                '' | *[$B2C_WS\"\']*)
                    case $shown in
                        *\'*) shown=\"$shown\" ;;
                        *) shown=\'$shown\' ;;
                    esac
                    ;;
            esac
        fi
        out="$out $shown"
    done
    B2C_MASKED=${out# }
}

# b2c_mask_spec TEXT: B2C_MASKED = TEXT (a container spec or title) as the console may show
# it: unchanged when it holds no secret, else its words with the secrets masked.
b2c_mask_spec() {
    local text=$1 old_ifs=$IFS
    if ! b2c_with_words "$text" b2c_mask_words; then
        # Unbalanced quotes: mask word by word, split on white space alone.
        IFS=$B2C_WS
        # shellcheck disable=SC2086 # split on purpose (set -f: no globbing)
        set -- $text
        IFS=$old_ifs
        B2C_MASK_RAW=1
        b2c_mask_words "$@"
        B2C_MASK_RAW=0
    fi
    [ "$B2C_MASK_HIT" = 1 ] || B2C_MASKED=$text
}

# b2c_mask_line TEXT: B2C_MASKED = TEXT with every remembered secret and URL user
# information replaced by ***.
b2c_mask_line() {
    local text=$1 secret old_ifs=$IFS
    IFS=$B2C_NL
    for secret in ${B2C_SECRETS:-}; do
        while :; do
            case $text in
                *"$secret"*) text=${text%%"$secret"*}'***'${text#*"$secret"} ;;
                *) break ;;
            esac
        done
    done
    IFS=$old_ifs
    b2c_mask_urls "$text"
}
