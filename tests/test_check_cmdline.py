"""`b2c-builder check-cmdline`: the option table's linter, for lab admins' boot entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from b2c_builder.guest.options import check_length, lint_cmdline
from tests.conftest import b2c


def test_clean_line_exits_zero() -> None:
    proc = b2c("check-cmdline", "b2c.container=\"docker://r/img:1 sh -c 'exit 0'\" b2c.pipefail")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


NO_CONTAINER = (
    "warning: cmdline: no b2c.container, b2c.post_container or b2c.service: the boot runs no "
    "container"
)


def test_malformed_value_and_unknown_option_are_errors() -> None:
    proc = b2c("check-cmdline", "b2c.poweroff_delay=abc b2c.no_such_option=1 quiet")
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert any(line.startswith("error: b2c.poweroff_delay") for line in lines), lines
    assert "error: b2c.no_such_option: unknown option (/init would ignore it); " in proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_misspelt_option_is_an_error_naming_the_option_meant() -> None:
    """/init warns about an unknown b2c option and boots without it (the container is lost);
    the host refuses it, with the closest name from the option table."""
    proc = b2c("check-cmdline", 'console=ttyS0 b2c.containr="docker://r/j:1" b2c.cache_device=auto')
    assert proc.returncode == 2
    # Only the error: that the line then runs no container, it says already.
    assert proc.stdout.splitlines() == [
        "error: b2c.containr: unknown option (/init would ignore it); did you mean b2c.container?",
    ]
    # An alias is a name too; nothing close: the README's table.
    assert "did you mean b2c.run_post?" in b2c("check-cmdline", "b2c.run_pots=x").stdout
    proc = b2c("check-cmdline", "b2c.container=docker://r/j:1 b2c.frobnicate")
    assert proc.stdout == (
        "error: b2c.frobnicate: unknown option (/init would ignore it); the README's option "
        "table lists them\n"
    )


def test_a_value_close_to_a_keyword_gets_it_suggested() -> None:
    proc = b2c(
        "check-cmdline",
        "b2c.container=docker://r/j:1 b2c.cache_device=autoo b2c.cache_evict=unusd "
        "b2c.ntp_peer=autoo",
    )
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        "error: b2c.cache_evict: must be unused, never or all, not 'unusd'; did you mean unused?",
        "error: b2c.cache_device: no b2c.filesystem is named 'autoo'; did you mean auto?",
        # A valid host name, so a warning.
        "warning: b2c.ntp_peer: 'autoo' is read as a name, not as the keyword auto: did you "
        "mean b2c.ntp_peer=auto?",
    ]
    # A filesystem of that name exists: no suggestion; a name far from any keyword: none.
    line = "b2c.container=r/j b2c.filesystem=autoo,src=x,type=9p b2c.cache_device=autoo"
    assert b2c("check-cmdline", line).stdout == ""
    proc = b2c("check-cmdline", "b2c.container=r/j b2c.cache_device=nfsroot")
    assert proc.stdout == "error: b2c.cache_device: no b2c.filesystem is named 'nfsroot'\n"


def test_a_line_without_a_container_is_a_warning() -> None:
    proc = b2c("check-cmdline", "console=ttyS0 b2c.cache_device=auto")
    assert (proc.returncode, proc.stdout) == (0, NO_CONTAINER + "\n")
    for line in ["b2c.run=r/j", "b2c.service=r/db", "b2c.extra_args_url=https://h/args"]:
        assert b2c("check-cmdline", line).stdout == "", line


def test_bootcfg_iso_and_run_refuse_a_misspelt_option(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"MZ not a kernel")
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(b"070701")
    typo = "b2c.containr=docker://r/j:1"
    for args in [
        ("bootcfg", "--format", "pxelinux", "--kernel", "K", "--initrd", "I", "--append", typo),
        ("iso", "--kernel", str(kernel), "--initrd", str(initrd), "--append", typo,
         "--output", str(tmp_path / "b2c.iso")),
        ("run", "--kernel", str(kernel), "--initrd", str(initrd), "--accel", "tcg",
         "--dry-run", "--append", typo),
    ]:  # fmt: skip
        proc = b2c(*args)
        assert (proc.returncode, proc.stdout) == (2, ""), (args, proc.stdout, proc.stderr)
        assert "did you mean b2c.container?" in proc.stderr
    assert not (tmp_path / "b2c.iso").exists()


def test_check_extra_args_refuses_a_misspelt_option(tmp_path: Path) -> None:
    document = tmp_path / "args"
    document.write_bytes(b"b2c.containr=docker://r/j:1 b2c.cache_device=autoo\n")
    proc = b2c("check-extra-args", str(document))
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        "error: b2c.containr: unknown option (/init would ignore it); did you mean b2c.container?",
        "error: b2c.cache_device: no b2c.filesystem is named 'autoo'; did you mean auto?",
    ]


# --- the line as a whole: length, stray bytes, secrets ------------------------------------

RUN_ADDS = "console=ttyS0 panic=-1 "  # what `b2c-builder run` puts in front (qemu.kernel_cmdline)


def line_of(size: int, *, prefix: str = "b2c.container=r/i:1 x=") -> str:
    """A valid command line of exactly ``size`` bytes."""
    return prefix + "a" * (size - len(prefix))


def test_check_length_counts_bytes_the_added_text_and_the_nul() -> None:
    # 2048 bytes of buffer: 2047 for the line, 1 for the NUL.
    assert check_length(line_of(2047), "amd64") is None
    problem = check_length(line_of(2048), "amd64")
    assert problem is not None and problem.severity == "error"
    assert "2049 bytes" in problem.message and "2048 bytes" in problem.message
    assert "last 1 bytes" in problem.message and "b2c.extra_args_url" in problem.message
    # What the boot loader adds counts too.
    assert check_length(line_of(2047 - 20), "arm64", added="BOOT_IMAGE=/vmlinuz ") is None
    added = check_length(line_of(2048 - 20), "arm64", added="BOOT_IMAGE=/vmlinuz ")
    assert added is not None and "'BOOT_IMAGE=/vmlinuz'" in added.message
    # UTF-8 bytes, not characters: 'é' is two bytes.
    assert check_length(line_of(2045) + "é", "amd64") is None
    assert check_length(line_of(2046) + "é", "amd64") is not None


def test_cli_length_error_counts_what_run_adds() -> None:
    fits = line_of(2047 - len(RUN_ADDS))
    proc = b2c("check-cmdline", fits)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr
    proc = b2c("check-cmdline", fits + "a")
    assert proc.returncode == 2
    (line,) = proc.stdout.splitlines()
    assert line.startswith(
        "error: cmdline: 2025 bytes + 23 added by b2c-builder run ('console=ttyS0 panic=-1')"
    )
    assert "COMMAND_LINE_SIZE" in line and "amd64" in line
    assert "(an x86 kernel under QEMU boots to silence)" in line
    # arm64: run adds console=ttyAMA0 (two bytes more), so the same line no longer fits.
    proc = b2c("check-cmdline", "--arch", "arm64", fits)
    assert proc.returncode == 2
    assert proc.stdout.startswith("error: cmdline: 2024 bytes + 25 added by b2c-builder run")
    assert "arm64 kernel's COMMAND_LINE_SIZE" in proc.stdout
    # The x86 remark is for an x86 kernel only.
    assert "x86" not in proc.stdout
    proc = b2c("check-cmdline", "--arch", "riscv64", line_of(1024))
    assert proc.returncode == 2 and "1024 bytes of the riscv64 kernel's" in proc.stdout
    assert "x86" not in proc.stdout


def test_a_boot_loader_is_named_and_no_qemu_remark_is_made() -> None:
    """With --format (and in bootcfg), what the loader adds is named after it, and the remark
    about QEMU's direct boot does not apply; bootcfg prints the error once."""
    proc = b2c("check-cmdline", "--format", "pxelinux", "--kernel", "K", line_of(2040))
    assert proc.returncode == 2
    assert "added by PXELINUX ('BOOT_IMAGE=K')" in proc.stdout and "x86" not in proc.stdout
    proc = b2c(
        *("bootcfg", "--format", "pxelinux", "--kernel", "K", "--initrd", "I"),
        *("--arch", "riscv64", "--append", line_of(1010)),
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.count("COMMAND_LINE_SIZE") == 1, proc.stderr
    assert "added by PXELINUX ('BOOT_IMAGE=K  initrd=I')" in proc.stderr
    assert "x86" not in proc.stderr
    assert "the command line has 1 error(s) (cmdline), printed above; nothing was written" in (
        proc.stderr
    )


def test_bom_and_cr_are_errors() -> None:
    proc = b2c("check-cmdline", "\ufeffb2c.pipefail b2c.poweroff_delay=3\r")
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("error: cmdline: a UTF-8 byte-order mark (EF BB BF) at byte 0")
    # Byte offsets: the BOM is 3 bytes, then 33 ASCII characters.
    assert lines[1].startswith("error: cmdline: a carriage return (CR) at byte 36")
    assert lines[2:] == [NO_CONTAINER]


def test_a_quote_never_closed_is_an_error_naming_where_and_what_it_swallows() -> None:
    # The kernel reads the rest of the line into b2c.container's value (lib/cmdline.c), so
    # b2c.pipefail is no option any more; with the quote closed the line is clean.
    proc = b2c("check-cmdline", 'quiet b2c.container="-ti docker://r/i:1 b2c.pipefail')
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        "error: cmdline: a double quote at byte 20 is never closed: the kernel reads the "
        "rest of the line ('-ti docker://r/i:1 b2c.pipefail') into one value, so no option "
        "after it counts; close the quote"
    ]
    proc = b2c("check-cmdline", 'quiet b2c.container="-ti docker://r/i:1" b2c.pipefail')
    assert (proc.returncode, proc.stdout) == (0, "")
    # Quotes opened and closed inside a word, as the kernel allows, are balanced.
    proc = b2c("check-cmdline", 'b2c.container="a"b" c"')
    assert (proc.returncode, proc.stdout) == (0, "")
    # Nothing after it: only its own value ends with the line (and what a loader appends).
    proc = b2c("check-cmdline", 'quiet b2c.container=r/j b2c.hostname="foo')
    assert proc.returncode == 2
    assert proc.stdout == (
        "error: cmdline: a double quote at byte 37 is never closed: the kernel ends that "
        "value with the line (with anything a boot loader appends after it); close the quote\n"
    )


