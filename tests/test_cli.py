"""The command line as a user meets it: bad input gets one clear error, never a traceback.

Every `build` case here points --mirror at a closed port on 127.0.0.1: the option must be
refused before anything is downloaded, so a message about the mirror means it was not.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from b2c_builder import __version__
from b2c_builder.boot.launch import USER_NET_IP
from b2c_builder.config import Arch
from tests.conftest import ROOT, b2c, require_tool


def cli(
    *args: str, env: dict[str, str] | None = None, wrap: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """``python -m b2c_builder ARGS`` with extra environment variables, run through ``wrap``
    (a command prefix) if given."""
    return subprocess.run(
        [*wrap, sys.executable, "-m", "b2c_builder", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def dead_mirror() -> str:
    return f"http://127.0.0.1:{closed_port()}/debian"


def assert_clear_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Non-zero exit, no traceback, one error message naming ``words``; returns it."""
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [
        line.removeprefix("ERROR: ")
        for line in proc.stderr.splitlines()
        if line.startswith("ERROR: ") and not line.startswith("ERROR: hint:")
    ]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], proc.stderr
    assert any(line.startswith("ERROR: hint: ") for line in proc.stderr.splitlines()), (
        "an actionable hint follows the error: " + proc.stderr
    )
    return errors[0]


BUILD_CASES: dict[str, tuple[list[str], dict[str, str], tuple[str, ...]]] = {
    # case: (arguments, environment, words the message must contain)
    "suite": (["--suite", "Bad Suite"], {}, ("--suite", "'Bad Suite'", "codename")),
    "max-size-word": (["--max-size", "abc"], {}, ("'abc'", "size")),
    "max-size-zero": (["--max-size", "0"], {}, ("--max-size",)),
    "max-size-negative": (["--max-size", "-5MiB"], {}, ("'-5MiB'",)),
    "epoch-word": (["--source-date-epoch", "xyz"], {}, ("--source-date-epoch", "'xyz'")),
    "epoch-negative": (["--source-date-epoch", "-1"], {}, ("--source-date-epoch", "'-1'")),
    "epoch-unicode-digits": (["--source-date-epoch", "١٢٣"], {}, ("--source-date-epoch",)),
    "epoch-beyond-cpio": (["--source-date-epoch", str(2**32)], {}, ("32 bits",)),
    "epoch-env": ([], {"SOURCE_DATE_EPOCH": "xyz"}, ("SOURCE_DATE_EPOCH", "'xyz'")),
    "keyring": (["--keyring", "/nonexistent"], {}, ("/nonexistent",)),
    "modules-dir": (["--modules-dir", "/nonexistent"], {}, ("--modules-dir", "/nonexistent")),
    "kernel-and-modules": (
        ["--kernel-package", "linux-image-amd64", "--modules-dir", "/"],
        {},
        ("exclusive",),
    ),
    "default-cmdline": (
        ["--default-cmdline", "b2c.pipefail=maybe"],
        {},
        ("--default-cmdline", "b2c.pipefail"),
    ),
}


@pytest.mark.parametrize("case", sorted(BUILD_CASES))
def test_build_refuses_bad_input_before_downloading(dead_mirror: str, case: str) -> None:
    args, env, words = BUILD_CASES[case]
    proc = cli("build", "--mirror", dead_mirror, *args, env=env)
    message = assert_clear_error(proc, *words)
    assert "127.0.0.1" not in proc.stderr, "refused only after trying the mirror: " + message
    assert proc.returncode == 2, "a ConfigError exits with 2"


# build, and release for one architecture; each writes nothing into the repository.
FOLDER_COMMANDS = {
    "build": ("build",),
    "release": ("release", "--arch", "amd64"),
}


