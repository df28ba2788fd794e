"""podman's store on the cache: a damaged store is wiped (volumes kept), a full cache evicts
the images this boot does not use (least recently used first), a full tmpfs says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.shell import Result, Shell

STORAGE = "var/lib/containers/storage"

# df on the cache: room to spare, and full.
ROOMY_DF = """\
echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'
echo '/dev/vda1 1024000 24000 1000000 3% /storage'
"""
FULL_DF = """\
echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'
echo '/dev/vda1 1024000 1023900 100 100% /storage'
"""


# --- a damaged store ------------------------------------------------------------------------


def damaged_store(sh: Shell, *, heals: bool = True) -> None:
    """A store whose db.sql podman cannot open; wiping it heals it unless ``heals`` is False."""
    sh.write(f"{STORAGE}/db.sql", b"\0" * 100)
    sh.write(f"{STORAGE}/overlay-images/images.json", '[{"id":"ab')
    sh.write(f"{STORAGE}/overlay/l/ABC", "layer")
    sh.write(f"{STORAGE}/volumes/keep/_data/f", "KEPT\n")
    sh.write("storage/b2c/lru", "1 abcdef012345\n")
    condition = f'[ -e "$B2C_ROOT/{STORAGE}/db.sql" ]' if heals else "true"
    sh.stub(
        "podman",
        f"""\
        case $1 in
            images)
                if {condition}; then
                    echo 'Error: database disk image is malformed' >&2
                    return 125
                fi
                ;;
        esac
        return 0
        """,
    )


def check_store(sh: Shell) -> Result:
    return sh.run('B2C_CACHE_ON=1; b2c_check_store; echo "rc=$?"')


def test_a_damaged_store_is_wiped_but_its_volumes_are_kept(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    damaged_store(sh)
    result = check_store(sh)
    assert result.warnings() == [
        "b2c: warning: podman cannot open its storage on the cache (Error: database disk image "
        "is malformed): wiping it, volumes kept"
    ]
    assert result.lines[-1] == "rc=0"
    assert (
        "[1.00]: Wiped podman's storage on the cache (volumes kept): images will be pulled again"
        in result.lines
    )
    storage = sh.root / STORAGE
    assert sorted(p.name for p in storage.iterdir()) == ["volumes"]
    assert (storage / "volumes/keep/_data/f").read_text() == "KEPT\n"
    assert not (sh.root / "storage/b2c/lru").exists()
    assert [c[0] for c in result.called("podman")] == ["images", "images"]
    # The probe is bounded: a store that hangs podman does not hang the boot.
    assert result.called("timeout")[0][:3] == ["120", "podman", "images"]


def test_a_store_that_stays_damaged_ends_the_boot_with_a_hint(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    damaged_store(sh, heals=False)
    result = check_store(sh)
    assert result.lines[-1] == "rc=1"
    assert result.errors() == [
        "b2c: error: podman still cannot open its storage after wiping it: Error: database disk "
        "image is malformed (boot with b2c.cache_device=reset to reformat the cache)"
    ]


def test_a_healthy_store_is_left_alone(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    sh.write(f"{STORAGE}/db.sql", "SQLite format 3\0")
    result = check_store(sh)
    assert result.lines == ["rc=0"]
    assert (sh.root / STORAGE / "db.sql").exists()


def test_no_probe_without_a_cache(tmp_path: Path) -> None:
    result = Shell(tmp_path).run('B2C_CACHE_ON=0; b2c_check_store; echo "rc=$?"')
    assert result.lines == ["rc=0"] and result.called("podman") == []


def test_a_new_store_is_not_probed(tmp_path: Path) -> None:
    # A cache partition just made, or a store never written: nothing podman could not open.
    result = check_store(Shell(tmp_path))
    assert result.lines == ["rc=0"]
    assert result.called("podman") == [] and result.called("timeout") == []


def test_a_closed_mark_never_outlives_the_boot_that_finds_it(tmp_path: Path) -> None:
    # Even beside an empty store: this boot may write one, and a crash must leave no mark.
    sh = Shell(tmp_path)
    sh.write("storage/b2c/closed", "")
    result = check_store(sh)
    assert result.lines[-1] == "rc=0"
    assert not (sh.root / "storage/b2c/closed").exists()


MARK = 'b2c_store_fingerprint; printf "%s\\n" "$B2C_FINGERPRINT" >"$B2C_ROOT/storage/b2c/closed"'


def closed_store(sh: Shell) -> None:
    """A store on the cache and the mark b2c_store_close leaves on it."""
    sh.write(f"{STORAGE}/db.sql", "SQLite format 3\0")
    sh.write(f"{STORAGE}/overlay-images/images.json", "[]")
    sh.write("storage/b2c/closed", "")
    assert sh.run(MARK).status == 0
    assert (sh.root / "storage/b2c/closed").read_text().count("\n") == 2


def test_a_store_the_last_boot_closed_is_not_probed_and_is_reopened(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    closed_store(sh)
    result = check_store(sh)
    assert result.lines == [
        "[1.00]: podman's storage on the cache was closed by the last boot: not probed",
        "rc=0",
    ]
    assert result.called("podman") == [] and result.called("timeout") == []
    # Reopened: a crash from now on leaves no mark, and the next boot probes the store. The
    # mark's removal is synced before any podman call.
    assert not (sh.root / "storage/b2c/closed").exists()
    assert result.called("sync") == [[]]


def test_a_store_changed_since_its_mark_is_probed(tmp_path: Path) -> None:
    # Something that does not know the mark wrote to the store (an older image on the same
    # disk, another machine): its database is not the one the last boot closed.
    sh = Shell(tmp_path)
    closed_store(sh)
    sh.write(f"{STORAGE}/db.sql", "SQLite format 3\0 and a transaction")
    result = check_store(sh)
    assert result.lines == [
        "[1.00]: podman's storage on the cache changed since the last boot closed it: probing it",
        "rc=0",
    ]
    assert [c[:2] for c in result.called("timeout")] == [["120", "podman"]]
    assert not (sh.root / "storage/b2c/closed").exists()


def test_a_marked_store_podman_cannot_open_is_not_marked_again(tmp_path: Path) -> None:
    # Whatever damaged it unseen, the boot's podman calls fail, the clean-up too: no mark, and
    # the next boot probes (and wipes) the store.
    sh = Shell(tmp_path)
    closed_store(sh)
    sh.stub("podman", "echo 'Error: database disk image is malformed' >&2; return 125")
    sh.stub("df", ROOMY_DF)
    result = pipeline(
        sh, "b2c.cache_device=auto b2c.container=docker://r.example/x:1", check_store=True
    )
    assert result.lines[-1] == "status=125"
    assert ["container", "rm", "--all", "--force", "--time", "5"] in result.called("podman")
    assert not (sh.root / "storage/b2c/closed").exists()


# --- a full cache ---------------------------------------------------------------------------

# A cache of 1000 MiB. Each image holds 100 MiB; "r.example/x:1" is the one the boot uses.
IMAGES = {
    "aaa111111111": "r.example/old:1",
    "bbb222222222": "r.example/older:1",
    "ccc333333333": "r.example/x:1",
    "ddd444444444": "r.example/never-recorded:1",
}
LRU = "5 aaa111111111\n2 bbb222222222\n7 ccc333333333\n"


def full_cache(sh: Shell, *, free_mib: int, create_fails: str = "") -> None:
    """Stubs for a cache with IMAGES and ``free_mib`` MiB free: ``podman image rm`` frees
    100 MiB an image; ``create`` fails with ``create_fails`` until an image was removed."""
    sh.write("images", "".join(f"{i} {n}\n" for i, n in IMAGES.items()))
    sh.write("storage/b2c/lru", LRU)
    sh.write("storage/b2c/boots", "7\n")
    sh.stub(
        "df",
        f"""\
        local gone
        gone=$(cat "$B2C_ROOT/removed" 2>/dev/null | wc -l)
        echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'
        echo "/dev/vda1 1024000 0 $(( ({free_mib} + gone * 100) * 1024 )) 50% /storage"
        """,
    )
    sh.stub(
        "podman",
        f"""\
        local last
        for last in "$@"; do :; done
        case $1 in
            images)
                while read -r id name; do
                    grep -qx "$id" "$B2C_ROOT/removed" 2>/dev/null || echo "$id $name"
                done <"$B2C_ROOT/images"
                ;;
            image) [ "$2" != rm ] || echo "$last" >>"$B2C_ROOT/removed" ;;
            create)
                if [ -n {create_fails!r} ] && [ ! -s "$B2C_ROOT/removed" ]; then
                    echo {create_fails!r} >&2
                    return 125
                fi
                echo cid-new
                ;;
            container) echo ccc333333333ffffffffffffffffffffffffffffffffffffffffffffffffffff ;;
        esac
        return 0
        """,
    )


def pipeline(sh: Shell, cmdline: str, *, cache: bool = True, check_store: bool = False) -> Result:
    """The pipeline of ``cmdline`` on a cache (or not); ``check_store``: after the store
    check, as init/main.sh runs it."""
    check = "b2c_check_store || exit 98; " if check_store else ""
    sh.write("line", cmdline)
    return sh.run(
        'b2c_read_file "$B2C_ROOT/line"; b2c_parse_cmdline "$B2C_TEXT" cmdline || exit 99\n'
        f"B2C_CACHE_ON={int(cache)}; {check}b2c_cache_count_boot\n"
        "B2C_PIPELINE_STATUS=0 B2C_PIPELINE_SHUTDOWN_MODE=default\n"
        'b2c_run_pipeline; echo "status=$B2C_PIPELINE_STATUS"'
    )


def removed(sh: Shell) -> list[str]:
    path = sh.root / "removed"
    return path.read_text().split() if path.exists() else []


NO_SPACE = (
    'Error: writing blob: storing blob to file "/var/tmp/storage1/1": '
    "write /var/tmp/storage1/1: no space left on device"
)


def test_no_space_evicts_unused_images_least_recently_used_first_then_retries_once(
    tmp_path: Path,
) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=500, create_fails=NO_SPACE)
    result = pipeline(sh, 'b2c.container="--tls-verify=false -v a:/b docker://r.example/x:1 true"')
    # Never recorded first, then the oldest use; the image the boot names is kept.
    assert removed(sh) == ["ddd444444444", "bbb222222222", "aaa111111111"]
    logs = [line.split("]: ", 1)[1] for line in result.lines if line.startswith("[")]
    assert logs[:5] == [
        "Evicted the image r.example/never-recorded:1 (ddd444444444, never used by a pipeline "
        "on this cache)",
        "Evicted the image r.example/older:1 (bbb222222222, last used 6 boots ago)",
        "Evicted the image r.example/old:1 (aaa111111111, last used 3 boots ago)",
        "Evicted 3 image(s) this boot does not use (r.example/never-recorded:1, "
        "r.example/older:1, r.example/old:1): 300 MiB freed, 800 MiB free",
        "Trying once more after the eviction",
    ]
    creates = [c for c in result.called("podman") if c[0] == "create"]
    assert len(creates) == 2 and result.called("sleep") == []
    assert result.errors() == []
    assert result.lines[-1] == "status=0"
    # This boot (the 8th on the cache) used the image: it is recorded as such.
    assert "8 ccc333333333" in (sh.root / "storage/b2c/lru").read_text().splitlines()


def test_no_space_again_after_the_eviction_fails_at_once_with_a_hint(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=500)
    sh.stub(
        "podman",
        sh.stubs["podman"].replace("echo cid-new", f"echo {NO_SPACE!r} >&2; return 125"),
    )
    result = pipeline(sh, "b2c.container=docker://r.example/x:1")
    assert len([c for c in result.called("podman") if c[0] == "create"]) == 2
    assert result.errors() == [
        "b2c: error: could not pull or create the container (podman create failed (exit status "
        f"125, not retried: the error is not transient): {NO_SPACE}; the cache is full even "
        "without the images this boot does not use: give it a bigger disk): "
        "docker://r.example/x:1"
    ]
    assert result.lines[-1] == "status=125"


def test_cache_evict_never_keeps_everything(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=10, create_fails=NO_SPACE)
    result = pipeline(sh, "b2c.cache_evict=never b2c.container=docker://r.example/x:1")
    assert removed(sh) == []
    assert len([c for c in result.called("podman") if c[0] == "create"]) == 1
    (error,) = result.errors()
    assert error.endswith(
        "give it a bigger disk, or let b2c evict images (b2c.cache_evict=unused)): "
        "docker://r.example/x:1"
    )


def test_before_pulling_unused_images_go_until_the_floor_is_free(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=120)  # 12% free: one image (+100 MiB) brings it over 20%
    result = pipeline(sh, "b2c.container=docker://r.example/x:1")
    assert removed(sh) == ["ddd444444444"]
    assert (
        "Evicted 1 image(s) this boot does not use (r.example/never-recorded:1): 100 MiB freed, "
        "220 MiB free"
    ) in [line.split("]: ", 1)[-1] for line in result.lines]
    assert result.lines[-1] == "status=0"


@pytest.mark.parametrize(("evict", "expected"), [("unused", []), ("all", 3)])
def test_with_room_to_spare_only_cache_evict_all_evicts(
    tmp_path: Path, evict: str, expected: list[str] | int
) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=900)
    result = pipeline(sh, f"b2c.cache_evict={evict} b2c.container=docker://r.example/x:1")
    gone = removed(sh)
    assert (len(gone) if isinstance(expected, int) else gone) == expected
    assert "ccc333333333" not in gone  # the image this boot names is pinned even then
    assert result.lines[-1] == "status=0"


def test_images_named_by_services_and_post_containers_are_pinned(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=900)
    result = pipeline(
        sh,
        "b2c.cache_evict=all b2c.service=r.example/old:1 "
        "b2c.container=docker://r.example/x:1 "
        'b2c.post_container="-e A=B --name p -it r.example/older:1 sh"',
    )
    assert removed(sh) == ["ddd444444444"]
    assert result.lines[-1] == "status=0"


def test_no_space_on_the_tmpfs_says_so(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=10, create_fails=NO_SPACE)
    result = pipeline(sh, "b2c.container=docker://r.example/x:1", cache=False)
    assert removed(sh) == []
    (error,) = result.errors()
    assert error.endswith(
        "podman's storage is a tmpfs in RAM (1000 MiB, half the memory) and the image does not "
        "fit: use a disk (b2c.cache_device=auto or /dev/NODE) or give the machine more memory): "
        "docker://r.example/x:1"
    )


@pytest.mark.parametrize(
    ("args", "image"),
    [
        (["docker://r/x:1"], "docker://r/x:1"),
        (["-v", "a:/b", "-e", "X=1", "--name", "n", "r/x", "sh", "-c", "x"], "r/x"),
        (["-it", "--rm", "--tls-verify=false", "--pull", "newer", "r/x:2"], "r/x:2"),
        (["-ite", "X=1", "-eY=2", "--env=Z=3", "-P", "r/x@sha256:00"], "r/x@sha256:00"),
        (["--privileged", "--init", "--", "-weird"], "-weird"),
        (["-v", "a:/b"], ""),
    ],
)
def test_the_image_is_found_among_podmans_options(
    tmp_path: Path, args: list[str], image: str
) -> None:
    quoted = " ".join(f"'{a}'" for a in args)
    result = Shell(tmp_path).run(f'b2c_podman_scan {quoted}; echo "[$B2C_SCAN_IMAGE]"')
    assert result.lines == [f"[{image}]"]


# --- the image a container uses ------------------------------------------------------------

CID = f"{171:064x}"
IMAGE_ID = "feedbeef" + "0" * 56
OTHER = {"id": f"{9:064x}", "names": ["other"], "image": "ab" * 32, "layer": "cd" * 32}


def container_list(cid: str, *, names: bool = True) -> str:
    """A containers/storage container list holding OTHER and container ``cid`` of IMAGE_ID,
    as encoding/json writes it (the key order of its Container struct)."""
    entry: dict[str, object] = {"id": cid}
    if names:  # omitempty
        entry["names"] = ["funny_name"]
    entry |= {
        "image": IMAGE_ID,
        "layer": "ef" * 32,
        "metadata": '{"image-name":"r.example/x:1"}',
        "big-data-names": ["config.json"],
        "created": "2026-11-30T08:00:00Z",
        "flags": {"MountLabel": "", "ProcessLabel": ""},
    }
    return json.dumps([OTHER, entry], separators=(",", ":"))


def record_used(sh: Shell, cid: str) -> Result:
    sh.write("storage/b2c/boots", "4\n")
    sh.stub("podman", "echo 0123456789abcdef; return 0")
    return sh.run(f"B2C_CACHE_ON=1; b2c_cache_count_boot; b2c_cache_used '{cid}'")


@pytest.mark.parametrize(
    ("where", "names"),
    [
        # podman run --rm's containers are volatile, podman create's are not.
        (f"{STORAGE}/overlay-containers/volatile-containers.json", True),
        (f"{STORAGE}/overlay-containers/volatile-containers.json", False),
        (f"{STORAGE}/overlay-containers/containers.json", True),
    ],
)
def test_the_image_a_container_uses_is_read_from_the_container_list_not_asked_of_podman(
    tmp_path: Path, where: str, names: bool
) -> None:
    sh = Shell(tmp_path)
    sh.write(where, container_list(CID, names=names))
    result = record_used(sh, CID)
    assert (sh.root / "storage/b2c/lru").read_text() == "5 feedbeef0000\n"
    assert result.called("podman") == [] and result.lines == []


@pytest.mark.parametrize(
    "cid",
    [
        f"{172:064x}",  # not in the list (another storage layout, say)
        CID.upper(),  # not an id podman gives
        CID[:-1] + ".",  # a regular expression would match it
        ".*",
    ],
)
def test_a_container_missing_from_the_list_is_inspected_by_podman(tmp_path: Path, cid: str) -> None:
    sh = Shell(tmp_path)
    sh.write(f"{STORAGE}/overlay-containers/volatile-containers.json", container_list(CID))
    result = record_used(sh, cid)
    assert result.lines == [
        f"[1.00]: Container {cid} is not in containers/storage's lists: asking podman for its image"
    ]
    assert result.called("podman") == [["container", "inspect", "--format", "{{.Image}}", cid]]
    assert (sh.root / "storage/b2c/lru").read_text() == "5 0123456789ab\n"


# --- the closed mark ------------------------------------------------------------------------


def test_the_store_is_marked_closed_once_the_pipeline_cleaned_up(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=500)
    result = pipeline(sh, "b2c.cache_device=auto b2c.container=docker://r.example/x:1")
    assert result.lines[-1] == "status=0"
    assert (sh.root / "storage/b2c/closed").exists()
    # Written after podman's last call (the clean-up), the store synced first.
    names = [call[0] for call in result.calls]
    last_podman = max(i for i, name in enumerate(names) if name == "podman")
    assert result.calls[last_podman][1:4] == ["image", "prune", "--force"]
    assert "sync" in names[last_podman:]


@pytest.mark.parametrize(
    ("case", "create_fails", "stubs"),
    [
        ("podman ran out of space, then evicted", NO_SPACE, {}),
        ("the cache is full at the end", "", {"df": FULL_DF}),
        ("podman still runs", "", {"pidof": "echo 4242"}),
        ("pidof is missing", "", {"pidof": "return 127"}),
    ],
)
def test_no_closed_mark_when(
    tmp_path: Path, case: str, create_fails: str, stubs: dict[str, str]
) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=500, create_fails=create_fails)
    for name, body in stubs.items():
        sh.stub(name, body)
    result = pipeline(sh, "b2c.cache_device=auto b2c.container=docker://r.example/x:1")
    assert result.lines[-1] == "status=0", case
    assert not (sh.root / "storage/b2c/closed").exists(), case


def test_no_closed_mark_when_the_clean_up_fails(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=500)
    sh.stub(
        "podman",
        sh.stubs["podman"].replace(
            "case $1 in", 'case "$1 $2" in\n    "image prune") return 125 ;;\nesac\ncase $1 in', 1
        ),
    )
    result = pipeline(sh, "b2c.cache_device=auto b2c.container=docker://r.example/x:1")
    assert ["image", "prune", "--force"] in result.called("podman")
    assert result.lines[-1] == "status=0"
    assert not (sh.root / "storage/b2c/closed").exists()


def test_no_closed_mark_without_a_cache(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    full_cache(sh, free_mib=500)
    pipeline(sh, "b2c.container=docker://r.example/x:1", cache=False)
    assert not (sh.root / "storage/b2c/closed").exists()
