"""The container pipeline: order, status, pipefail, post containers, services, 129/130."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.shell import PODMAN, Result, Shell


def pipeline(tmp_path: Path, cmdline: str) -> Result:
    sh = Shell(tmp_path)
    sh.stub("podman", PODMAN)
    sh.write("line", cmdline)
    return sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline || exit 99\n'
        "B2C_PIPELINE_STATUS=0 B2C_PIPELINE_SHUTDOWN_MODE=default\n"
        "b2c_run_pipeline\n"
        'echo "status=$B2C_PIPELINE_STATUS mode=$B2C_PIPELINE_SHUTDOWN_MODE '
        'by=$B2C_PIPELINE_FAILED_BY"'
    )


def started(result: Result) -> list[str]:
    """The containers run attached, in order, by the last argument of their podman run or
    podman create (podman start's id names it)."""
    return [
        call[-1].removeprefix("id-")
        for call in result.called("podman")
        if call[:2] == ["start", "--attach"] or call[0] == "run"
    ]


def created(result: Result) -> list[list[str]]:
    """The podman run and podman create calls, in order."""
    return [c for c in result.called("podman") if c[0] in ("run", "create")]


def env_of(result: Result, n: int) -> dict[str, str]:
    """The B2C_PIPELINE_* environment given to the n-th podman run or create."""
    create = created(result)[n]
    pairs = [create[i + 1] for i, arg in enumerate(create) if arg == "-e"]
    return dict(p.split("=", 1) for p in pairs)


def test_containers_run_in_order_with_the_defaults(tmp_path: Path) -> None:
    result = pipeline(tmp_path, 'b2c.container="-v a:/b docker://one 0" b2c.run=docker://two')
    assert result.lines[-1] == "status=0 mode=default by="
    runs = created(result)
    assert runs[0][:5] == ["run", "--rm", "--privileged", "--network=host", "--pull=always"]
    assert runs[0][-5:] == ["--cidfile=/run/b2c/cid.fifo", "-v", "a:/b", "docker://one", "0"]
    assert [c[0] for c in result.called("podman")] == ["run", "run"]  # no create, no start
    assert started(result) == ["0", "docker://two"]
    assert env_of(result, 0) == {
        "B2C_PIPELINE_STATUS": "0",
        "B2C_PIPELINE_FAILED_BY": "",
        "B2C_PIPELINE_PREV_CONTAINER": "",
        "B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE": "",
        "B2C_PIPELINE_SHUTDOWN_MODE": "default",
    }
    assert env_of(result, 1)["B2C_PIPELINE_PREV_CONTAINER"] == "-v a:/b docker://one 0"
    assert env_of(result, 1)["B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE"] == "0"
    assert result.errors() == []


def test_without_pipefail_the_pipeline_goes_on_and_the_first_failure_counts(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        'b2c.container="docker://a 3" b2c.container="docker://b 0" b2c.container="docker://c 4"',
    )
    assert started(result) == ["3", "0", "4"]
    assert result.lines[-1] == "status=3 mode=default by=docker://a 3"
    assert env_of(result, 1) | {} == {
        "B2C_PIPELINE_STATUS": "3",
        "B2C_PIPELINE_FAILED_BY": "docker://a 3",
        "B2C_PIPELINE_PREV_CONTAINER": "docker://a 3",
        "B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE": "3",
        "B2C_PIPELINE_SHUTDOWN_MODE": "default",
    }
    assert env_of(result, 2)["B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE"] == "0"


def test_pipefail_stops_at_the_first_failure_but_post_containers_run(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        'b2c.pipefail b2c.container="docker://a 0" b2c.container="docker://b 2" '
        'b2c.container="docker://c 0" b2c.post_container="docker://post 7" '
        'b2c.run_post="docker://post2 0"',
    )
    assert started(result) == ["0", "2", "7", "0"]
    assert result.lines[-1] == "status=2 mode=default by=docker://b 2"
    assert env_of(result, 2)["B2C_PIPELINE_STATUS"] == "2"  # the post container sees it


def test_post_container_failures_do_not_change_the_status(tmp_path: Path) -> None:
    result = pipeline(tmp_path, 'b2c.container="docker://a 0" b2c.post_container="docker://post 5"')
    assert started(result) == ["0", "5"]
    assert result.lines[-1] == "status=0 mode=default by="


def test_exit_129_selects_reboot_and_130_poweroff(tmp_path: Path) -> None:
    result = pipeline(tmp_path, 'b2c.container="docker://a 129" b2c.container="docker://b 0"')
    assert result.lines[-1] == "status=129 mode=reboot by=docker://a 129"
    assert env_of(result, 1)["B2C_PIPELINE_SHUTDOWN_MODE"] == "reboot"
    result = pipeline(tmp_path / "2", 'b2c.container="docker://a 130"')
    assert result.lines[-1] == "status=130 mode=poweroff by=docker://a 130"


# podman's messages (containers/image, Go's net package) for failures that can pass.
TRANSIENT_ERRORS = [
    "Error: initializing source docker://10.0.2.2:1/x:latest: pinging container registry "
    '10.0.2.2:1: Get "https://10.0.2.2:1/v2/": dial tcp 10.0.2.2:1: connect: connection refused',
    "Error: reading blob sha256:0123: read tcp 10.0.2.15:40000->10.0.2.2:5000: "
    "read: connection reset by peer",
    'Error: pinging container registry r.example: Get "https://r.example/v2/": '
    "net/http: TLS handshake timeout",
    "Error: initializing source docker://r.example/x:1: pinging container registry r.example: "
    'Get "https://r.example/v2/": dial tcp: lookup r.example on 10.0.2.3:53: no such host',
    "Error: reading manifest 1 in r.example/x: received unexpected HTTP status: "
    "503 Service Unavailable",
    "Error: initializing source docker://r.example/x:1: reading manifest 1 in r.example/x: "
    "toomanyrequests: You have reached your pull rate limit",
    "Error: copying system image from manifest list: writing blob: storing blob to file: "
    "unexpected EOF",
]
# Failures that waiting cannot change.
PERMANENT_ERRORS = [
    "Error: unknown flag: --creds",
    'Error: parsing reference "r.example/X:1": invalid reference format: repository name '
    "must be lowercase",
    "Error: choosing an image from manifest list docker://r.example/x:1: no image found in "
    "image index for architecture amd64, variant , OS linux",
    "Error: initializing source docker://r.example/x:1: reading manifest 1 in r.example/x: "
    "manifest unknown",
    "Error: initializing source docker://r.example/x:1: reading manifest 1 in r.example/x: "
    "unauthorized: authentication required",
    "Error: database disk image is malformed",
]


def failing_podman(message: str, failures: int = 99) -> str:
    """A podman whose create fails ``failures`` times with ``message`` (exit 125)."""
    return f"""\
case $1 in
    create)
        n=$(( $(cat "$B2C_ROOT/nfail" 2>/dev/null || echo 0) + 1 ))
        echo "$n" >"$B2C_ROOT/nfail"
        if [ "$n" -le {failures} ]; then
            echo 'Trying to pull r.example/x:1...' >&2
            printf '%s\\n' '{message}' >&2
            return 125
        fi
        echo "id-$n"
        ;;
    start) return 0 ;;
esac
return 0
"""


def create_with(tmp_path: Path, message: str, failures: int = 99) -> Result:
    sh = Shell(tmp_path)
    sh.stub("podman", failing_podman(message, failures))
    return sh.run(
        "B2C_PIPELINE_STATUS=0 B2C_PIPELINE_SHUTDOWN_MODE=default\n"
        'b2c_container_create "docker://r.example/x:1"; echo "rc=$? cid=$B2C_CID"'
    )


@pytest.mark.parametrize("message", TRANSIENT_ERRORS)
def test_transient_failures_are_retried_with_a_bounded_backoff(
    tmp_path: Path, message: str
) -> None:
    result = create_with(tmp_path, message)
    assert len([c for c in result.called("podman") if c[0] == "create"]) == 3
    assert result.called("sleep") == [["2"], ["4"]]
    assert len(result.warnings()) == 2
    assert result.errors() == [
        "b2c: error: could not pull or create the container (podman create failed "
        f"(exit status 125, 3 attempts): {message}): docker://r.example/x:1"
    ]
    assert result.lines[-1] == "rc=125 cid="
    # podman's own output reached the console as it came.
    assert result.err.splitlines().count(message) == 3


def test_a_transient_failure_that_passes(tmp_path: Path) -> None:
    result = create_with(tmp_path, TRANSIENT_ERRORS[0], failures=1)
    assert result.lines[-1] == "rc=0 cid=id-2"
    assert result.called("sleep") == [["2"]]
    assert result.errors() == []


def test_the_backoff_doubles_up_to_its_cap(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("podman", failing_podman(TRANSIENT_ERRORS[0]))
    result = sh.run(
        "B2C_PULL_ATTEMPTS=7 B2C_RETRY_MAX_DELAY=20\n"
        'b2c_container_create "docker://r.example/x:1"; echo "rc=$?"'
    )
    assert result.called("sleep") == [["2"], ["4"], ["8"], ["16"], ["20"], ["20"]]
    assert result.lines[-1] == "rc=125"


@pytest.mark.parametrize("message", PERMANENT_ERRORS)
def test_other_failures_fail_at_once_with_podmans_message(tmp_path: Path, message: str) -> None:
    result = create_with(tmp_path, message)
    assert len([c for c in result.called("podman") if c[0] == "create"]) == 1
    assert result.called("sleep") == []
    assert result.warnings() == []
    assert result.errors() == [
        "b2c: error: could not pull or create the container (podman create failed "
        f"(exit status 125, not retried: the error is not transient): {message}): "
        "docker://r.example/x:1"
    ]


def test_a_failed_pull_goes_on_with_the_next_container(tmp_path: Path) -> None:
    result = pipeline(tmp_path, "b2c.container=docker://unreachable b2c.container=docker://b")
    # podman run could not create it: podman create tries once more, and reports (the
    # message alone is not transient: one attempt).
    assert [c[0] for c in created(result)] == ["run", "create", "run"]
    assert result.errors() == [
        "b2c: error: could not pull or create the container (podman create failed (exit "
        "status 125, not retried: the error is not transient): Error: initializing source): "
        "docker://unreachable"
    ]
    assert result.lines[-1] == "status=125 mode=default by=docker://unreachable"
    assert started(result) == ["docker://unreachable", "docker://b"]  # tried by podman run


def test_services_start_before_and_stop_after_the_pipeline(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        'b2c.service="--name web docker://web" b2c.run_service=docker://db '
        'b2c.container="docker://a 0" b2c.post_container="docker://post 0"',
    )
    calls = [c[:2] + c[-1:] for c in result.called("podman") if c[0] in ("start", "stop", "run")]
    assert calls == [
        ["start", "id-docker://web", "id-docker://web"],
        ["start", "id-docker://db", "id-docker://db"],
        ["run", "--rm", "0"],
        ["run", "--rm", "0"],
        ["stop", "--time", "id-docker://web"],
        ["stop", "--time", "id-docker://db"],
    ]
    assert result.lines[-1] == "status=0 mode=default by="


def test_a_service_that_cannot_start_skips_the_pipeline(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path,
        'b2c.service=docker://unreachable b2c.container="docker://a 0" '
        'b2c.post_container="docker://p 0"',
    )
    assert started(result) == ["0"]  # only the post container
    assert result.lines[-1] == "status=125 mode=default by=service: docker://unreachable"


def test_interactive_containers_get_stdin(tmp_path: Path) -> None:
    result = pipeline(tmp_path, 'b2c.container="-ti docker://tty"')
    assert ["start", "--attach", "--interactive", "id-docker://tty"] in result.called("podman")


def test_no_cleanup_calls_without_a_cache_device(tmp_path: Path) -> None:
    # podman's storage is a tmpfs that the power-off discards: cleaning it only costs time.
    result = pipeline(tmp_path, 'b2c.container="docker://a 0"')
    assert [c[0] for c in result.called("podman")] == ["run"]
    assert "podman's storage goes away with the power-off" in result.out


def test_stdin_is_inspected_only_when_a_word_could_be_the_interactive_flag(
    tmp_path: Path,
) -> None:
    for spec, inspected in [
        ("docker://a 0", False),
        ("-e A=i --privileged docker://a 0", False),
        ("-it docker://a 0", True),
        ("--interactive=true docker://a 0", True),
        ("docker://a sed -i s/a/b/ f 0", True),  # a command's -i: asked, to be sure
    ]:
        result = pipeline(tmp_path / str(len(spec)), f'b2c.container="{spec}"')
        inspect = [c for c in result.called("podman") if c[:2] == ["container", "inspect"]]
        assert bool(inspect) is inspected, spec


def test_nothing_to_run_is_a_warning(tmp_path: Path) -> None:
    result = pipeline(tmp_path, "console=ttyS0")
    assert result.warnings() == ["b2c: warning: no b2c.container was given: nothing to run"]
    assert result.lines[-1] == "status=0 mode=default by="
    assert result.called("podman") == []


def test_containers_are_cleaned_up_on_a_cache_device_and_sections_printed(
    tmp_path: Path,
) -> None:
    result = pipeline(tmp_path, 'b2c.cache_device=/dev/vda b2c.container="docker://a 0"')
    podman = result.called("podman")
    # One call stops and removes what is left (rm --force stops a running container first).
    assert ["container", "rm", "--all", "--force", "--time", "5"] in podman
    assert ["image", "prune", "--force"] in podman
    assert [c for c in podman if c[:2] == ["container", "stop"]] == []
    assert (
        "\x1b[0Ksection_start:1700000000:container_1\r\x1b[0KRun container 1: docker://a 0"
        in result.lines
    )
    assert (
        "\x1b[0Ksection_start:1700000000:pull_container_1[collapsed=true]\r\x1b[0K"
        "Pull and create container 1: docker://a 0" in result.lines
    )
    assert "\x1b[0Ksection_end:1700000000:container_1\r\x1b[0K" in result.lines


# A podman run that prints its pull messages, writes the container's id to its --cidfile
# once it has created it, then waits for the init's run section before the container prints:
# podman still mounts the container and starts conmon and crun then, about 0.4 s under TCG.
# (The init records the section just before it prints its marker: a few more turns of the
# loop stand for those 0.4 s.)
ORDERED_RUN = """\
local i=0
b2c_stub_cidfile "$@" || return 125
echo "Trying to pull docker://a..."  # podman's stderr: the same console
printf '%064x' 171 >"$B2C_ROOT$B2C_STUB_CIDFILE"
while [ "$i" -lt 100000 ] && ! grep -q '^container_1$' "$B2C_ROOT/run/b2c/section"; do
    i=$((i + 1))
done
i=0
while [ "$i" -lt 20000 ]; do i=$((i + 1)); done
echo "the container's output"
echo "no exit command: ${B2C_CONMON_NO_EXIT_COMMAND:-unset}"
return 4
"""


def test_podman_run_ends_the_pull_section_when_it_has_created_the_container(
    tmp_path: Path,
) -> None:
    sh = Shell(tmp_path)
    sh.stub("podman", ORDERED_RUN)
    result = sh.run(
        "b2c_parse_cmdline 'b2c.container=docker://a' cmdline || exit 99\n"
        "B2C_PIPELINE_STATUS=0 B2C_PIPELINE_SHUTDOWN_MODE=default\n"
        'b2c_run_pipeline; echo "status=$B2C_PIPELINE_STATUS cid=$B2C_CID"'
    )
    # podman's messages come through a pipe (cat): before the container's output, and in
    # the pull section in practice (podman creates the container after its last message).
    assert "Trying to pull docker://a..." in result.lines
    lines = [line for line in result.lines if line != "Trying to pull docker://a..."]
    start = next(i for i, line in enumerate(lines) if "section_start" in line)
    assert lines[start : start + 6] == [
        "\x1b[0Ksection_start:1700000000:pull_container_1[collapsed=true]\r\x1b[0K"
        "Pull and create container 1: docker://a",
        "\x1b[0Ksection_end:1700000000:pull_container_1\r\x1b[0K",
        "\x1b[0Ksection_start:1700000000:container_1\r\x1b[0KRun container 1: docker://a",
        "the container's output",
        # conmon leaves out the exit command: podman run --rm removes the container itself.
        "no exit command: 1",
        "\x1b[0Ksection_end:1700000000:container_1\r\x1b[0K",
    ]
    assert "[1.00]: The container 1 exited with status 4" in lines
    assert result.lines[-1] == f"status=4 cid={171:064x}"
    # Nothing left behind: the FIFO is gone.
    assert not (result.root / "run/b2c/cid.fifo").exists()


# podman run as in ORDERED_RUN, on a cache: the cache's podman container inspect (the image
# to record as used) notes whether the container's run section was already open.
CACHED_RUN = """\
local i=0
if [ "$1 $2" = "container inspect" ]; then
    if grep -q '^container_1$' "$B2C_ROOT/run/b2c/section"; then
        echo "inspected in the run section" >"$B2C_ROOT/inspected"
    else
        echo "inspected before the run section" >"$B2C_ROOT/inspected"
    fi
    echo 0123456789abcdef0123
    return 0
fi
b2c_stub_cidfile "$@" || return 0
printf '%064x' 171 >"$B2C_ROOT$B2C_STUB_CIDFILE"
while [ "$i" -lt 100000 ] && ! grep -q '^container_1$' "$B2C_ROOT/run/b2c/section"; do
    i=$((i + 1))
done
echo "the container's output"
return 0
"""


def test_on_a_cache_the_run_section_opens_before_the_image_is_recorded(tmp_path: Path) -> None:
    # Recording the image takes a podman process (about 0.3 s under TCG), while podman run
    # starts the container: opened after it, the run section came after the container's
    # first lines, which then sat in the collapsed pull section.
    sh = Shell(tmp_path)
    sh.stub("podman", CACHED_RUN)
    sh.write("storage/b2c/boots", "4\n")
    result = sh.run(
        "b2c_parse_cmdline 'b2c.container=docker://a' cmdline || exit 99\n"
        "B2C_CACHE_ON=1 B2C_PIPELINE_STATUS=0 B2C_PIPELINE_SHUTDOWN_MODE=default\n"
        "b2c_cache_count_boot; b2c_run_pipeline; echo status=$B2C_PIPELINE_STATUS"
    )
    assert (result.root / "inspected").read_text() == "inspected in the run section\n"
    lines = result.lines
    run_section = lines.index(
        "\x1b[0Ksection_start:1700000000:container_1\r\x1b[0KRun container 1: docker://a"
    )
    assert lines.index("the container's output") > run_section
    assert (result.root / "storage/b2c/lru").read_text() == "5 0123456789ab\n"
    assert result.lines[-1] == "status=0"


@pytest.mark.parametrize(
    "spec",
    [
        "-ti docker://tty",  # its stdin: known only after podman create (inspect)
        "--creds u:hunter2 docker://a",  # pulled first with them: podman create has no --creds
        "-e API_TOKEN=hunter22 docker://a",  # podman's messages are masked, a container's not
    ],
)
def test_podman_create_and_start_when_podman_run_cannot_do_it(tmp_path: Path, spec: str) -> None:
    result = pipeline(tmp_path, f'b2c.container="{spec}"')
    assert "run" not in [c[0] for c in result.called("podman")]
    assert "start" in [c[0] for c in result.called("podman")]


def test_once_a_secret_is_known_podman_run_is_not_used(tmp_path: Path) -> None:
    result = pipeline(
        tmp_path, 'b2c.container="-e DB_PASSWORD=s3cr3t docker://a 0" b2c.post_container="x 0"'
    )
    assert [c[0] for c in created(result)] == ["create", "create"]


# --- crun on a read-only ramfs (b2c_crun_read_only) -------------------------------------------


def test_crun_is_bound_read_only_from_a_ramfs_copy(tmp_path: Path) -> None:
    """The conditions of crun's is_self_cloned(): a read-only mount, and a file that is not
    shmem (ramfs, not the initramfs's tmpfs): crun then runs without copying itself."""
    sh = Shell(tmp_path)
    result = sh.run("b2c_crun_read_only")
    root = str(sh.root)
    folder, crun = f"{root}/run/b2c/crun", f"{root}/usr/bin/crun"
    assert result.called("mount") == [
        ["-t", "ramfs", "-o", "mode=0755", "ramfs", folder],
        ["--bind", f"{folder}/crun", crun],
        ["-o", "remount,bind,ro", crun],
    ]
    assert result.called("umount") == []  # nothing more to fork: the ramfs stays mounted
    assert (sh.root / "run/b2c/crun/crun").read_bytes() == (sh.root / "usr/bin/crun").read_bytes()
    assert (result.status, result.out, result.err) == (0, "", "")


@pytest.mark.parametrize(
    ("failing", "warning", "mounts"),
    [
        ("-t", "could not mount a ramfs for crun: every crun call copies crun first", 1),
        ("--bind", "could not put crun on a ramfs: every crun call copies crun first", 2),
        ("-o", "could not make crun's mount read-only: every crun call re-executes crun", 3),
    ],
)
def test_crun_read_only_failures_are_one_warning_and_leave_no_ramfs_mounted(
    tmp_path: Path, failing: str, warning: str, mounts: int
) -> None:
    sh = Shell(tmp_path)
    sh.stub("mount", f'[ "$1" != {failing} ]')
    result = sh.run("b2c_crun_read_only")
    assert result.warnings() == [f"b2c: warning: {warning}"]
    assert len(result.called("mount")) == mounts
    # On a failure, the ramfs's own mount point does not stay: a bound copy keeps the ramfs.
    assert result.called("umount") == ([] if failing == "-t" else [[f"{sh.root}/run/b2c/crun"]])
    assert result.status == 0
