"""The cache device, b2c.filesystem, b2c.swap, b2c.volume and releasing them at shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from b2c_builder.run import run
from tests.shell import Result, Shell


def ext_image(label: str = "") -> bytes:
    """The first 2 KiB of an ext4 filesystem: the superblock's magic and volume name."""
    data = bytearray(2048)
    data[1080:1082] = b"\x53\xef"
    data[1144 : 1144 + len(label)] = label.encode()
    return bytes(data)


def disk(
    sh: Shell,
    name: str,
    *,
    removable: int = 0,
    type_: int = 0,
    parts: dict[str, bytes] | None = None,
) -> None:
    sh.write(f"sys/block/{name}/removable", f"{removable}\n")
    sh.write(f"sys/block/{name}/size", "2097152\n")
    sh.write(f"sys/block/{name}/device/type", f"{type_}\n")
    sh.write(f"sys/class/block/{name}/dev", "8:0\n")
    sh.write(f"dev/{name}", b"\0" * 2048)
    for part, data in (parts or {}).items():
        sh.write(f"sys/block/{name}/{part}/partition", "1\n")
        sh.write(f"sys/class/block/{part}/partition", "1\n")
        sh.write(f"dev/{part}", data)


def setup_cache(sh: Shell, cmdline: str) -> Result:
    # sfdisk's stub makes the kernel "create" partition 1 of the disk it was given.
    sh.stub(
        "sfdisk",
        'cat >/dev/null; for d in "$@"; do :; done\n'
        'case $d in *[0-9]) : >"${d}p1" ;; *) : >"${d}1" ;; esac',
    )
    sh.write("line", cmdline)
    return sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline || exit 99\n'
        'b2c_setup_cache; echo "rc=$?"; b2c_setup_swap; cat "$B2C_ROOT/run/b2c/mounts"\n'
        'echo "no exit command: ${B2C_CONMON_NO_EXIT_COMMAND:-unset}"'
    )


def rel(result: Result, calls: list[list[str]]) -> list[list[str]]:
    """Calls with the scratch root stripped from their arguments."""
    root = str(result.root)
    return [[arg.replace(root, "") for arg in call] for call in calls]


def test_ext_label_reader_against_mkfs(tmp_path: Path) -> None:
    image = tmp_path / "fs.img"
    image.write_bytes(b"")
    run(["truncate", "-s", "4M", str(image)], reason="make a filesystem image")
    run(["mkfs.ext4", "-q", "-F", "-L", "B2C_CACHE", str(image)], reason="make a filesystem image")
    (tmp_path / "blank.img").write_bytes(b"\0" * 4096)
    result = Shell(tmp_path).run(
        f"b2c_ext_label '{image}'; echo \"$?:$B2C_LABEL\"\n"
        f"b2c_ext_label '{tmp_path / 'blank.img'}'; echo \"$?:$B2C_LABEL\""
    )
    assert result.lines == ["0:B2C_CACHE", "1:"]


def test_no_cache_is_a_tmpfs(tmp_path: Path) -> None:
    result = setup_cache(Shell(tmp_path), "")
    assert rel(result, result.called("mount")) == [
        ["-t", "tmpfs", "-o", "mode=0700", "tmpfs", "/var/lib/containers"],
        # Pulls stage blobs in /var/tmp: on the storage's tmpfs, not in the initramfs.
        ["-o", "bind", "/var/lib/containers/tmp", "/var/tmp"],
    ]
    assert "rc=0" in result.lines
    # Set for each podman run (pipeline.sh), never for the whole boot.
    assert result.lines[-1] == "no exit command: unset"
    # Not recorded for the shutdown path: a tmpfs has nothing to flush.
    assert not (result.root / "run/b2c/mounts").exists()