def test_words_after_an_unquoted_value_are_a_warning_with_the_quoted_form() -> None:
    """The kernel ends an unquoted value at the first space: the container's command goes
    to /init as arguments. A warning, not an error: such words may be the kernel's flags."""
    proc = b2c("check-cmdline", "b2c.container=docker://r/j:1 sh -c make check")
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "warning: b2c.container: 'sh -c make check' after its unquoted value: they reach "
        "/init as arguments, not b2c.container (the kernel keeps its own flags, such as quiet "
        "or ro); if that is its value, quote it: "
        'b2c.container="docker://r/j:1 sh -c make check"'
    ]
    # The kernel's flags at the end are left out; a " inside becomes ' in the quoted form.
    proc = b2c("check-cmdline", "b2c.run=r/j b2c.hostname=my host quiet ro")
    assert proc.stdout.splitlines() == [
        "warning: b2c.hostname: 'host' after its unquoted value: it reaches /init as an "
        "argument, not b2c.hostname (the kernel keeps its own flags, such as quiet or ro); if "
        'that is its value, quote it: b2c.hostname="my host"'
    ]
    proc = b2c("check-cmdline", 'b2c.container=r/j sh -c "make check" b2c.pipefail')
    assert proc.stdout.endswith("""quote it: b2c.container="r/j sh -c 'make check'"\n""")
    # A kernel flag among the words is the kernel's: it is not among those named.
    proc = b2c("check-cmdline", "b2c.container=r/j quiet sh ro")
    assert proc.stdout.startswith("warning: b2c.container: 'sh' after its unquoted value: it ")
    assert proc.stdout.endswith('quote it: b2c.container="r/j quiet sh"\n')
    # Quoted values, options, `--` and the kernel's flags alone after a value are fine,
    # whatever the value holds: the kernel keeps quiet, ro or nokaslr, /init never sees them.
    for line in [
        'b2c.container="r/j sh" quiet',
        "b2c.container=r/j b2c.pipefail",
        "b2c.container=r/j -- sh",
        "b2c.container=r/j b2c.cache_device=auto quiet ro",
        "b2c.container=docker://r/j:1 quiet",
        "b2c.container=docker://r/j:1 quiet ro nokaslr",
        "b2c.container=r/j b2c.hostname=lab1 debug",
    ]:
        assert b2c("check-cmdline", line).stdout == "", line


