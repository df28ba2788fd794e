"""Private registries: --creds and --authfile pull first, then create; the console never shows
a secret (section titles, errors, the failure's culprit, podman's own messages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.shell import PODMAN, Result, Shell

PASSWORD = "hunter2-p4ss"


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        (f"--creds ci:{PASSWORD} docker://r/x", "--creds *** docker://r/x"),
        (f"--creds=ci:{PASSWORD} docker://r/x", "--creds=*** docker://r/x"),
        (
            "-e API_TOKEN=abcd1234 -e HOME=/root docker://r/x env",
            "-e API_TOKEN=*** -e HOME=/root docker://r/x env",
        ),
        (
            "--env=db_password=pw123456 -eMY_SECRET=s3cr3t r/x",
            "--env=db_password=*** -eMY_SECRET=*** r/x",
        ),
        ("-e AWS_SECRET_ACCESS_KEY r/x", "-e AWS_SECRET_ACCESS_KEY r/x"),  # taken from the env
        (f"docker://ci:{PASSWORD}@r.example/x:1", "docker://***@r.example/x:1"),
        (
            f"r/x sh -c 'wget https://tok{PASSWORD}@h.example/f && ./run --password {PASSWORD}'",
            "r/x sh -c 'wget https://***@h.example/f && ./run --password ***'",
        ),
        ("r/x ./run --api-key K3Y-000 --verbose", "r/x ./run --api-key *** --verbose"),
        # A script with no secret keeps its white space, beside a masked word.
        (
            f"--creds ci:{PASSWORD} r/x sh -c '  echo  a  '",
            "--creds *** r/x sh -c '  echo  a  '",
        ),
        # Nothing to mask: the spec is shown as written, quotes included.
        ('-v a:/b docker://x sh -c "exit 3"', '-v a:/b docker://x sh -c "exit 3"'),
        # Unbalanced quotes: still masked, word by word.
        (f"--creds ci:{PASSWORD} docker://x sh -c 'oops", "--creds *** docker://x sh -c 'oops"),
    ],
)
def test_specs_are_shown_with_their_secrets_masked(tmp_path: Path, spec: str, shown: str) -> None:
    sh = Shell(tmp_path)
    sh.write("spec", spec)
    result = sh.run('b2c_read_file "$B2C_ROOT/spec"; b2c_mask_spec "$B2C_TEXT"; echo "$B2C_MASKED"')
    assert result.lines == [shown]


def test_a_masked_line_hides_every_remembered_secret(tmp_path: Path) -> None:
    result = Shell(tmp_path).run(
        f"b2c_mask_spec '--creds ci:{PASSWORD} -e TOKEN=abc r/x' >/dev/null\n"
        f"b2c_mask_line 'Error: auth ci:{PASSWORD} for {PASSWORD}{PASSWORD}, token abc'\n"
        'echo "$B2C_MASKED"'
    )
    # "abc" is too short to be hunted down in free text (it would mask every "abc").
    assert result.lines == ["Error: auth *** for ******, token abc"]


PRIVATE = f"--creds ci:{PASSWORD} -e API_TOKEN=tok-123456 --tls-verify=false --pull=newer"


def run_pipeline(sh: Shell, cmdline: str) -> Result:
    sh.write("line", cmdline)
    return sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline || exit 99\n'
        "B2C_PIPELINE_STATUS=0 B2C_PIPELINE_SHUTDOWN_MODE=default\n"
        'b2c_run_pipeline; echo "status=$B2C_PIPELINE_STATUS by=$B2C_PIPELINE_FAILED_BY"'
    )


def private_podman(sh: Shell) -> None:
    """PODMAN, whose pull repeats its arguments on its error output (as a verbose client)."""
    sh.stub(
        "podman",
        'if [ "$1" = pull ]; then echo "pulling with: $*" >&2; return 0; fi\n' + PODMAN,
    )


def test_creds_pull_first_then_create_without_them(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    private_podman(sh)
    result = run_pipeline(
        sh, f'b2c.container="{PRIVATE} -v a:/b docker://r.example/x:1 3" b2c.container="r/y 0"'
    )
    podman = result.called("podman")
    pulls = [c for c in podman if c[0] == "pull"]
    assert pulls == [
        ["pull", "--creds", f"ci:{PASSWORD}", "--tls-verify=false", "docker://r.example/x:1"]
    ]
    creates = [c for c in podman if c[0] == "create"]
    assert creates[0][:5] == ["create", "--rm", "--privileged", "--network=host", "--pull=never"]
    assert creates[0][-6:] == [
        "API_TOKEN=tok-123456",
        "--tls-verify=false",
        "-v",
        "a:/b",
        "docker://r.example/x:1",
        "3",
    ]
    assert "--creds" not in creates[0] and "--pull=newer" not in creates[0]
    # A spec without credentials keeps the usual single create.
    assert creates[1][4] == "--pull=always"
    # The verdict names the container with its secrets masked, and so does the environment
    # of the next container.
    masked = (
        "--creds *** -e API_TOKEN=*** --tls-verify=false --pull=newer -v a:/b "
        "docker://r.example/x:1 3"
    )
    assert result.lines[-1] == f"status=3 by={masked}"
    env = dict(creates[1][i + 1].split("=", 1) for i, a in enumerate(creates[1]) if a == "-e")
    assert env["B2C_PIPELINE_FAILED_BY"] == masked
    assert env["B2C_PIPELINE_PREV_CONTAINER"] == masked
    assert any(line.endswith(f"Run container 1: {masked}") for line in result.lines)
    # Nothing on the console shows a secret, podman's own messages included.
    console = result.out + result.err
    assert PASSWORD not in console and "tok-123456" not in console
    assert "pulling with: pull --creds *** --tls-verify=false docker://r.example/x:1" in console


def test_authfile_pulls_with_it_and_create_keeps_it(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    private_podman(sh)
    result = run_pipeline(sh, 'b2c.container="--authfile /etc/b2c/auth.json r.example/x:1 0"')
    podman = result.called("podman")
    assert [c for c in podman if c[0] == "pull"] == [
        ["pull", "--authfile", "/etc/b2c/auth.json", "r.example/x:1"]
    ]
    (create,) = [c for c in podman if c[0] == "create"]
    assert create[4] == "--pull=never"
    assert create[-4:] == ["--authfile", "/etc/b2c/auth.json", "r.example/x:1", "0"]
    assert result.lines[-1] == "status=0 by="


def test_a_failed_private_pull_is_an_error_without_the_password(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub(
        "podman",
        f"""\
        if [ "$1" = pull ]; then
            printf '%s%s\\n' 'Error: initializing source docker://r/x:1: reading manifest 1 ' \\
                'in r/x: unauthorized: bad ci:{PASSWORD}' >&2
            return 125
        fi
        return 0
        """,
    )
    result = run_pipeline(sh, f'b2c.container="--creds ci:{PASSWORD} docker://r/x:1"')
    assert result.errors() == [
        "b2c: error: could not pull or create the container (podman pull failed (exit status "
        "125, not retried: the error is not transient): Error: initializing source "
        "docker://r/x:1: reading manifest 1 in r/x: unauthorized: bad ***): "
        "--creds *** docker://r/x:1"
    ]
    assert [c[0] for c in result.called("podman") if c[0] in ("pull", "create")] == ["pull"]
    assert PASSWORD not in result.out + result.err


def test_a_malformed_private_spec_is_reported_masked(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write("line", f'b2c.container="--creds ci:{PASSWORD} docker://x sh -c \'oops"')
    result = sh.run('b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline')
    assert result.errors() == [
        "b2c: error: b2c.container: unbalanced ' quote in: --creds *** docker://x sh -c 'oops"
    ]


def test_urls_with_credentials_are_masked_and_the_extra_args_file_removed(
    tmp_path: Path,
) -> None:
    sh = Shell(tmp_path)
    url = f"https://ci:{PASSWORD}@config.example/job"
    sh.stub(
        "wget",
        """\
        local out
        while [ $# -gt 0 ]; do [ "$1" = -O ] && out=$2; shift; done
        printf 'b2c.container="--creds ci:%s docker://r/x"\\n' hunter2-p4ss >"$out"
        """,
    )
    result = sh.run(
        f"b2c_parse_cmdline 'b2c.extra_args_url={url} "
        f"b2c.proxy=http://proxy:{PASSWORD}@10.0.0.1:3128' cmdline\n"
        'b2c_apply_proxy\nb2c_extra_args; echo "rc=$?"\n'
        'ls "$B2C_ROOT/run/b2c"\nprintf "%s" "$B2C_CONTAINER"'
    )
    assert "[1.00]: Using the HTTP(S) proxy http://***@10.0.0.1:3128" in result.lines
    assert "[1.00]: Parsed the extra command line from https://***@config.example/job" in (
        result.lines
    )
    assert "rc=0" in result.lines
    assert "extra_args" not in result.lines  # nothing left in /run/b2c
    assert result.lines[-1] == f"--creds ci:{PASSWORD} docker://r/x"  # parsed all the same
    assert PASSWORD not in "\n".join(result.lines[:-1]) + result.err


def test_registry_credentials_from_an_extra_initrd(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    code = 'b2c_registry_auth; echo "auth=${REGISTRY_AUTH_FILE:-}"'
    assert sh.run(code).lines == ["auth="]
    sh.write("etc/containers/auth.json", '{"auths": {}}\n')
    assert sh.run(code).lines == [
        "[1.00]: Using the registry credentials of /etc/containers/auth.json",
        "auth=/etc/containers/auth.json",
    ]