def test_auto_reuses_the_labelled_partition(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    disk(sh, "vda", parts={"vda1": ext_image("OTHER"), "vda2": ext_image("B2C_CACHE")})
    result = setup_cache(sh, "b2c.cache_device=auto")
    assert result.called("mkfs_ext4") == [] and result.called("sfdisk") == []
    assert rel(result, result.called("mount")) == [
        ["/dev/vda2", "/storage"],
        ["-o", "bind", "/storage/containers", "/var/lib/containers"],
        ["-o", "bind", "/storage/tmp", "/var/tmp"],
    ]
    assert (sh.root / "storage/containers").is_dir()
    assert "[1.00]: Mounted the cache partition /dev/vda2 on /storage" in result.lines
    # The cache outlives the boot: podman's exit command cleans up what it leaves there.
    assert result.lines[-1] == "no exit command: unset"


@pytest.mark.parametrize(("name", "part"), [("vda", "vda1"), ("nvme0n1", "nvme0n1p1")])
def test_auto_partitions_the_first_fixed_disk(tmp_path: Path, name: str, part: str) -> None:
    sh = Shell(tmp_path)
    disk(sh, "sr0", type_=5)
    disk(sh, "loop0")
    disk(sh, "sda", removable=1)
    disk(sh, name)
    result = setup_cache(sh, "b2c.cache_device=auto")
    assert rel(result, result.called("sfdisk")) == [["--quiet", "--wipe", "always", f"/dev/{name}"]]
    assert rel(result, result.called("mkfs_ext4")) == [
        ["-q", "-F", "-L", "B2C_CACHE", f"/dev/{part}"]
    ]
    assert rel(result, result.called("mount"))[0] == [f"/dev/{part}", "/storage"]


def test_auto_without_disk_waits_then_goes_on_without_cache(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    disk(sh, "sr0", type_=5)
    result = setup_cache(sh, "b2c.cache_device=auto")
    assert len(result.called("sleep")) == 20
    assert result.warnings() == ["b2c: warning: no disk found for b2c.cache_device=auto: no cache"]
    assert rel(result, result.called("mount")) == [
        ["-t", "tmpfs", "-o", "mode=0700", "tmpfs", "/var/lib/containers"],
        # Pulls stage blobs in /var/tmp: on the storage's tmpfs, not in the initramfs.
        ["-o", "bind", "/var/lib/containers/tmp", "/var/tmp"],
    ]


def test_reset_reformats_the_labelled_partition(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    disk(sh, "vda", parts={"vda1": ext_image("B2C_CACHE")})
    result = setup_cache(sh, "b2c.cache_device=reset")
    assert rel(result, result.called("mkfs_ext4")) == [["-q", "-F", "-L", "B2C_CACHE", "/dev/vda1"]]
    assert result.called("sfdisk") == []


@pytest.mark.parametrize(
    ("data", "formatted"), [(ext_image("DATA"), False), (ext_image(""), True), (b"\0" * 2048, True)]
)
def test_a_partition_is_reused_if_labelled_else_formatted(
    tmp_path: Path, data: bytes, formatted: bool
) -> None:
    sh = Shell(tmp_path)
    disk(sh, "vdb", parts={"vdb1": data})
    result = setup_cache(sh, "b2c.cache_device=/dev/vdb1")
    assert bool(result.called("mkfs_ext4")) == formatted
    assert rel(result, result.called("mount"))[0] == ["/dev/vdb1", "/storage"]


def test_a_disk_reuses_its_labelled_partition_or_is_partitioned(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    disk(sh, "vda", parts={"vda1": ext_image("B2C_CACHE")})
    disk(sh, "vdb", parts={"vdb1": ext_image("x"), "vdb2": ext_image("B2C_CACHE")})
    result = setup_cache(sh, "b2c.cache_device=/dev/vdb")
    assert rel(result, result.called("mount"))[0] == ["/dev/vdb2", "/storage"]
    disk(sh, "vdc")
    result = setup_cache(sh, "b2c.cache_device=/dev/vdc")
    assert rel(result, result.called("sfdisk")) == [["--quiet", "--wipe", "always", "/dev/vdc"]]
    assert rel(result, result.called("mount"))[0] == ["/dev/vdc1", "/storage"]


def test_a_missing_device_is_waited_for_then_skipped(tmp_path: Path) -> None:
    result = setup_cache(Shell(tmp_path), "b2c.cache_device=/dev/sdz")
    assert len(result.called("sleep")) == 20
    assert result.warnings() == [
        "b2c: warning: the cache device /dev/sdz did not appear within 10s: no cache"
    ]
    assert result.lines[-2:] == ["rc=0", "no exit command: unset"]  # a tmpfs instead


def test_a_filesystem_as_cache(tmp_path: Path) -> None:
    result = setup_cache(
        Shell(tmp_path),
        "b2c.filesystem=store,type=nfs,src=10.42.0.1:/nfs,opts=nolock|vers=3 "
        "b2c.cache_device=store",
    )
    assert rel(result, result.called("mount"))[0] == [
        "-t",
        "nfs",
        "-o",
        "nolock,vers=3",
        "10.42.0.1:/nfs",
        "/storage",
    ]
    assert result.lines[-5] == "rc=0"
    assert result.lines[-1] == "no exit command: unset"


def test_an_undefined_filesystem_is_an_error(tmp_path: Path) -> None:
    result = setup_cache(Shell(tmp_path), "b2c.cache_device=nowhere")
    assert result.errors() == ["b2c: error: there is no b2c.filesystem named 'nowhere'"]
    assert "rc=1" in result.lines


def test_a_mount_failure_falls_back_to_tmpfs(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    disk(sh, "vda", parts={"vda1": ext_image("B2C_CACHE")})
    sh.stub("mount", '[ "$2" != "$B2C_ROOT/storage" ]')
    result = setup_cache(sh, "b2c.cache_device=auto")
    assert result.warnings() == [
        "b2c: warning: could not mount the cache partition /dev/vda1: no cache"
    ]
    assert [m[-1] for m in rel(result, result.called("mount"))[-2:]] == [
        "/var/lib/containers",
        "/var/tmp",
    ]


def test_swap_on_the_cache(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    disk(sh, "vda", parts={"vda1": ext_image("B2C_CACHE")})
    sh.stub("fallocate", ': >"$3"')
    result = setup_cache(sh, "b2c.cache_device=auto b2c.swap=2G")
    assert rel(result, result.called("fallocate")) == [["-l", str(2 << 30), "/storage/swapfile"]]
    assert rel(result, result.called("mkswap")) == [["/storage/swapfile"]]
    assert rel(result, result.called("swapon")) == [["/storage/swapfile"]]
    assert (sh.root / "run/b2c/swapfile").read_text() == f"{sh.root}/storage/swapfile\n"


def test_swap_without_cache_is_a_warning(tmp_path: Path) -> None:
    result = setup_cache(Shell(tmp_path), "b2c.swap=1G")
    assert result.warnings() == ["b2c: warning: b2c.swap needs a cache device: no swap"]
    assert result.called("swapon") == []


# --- volumes and release -------------------------------------------------------------------

VOLUME_PODMAN = """\
case "$1 $2" in
    "volume ls") printf 'old1\\nold2\\n' ;;
    "volume exists") [ "$3" = kept ] ;;
    "volume inspect") echo "/var/lib/containers/storage/volumes/$5/_data" ;;
esac
"""


def test_volumes(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("podman", VOLUME_PODMAN)
    result = sh.run(
        "b2c_parse_cmdline 'b2c.filesystem=share,type=9p,src=share,opts=trans=virtio "
        "b2c.volume=job,filesystem=share,expiration=pipeline_end b2c.volume=kept' cmdline "
        "|| exit 99\n"
        'b2c_setup_volumes; echo "rc=$?"; b2c_release_volumes; b2c_release_storage'
    )
    podman = result.called("podman")
    assert podman[:6] == [
        ["volume", "ls", "--quiet", "--filter", "label=expiration=pipeline_end"],
        ["volume", "rm", "--force", "old1"],
        ["volume", "rm", "--force", "old2"],
        ["volume", "exists", "job"],
        ["volume", "create", "--label", "expiration=pipeline_end", "job"],
        ["volume", "inspect", "--format", "{{.Mountpoint}}", "job"],
    ]
    assert ["volume", "exists", "kept"] in podman
    assert not [c for c in podman if c[:2] == ["volume", "create"] and c[-1] == "kept"]
    data = "/var/lib/containers/storage/volumes/job/_data"
    assert rel(result, result.called("mount")) == [
        ["-t", "9p", "-o", "trans=virtio", "share", data]
    ]
    # Unmounted once: b2c_release_storage must not try the volume's mount again.
    assert rel(result, result.called("umount")) == [[data]]
    assert result.warnings() == []
    assert "rc=0" in result.lines


def test_volume_with_unknown_filesystem_fails(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.stub("podman", VOLUME_PODMAN)
    result = sh.run(
        'b2c_parse_cmdline b2c.volume=v,filesystem=nope cmdline; b2c_setup_volumes; echo "rc=$?"'
    )
    assert result.errors() == ["b2c: error: there is no b2c.filesystem named 'nope'"]
    assert result.lines[-1] == "rc=1"


def test_release_storage_in_reverse_order(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write(
        "run/b2c/mounts", f"{sh.root}/storage\n{sh.root}/var/lib/containers\n{sh.root}/var/tmp\n"
    )
    sh.write("run/b2c/swapfile", f"{sh.root}/storage/swapfile\n")
    sh.stub("umount", '[ "$1" != "$B2C_ROOT/var/tmp" ]')
    result = sh.run("b2c_release_storage")
    assert rel(result, result.calls) == [
        ["sync"],
        ["swapoff", "/storage/swapfile"],
        ["umount", "/var/tmp"],
        ["mount", "-o", "remount,ro", "/var/tmp"],
        ["umount", "/var/lib/containers"],
        ["umount", "/storage"],
        ["sync"],
    ]
    assert result.warnings() == ["b2c: warning: could not unmount /var/tmp: remounted it read-only"]
    assert not (sh.root / "run/b2c/mounts").exists()