@pytest.mark.parametrize(
    ("line", "option", "what"),
    [
        ('b2c.container="--creds bot:hunter2 docker://r/i:1"', "b2c.container", "--creds"),
        ('b2c.container="--creds=bot:hunter2 docker://r/i:1"', "b2c.container", "--creds"),
        ('b2c.container="-e CI_JOB_TOKEN=abc docker://r/i:1"', "b2c.container", "CI_JOB_TOKEN="),
        ('b2c.service="--env=DB_PASSWORD=x docker://r/db"', "b2c.service", "DB_PASSWORD="),
        ("b2c.extra_args_url=https://bot:hunter2@h/args", "b2c.extra_args_url", "password"),
        ("my_secret=abc", "my_secret", "option name"),
    ],
)
def test_secret_looking_values_are_warnings(line: str, option: str, what: str) -> None:
    problems = lint_cmdline(line)
    secrets = [p for p in problems if "/proc/cmdline" in p.message]
    assert len(secrets) == 1, problems
    assert secrets[0].severity == "warning" and secrets[0].option == option
    assert what in secrets[0].message and "b2c.extra_args_url" in secrets[0].message
    # A warning: check-cmdline still exits 0.
    proc = b2c("check-cmdline", line)
    assert proc.returncode == 0 and f"warning: {option}:" in proc.stdout