@pytest.mark.parametrize("command", sorted(FOLDER_COMMANDS))
@pytest.mark.parametrize("option", ["--output", "--cache-dir"])
def test_build_and_release_refuse_a_file_where_a_folder_goes(
    dead_mirror: str, tmp_path: Path, option: str, command: str
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    other = "--cache-dir" if option == "--output" else "--output"
    for path in (a_file, a_file / "below"):
        proc = cli(
            *FOLDER_COMMANDS[command],
            "--mirror",
            dead_mirror,
            option,
            str(path),
            other,
            str(tmp_path / "other"),
        )
        assert_clear_error(proc, option, str(a_file), "exists and is not a directory")
        assert proc.returncode == 2, "a ConfigError exits with 2"
        assert "127.0.0.1" not in proc.stderr
    assert a_file.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("command", sorted(FOLDER_COMMANDS))
def test_a_cache_dir_that_cannot_be_created_is_refused_before_downloading(
    dead_mirror: str, tmp_path: Path, command: str
) -> None:
    """/proc takes no new folder, not even from root (whom os.access lets write anywhere)."""
    cache = Path("/proc/b2c-builder-cache")
    proc = cli(
        *FOLDER_COMMANDS[command],
        "--mirror",
        dead_mirror,
        "--cache-dir",
        str(cache),
        "--output",
        str(tmp_path / "out"),
    )
    assert_clear_error(proc, "--cache-dir", str(cache))
    assert proc.returncode == 2, "a ConfigError exits with 2"
    assert "127.0.0.1" not in proc.stderr
    assert "Errno" not in proc.stderr
    assert not (tmp_path / "out").exists()


@dataclass(frozen=True)
class ReadOnly:
    """A folder the CLI cannot write in, and the command prefix that runs the CLI so."""

    folder: Path
    wrap: tuple[str, ...]


# Root ignores permission bits: the folder is bind-mounted read-only over itself (its
# old-release subfolder stays writable) in a private mount namespace that only the CLI run
# sees. No chattr +i: not every file system has it.
_READ_ONLY_MOUNT = (
    'mount --bind -o ro "$1" "$1" && mount --bind "$1/old-release" "$1/old-release" && '
    'mount -o remount,bind,rw "$1/old-release" && shift && exec "$@"'
)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[ReadOnly]:
    """A folder nobody may write in, not even root, holding one old release folder."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / "old-release").mkdir()
    if os.geteuid() == 0:
        unshare = require_tool("unshare")
        yield ReadOnly(
            folder, (unshare, "--mount", "sh", "-c", _READ_ONLY_MOUNT, "sh", str(folder))
        )
        return
    folder.chmod(0o555)
    try:
        yield ReadOnly(folder, ())
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(
    ("option", "below"),
    [("--output", "releases"), ("--output", "old-release"), ("--cache-dir", "cache")],
    ids=["output-in-it", "output-beside-it", "cache-dir"],
)
def test_build_refuses_a_folder_it_cannot_write(
    dead_mirror: str, read_only: ReadOnly, option: str, below: str
) -> None:
    """--output old-release is writable itself, but the staging folder goes beside it."""
    folder = read_only.folder
    proc = cli("build", "--mirror", dead_mirror, option, str(folder / below), wrap=read_only.wrap)
    assert_clear_error(proc, option, "cannot write in", str(folder))
    assert "127.0.0.1" not in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["old-release"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--compression", "lz4"), ("--arch", "i386"), ("--arch", "mips64el")],
    ids=["lz4", "i386", "mips64el"],
)
def test_build_refuses_unknown_choices(dead_mirror: str, option: str, value: str) -> None:
    proc = cli("build", "--mirror", dead_mirror, option, value)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert option in proc.stderr and repr(value) in proc.stderr, proc.stderr
    assert "127.0.0.1" not in proc.stderr


@pytest.mark.parametrize("command", ["build", "run"])
def test_an_architecture_without_a_table_row_is_refused_naming_the_known_ones(
    command: str,
) -> None:
    """mips64el has no row in config.ARCHES (loader, QEMU board...): the error names the
    architectures that have one, for build and run alike."""
    proc = cli(command, "--arch", "mips64el")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    text = " ".join(proc.stderr.replace("│", " ").split())
    assert "'mips64el' is not one of" in text, proc.stderr
    assert all(f"'{arch}'" in text for arch in Arch), proc.stderr


def test_a_failed_download_is_never_called_done(dead_mirror: str, tmp_path: Path) -> None:
    proc = cli("build", "--mirror", dead_mirror, "--cache-dir", str(tmp_path / "cache"))
    assert_clear_error(proc, "cannot download", dead_mirror)
    assert proc.returncode == 1
    steps = [line for line in proc.stderr.splitlines() if line.startswith("INFO: ")]
    assert "done in" not in "\n".join(steps), proc.stderr
    assert steps[-1] == "INFO:   Reading the Debian archive index (trixie/amd64) failed", steps


def test_debug_shows_the_traceback(dead_mirror: str) -> None:
    proc = cli("--debug", "build", "--mirror", dead_mirror, "--suite", "Bad Suite")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr, proc.stderr


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    """A file standing for a kernel (the dry run never boots it)."""
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"MZ not really a kernel")
    return path


RUN_CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "kernel": (["--kernel", "/nonexistent"], ("--kernel", "/nonexistent")),
    "initrd": (["--initrd", "/nonexistent"], ("--initrd", "/nonexistent")),
    "disk": (["--disk", "/nonexistent"], ("--disk", "/nonexistent")),
    "memory-word": (["--memory", "lots"], ("--memory", "'lots'")),
    "memory-zero": (["--memory", "0"], ("--memory", "'0'")),
    "cpus": (["--cpus", "0"], ("--cpus",)),
    "timeout": (["--timeout", "0"], ("--timeout",)),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_run_refuses_bad_input(kernel: Path, case: str) -> None:
    args, words = RUN_CASES[case]
    if "--kernel" not in args:
        args = ["--kernel", str(kernel), *args]
    proc = cli("run", "--accel", "tcg", "--dry-run", *args)
    assert_clear_error(proc, *words)
    assert proc.returncode == 2
    assert "qemu-system" not in proc.stdout, "refused before building a QEMU command"


def option_value(cmd: list[str], option: str) -> str:
    assert cmd.count(option) == 1, cmd
    return cmd[cmd.index(option) + 1]


def test_run_dry_run_prints_the_qemu_command(kernel: Path, tmp_path: Path) -> None:
    initrd = tmp_path / "initramfs with space.cpio.zst"
    initrd.write_bytes(b"\x28\xb5\x2f\xfd")
    append = 'b2c.container="docker://registry:5000/x:latest echo hi" b2c.pipefail'
    proc = cli(
        "run",
        "--kernel",
        str(kernel),
        "--initrd",
        str(initrd),
        "--accel",
        "tcg",
        "--append",
        append,
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    # The b2c options make it a b2c boot: a job names run's device drivers (launch.prepare).
    job, archive, concatenation, line = proc.stdout.splitlines()
    assert job == f"# job cmdline: b2c.device_drivers=none ip={USER_NET_IP}"
    # The job's initrd is in run's work folder, gone once run exits: the dry run says so.
    path = archive.removeprefix("# ").split(": ")[0]
    assert archive.endswith(": the job above as an initrd, written by each run and removed "
                            "when it exits")  # fmt: skip
    assert path.endswith("/job.cpio") and not Path(path).exists()
    assert concatenation.endswith(f" {shlex.quote(path)}")
    assert (
        concatenation.startswith("# ")
        and f"concatenation of: {shlex.quote(str(initrd))} " in concatenation
    )
    cmd = shlex.split(line)
    assert cmd[0] == "qemu-system-x86_64"
    assert option_value(cmd, "-kernel") == str(kernel)
    assert option_value(cmd, "-accel") == "tcg"
    kernel_args = option_value(cmd, "-append")
    assert kernel_args.split()[:2] == ["console=ttyS0", "panic=-1"]
    assert kernel_args.endswith(append)
    assert "-no-reboot" in cmd


def plain_initrd(tmp_path: Path) -> Path:
    """An (empty) uncompressed initrd: without --initrd, run looks for a release."""
    path = tmp_path / "initrd.cpio"
    path.write_bytes(b"")
    return path


def test_run_dry_run_with_accel_auto_says_the_run_decides(kernel: Path, tmp_path: Path) -> None:
    proc = cli("run", "--kernel", str(kernel), "--initrd", str(plain_initrd(tmp_path)), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    comment, line = proc.stdout.splitlines()
    accel = option_value(shlex.split(line), "-accel")
    assert comment.startswith(f"# --accel auto: shown with {accel} ("), comment
    assert "KVM test guest" in comment and "accel auto: using" not in proc.stderr


def test_run_without_qemu_exits_253(kernel: Path, tmp_path: Path) -> None:
    initrd = str(plain_initrd(tmp_path))
    proc = cli(
        "run", "--kernel", str(kernel), "--initrd", initrd, "--accel", "tcg",
        env={"PATH": str(tmp_path)},
    )  # fmt: skip
    assert_clear_error(proc, "Could not find 'qemu-system-x86_64'")
    assert proc.returncode == 253, "QEMU could not start: the documented exit code"


def test_run_dry_run_with_two_initrds_names_both(kernel: Path, tmp_path: Path) -> None:
    parts = [tmp_path / "image.cpio.zst", tmp_path / "modules.cpio.zst"]
    for part in parts:
        part.write_bytes(b"\x28\xb5\x2f\xfd")
    proc = cli(
        "run",
        "--kernel",
        str(kernel),
        *(arg for part in parts for arg in ("--initrd", str(part))),
        "--accel",
        "tcg",
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    comment, line = proc.stdout.splitlines()
    assert comment.startswith("#") and all(str(p) in comment for p in parts)
    cmd = shlex.split(line)
    assert option_value(cmd, "-initrd") not in {str(p) for p in parts}
    assert option_value(cmd, "-initrd") in comment


ISSUE_OPTIONS = {
    "build": (
        *("--suite", "--arch", "--compression", "--output", "--mirror", "--keyring"),
        *("--no-verify-signature", "--cache-dir", "--extra-package", "--max-size"),
        *("--source-date-epoch", "--kernel-package", "--modules-dir", "--module"),
    ),
    "run": (
        *("--kernel", "--initrd", "--append", "--accel", "--memory", "--disk", "--timeout"),
        *("--serial-log", "--dry-run"),
    ),
}


def test_help_lists_every_option() -> None:
    wide = {"COLUMNS": "200"}  # rich wraps the help table at the terminal width
    proc = cli("--help", env=wide)
    assert proc.returncode == 0, proc.stderr
    for command in ("build", "run", "version"):
        assert command in proc.stdout
    for command, options in ISSUE_OPTIONS.items():
        proc = cli(command, "--help", env=wide)
        assert proc.returncode == 0, proc.stderr
        missing = [o for o in options if o not in proc.stdout]
        assert not missing, proc.stdout


@pytest.mark.parametrize("args", [("version",), ("--version",), ("--version", "run")])
def test_version(args: tuple[str, ...]) -> None:
    proc = b2c(*args)
    assert (proc.returncode, proc.stdout) == (0, f"{__version__}\n")


# --- the wheel ---------------------------------------------------------------------------

WHEEL_DATA = (
    "b2c_builder/_data/templates/init.sh.j2",
    "b2c_builder/_data/templates/rootfs/containers.conf.j2",
    "b2c_builder/_data/init/crun-no-pivot",
    "b2c_builder/_data/init/netavark-stub",
    "b2c_builder/_data/init/udhcpc.script",
)

INSTALLED_CHECK = """
import sys
from pathlib import Path
import b2c_builder
from b2c_builder import resources
from b2c_builder.guest import render
home = Path(sys.argv[1]).resolve()
assert Path(b2c_builder.__file__).resolve().is_relative_to(home), b2c_builder.__file__
init = render.render_init(render.InitSettings())
assert init.startswith(b"#!"), init[:40]
assert b"pipeline status" in init
for name in ("templates", "init"):
    assert resources.data_path(name).resolve().is_relative_to(home), resources.data_path(name)
wrapper = resources.data_path("init/crun-no-pivot").resolve()
assert wrapper.is_relative_to(home) and "_data" in wrapper.parts, wrapper
print("installed copy OK")
"""


# The interpreter the test venv was made from, not the venv running the tests: a venv made
# from it sees neither our venv's packages nor (without --system-site-packages) the base's.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


@pytest.mark.network  # pip fetches hatchling and the dependencies from PyPI
def test_wheel_ships_templates_and_init(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (wheel,) = dist.glob("b2c_builder-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in WHEEL_DATA:
            assert name in names, sorted(n for n in names if "_data" in n)
        shipped = {n.removeprefix("b2c_builder/_data/") for n in names if "/_data/" in n}
        in_tree = {
            str(p.relative_to(ROOT))
            for folder in ("templates", "init")
            for p in (ROOT / folder).rglob("*")
            if p.is_file()
        }
        assert in_tree <= shipped, in_tree - shipped
        assert (
            archive.read("b2c_builder/_data/init/crun-no-pivot")
            == (ROOT / "init/crun-no-pivot").read_bytes()
        )

    # What a user does: a fresh venv (nothing from the base Python or ours), the wheel and
    # its declared dependencies from the package index, the console script run elsewhere.
    venv = tmp_path / "venv"
    subprocess.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", str(wheel)],
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(venv / "bin/python"), "-c", INSTALLED_CHECK, str(venv)],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "installed copy OK" in proc.stdout
    proc = subprocess.run(
        [str(venv / "bin/b2c-builder"), "version"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=120,
    )
    assert (proc.returncode, proc.stdout) == (0, f"{__version__}\n"), proc.stderr


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        (("--cache-device", "auto"), True),
        (("--append", "b2c.cache_device=reset"), True),
        (("--cache-device", "auto", "--disk", "DISK"), False),
        (("--cache-device", "auto", "--qemu-arg=-drive", "--qemu-arg=file=DISK"), False),
        (("--append", "b2c.cache_device=auto", "--cache-device", "none"), False),
        ((), False),
    ],
)
def test_run_refuses_a_cache_device_without_a_disk(
    kernel: Path, tmp_path: Path, args: tuple[str, ...], refused: bool
) -> None:
    # The guest would wait 10 s for a disk, then boot without a cache (new-user trial).
    disk = tmp_path / "cache.img"
    disk.write_bytes(b"")
    args = tuple(a.replace("DISK", str(disk)) for a in args)
    proc = cli(
        "run", "--kernel", str(kernel), "--initrd", str(plain_initrd(tmp_path)),
        "--accel", "tcg", "--container", "docker://registry:5000/x sh", *args, "--dry-run",
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    if refused:
        assert proc.returncode == 2, proc.stderr
        assert "asks for a cache disk, but this boot has no disk" in proc.stderr
        assert "hint: add --disk FILE" in proc.stderr
        assert proc.stdout == ""
    else:
        assert proc.returncode == 0, proc.stderr


def test_run_dry_run_with_a_job_prints_the_command(kernel: Path, tmp_path: Path) -> None:
    """A container flag makes a job initrd; a dry run of it has no console nonce to check."""
    proc = cli(
        "run", "--kernel", str(kernel), "--initrd", str(plain_initrd(tmp_path)),
        "--accel", "tcg", "--container", "docker://registry:5000/x sh", "--dry-run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    cmd = shlex.split(proc.stdout.splitlines()[-1])
    assert cmd[0] == "qemu-system-x86_64"
    assert "# job cmdline:" in proc.stdout and "b2c.container" in proc.stdout


@pytest.mark.parametrize(
    ("append", "message"),
    [
        ("b2c.container=", "error: b2c.container: is empty"),
        ("b2c.network=nope", "error: b2c.network: must be auto or none, not 'nope'"),
    ],
)
def test_run_refuses_a_command_line_the_guest_would_refuse(
    kernel: Path, tmp_path: Path, append: str, message: str
) -> None:
    """The checks of check-cmdline, before anything boots (here: no QEMU on PATH, so a
    boot would have exited 253, not 2)."""
    initrd = str(plain_initrd(tmp_path))
    proc = cli(
        "run", "--kernel", str(kernel), "--initrd", initrd, "--accel", "tcg", "--append", append,
        env={"PATH": str(tmp_path)},
    )  # fmt: skip
    # The problem, once, then one error naming its option.
    assert proc.stderr.count(message) == 1, proc.stderr
    assert_clear_error(proc, message.split(":")[1].strip(), "printed above")
    assert proc.returncode == 2
    # --no-check boots it anyway (to see the guest's handling): here QEMU is missing.
    proc = cli(
        "run", "--kernel", str(kernel), "--initrd", initrd, "--accel", "tcg", "--append", append,
        "--no-check", env={"PATH": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 253, proc.stderr


def test_run_refuses_a_junit_path_it_could_not_write(kernel: Path, tmp_path: Path) -> None:
    initrd = str(plain_initrd(tmp_path))
    proc = cli(
        "run", "--kernel", str(kernel), "--initrd", initrd, "--accel", "tcg",
        "--append", "b2c.container=docker://x/y", "--junit", str(tmp_path / "no" / "r.xml"),
        env={"PATH": str(tmp_path)},
    )  # fmt: skip
    assert_clear_error(proc, "--junit")
    assert proc.returncode == 2


def test_run_starts_without_the_build_sides_heavy_imports() -> None:
    # Every `b2c-builder run` of a kernel developer's loop pays its imports before QEMU
    # starts: requests (the Debian client) and pyelftools (module closures, needed only with
    # --modules-dir) took 0.08 s of the 0.45 s a --dry-run took on the project's machine.
    code = (
        "import sys, b2c_builder.cli, b2c_builder.boot.launch\n"
        "print(' '.join(m for m in ('requests', 'elftools') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_help_shows_each_paragraph_wrapped_at_the_terminal_not_at_the_source() -> None:
    # Typer's rich help keeps a docstring's line breaks: they came from the source's own
    # wrapping and broke --help's lines mid-sentence ("(with" / "what `b2c-builder run`").
    proc = subprocess.run(
        [sys.executable, "-m", "b2c_builder", "check-cmdline", "--help"],
        capture_output=True, text=True, cwd=ROOT, check=True,
        env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert (
        "Also checks the line as a whole: its length against the kernel's limit (with what "
        "`b2c-builder run`, or the --format boot loader, adds), a UTF-8 byte-order mark"
    ) in proc.stdout
    assert "Report what /init would reject or warn about in CMDLINE, without booting." in (
        proc.stdout
    )