def test_no_secret_warning_for_ordinary_values() -> None:
    line = "b2c.container=\"-e MODE=fast -v /a:/b docker://user@registry/i:1 sh -c 'echo $X'\""
    assert lint_cmdline(line) == []


def test_extra_args_documents_are_where_secrets_belong() -> None:
    assert lint_cmdline('b2c.container="--creds a:b docker://r/i"', source="extra") == []


def test_run_refuses_an_over_long_line_at_once(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"MZ not a kernel")
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(b"070701")
    common = ["run", "--kernel", str(kernel), "--initrd", str(initrd), "--accel", "tcg"]
    ok = b2c(*common, "--append", line_of(2047 - len(RUN_ADDS)), "--dry-run")
    assert ok.returncode == 0, ok.stderr
    proc = b2c(*common, "--append", line_of(2048 - len(RUN_ADDS)), "--dry-run")
    assert proc.returncode == 2
    assert "qemu-system" not in proc.stdout
    assert "--append: 2025 bytes + 23 added by b2c-builder run" in proc.stderr
    assert "(an x86 kernel under QEMU boots to silence)" in proc.stderr
    assert "COMMAND_LINE_SIZE" in proc.stderr and "Traceback" not in proc.stderr


def test_run_lints_append_apart_from_its_job(tmp_path: Path) -> None:
    """A quote left open in --append ends with the kernel's line: it neither swallows the
    job's options (a --container) nor makes their words its value."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"MZ not a kernel")
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(b"070701")
    proc = b2c(
        "run", "--kernel", str(kernel), "--initrd", str(initrd), "--accel", "tcg", "--dry-run",
        "--append", 'quiet b2c.hostname="foo', "--container", "-ti docker://r/i:1",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "b2c.hostname" not in proc.stderr
    assert "is never closed: the kernel ends that value with the line" in proc.stderr


def test_a_single_quoted_value_says_the_kernel_groups_only_in_double_quotes() -> None:
    proc = b2c("check-cmdline", "b2c.container='docker://r/j:1 sh -c make'")
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        "error: b2c.container: unbalanced ' quote in \"'docker://r/j:1\"; the kernel groups "
        "words only inside double quotes, so the value ended at the first space: write "
        'b2c.container="docker://r/j:1 sh -c make"'
    ]
    # One single-quoted word is fine: /init removes the quotes.
    assert b2c("check-cmdline", "b2c.container='docker://r/j:1'").stdout == ""


def test_an_option_given_twice_gets_a_note_naming_the_one_init_keeps() -> None:
    line = "b2c.run=r/j b2c.cache_device=auto b2c.pipefail b2c.cache_device=none b2c.pipefail"
    proc = b2c("check-cmdline", line)
    assert (proc.returncode, proc.stdout) == (
        0,
        "note: b2c.cache_device: given 2 times: /init keeps the last one ('none')\n",
    )
    # The same value twice, and repeatable options, are no news.
    line = "b2c.run=r/j b2c.run=r/k b2c.hostname=h b2c.hostname=h"
    assert b2c("check-cmdline", line).stdout == ""


def test_a_line_the_shell_split_is_refused_with_how_to_quote_it() -> None:
    # Unquoted, the shell hands check-cmdline several words and drops the line's quotes:
    # checking them joined would check another line than the boot loader's.
    proc = b2c("check-cmdline", "console=ttyS0", "b2c.container=docker://r/j:1", "sh")
    assert proc.returncode == 2 and not proc.stdout
    assert "check-cmdline takes the command line as one argument, not 3" in proc.stderr
    assert "hint: put the whole line in single quotes: b2c-builder check-cmdline '" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_loader_check_without_initrd_warns_that_bootcfg_would_refuse_it() -> None:
    line = "console=ttyS0 b2c.container=docker://r/j:1"
    proc = b2c("check-cmdline", "--format", "pxelinux", line)
    assert proc.returncode == 0
    assert proc.stdout == (
        "warning: cmdline: no --initrd: bootcfg refuses an entry without one (the image holds "
        "/init), and what PXELINUX adds for an initrd is not counted in the length\n"
    )
    proc = b2c("check-cmdline", "--format", "pxelinux", "--initrd", "/b2c/i.cpio", line)
    assert proc.returncode == 0 and proc.stdout == ""
