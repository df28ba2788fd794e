"""ELF closure: checked against ldd (the host's ld.so) on host binaries and on small gcc builds."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from b2c_builder.build import elf
from b2c_builder.build.rootfs import Rootfs
from b2c_builder.build.tree import HostTree
from b2c_builder.config import Arch
from b2c_builder.errors import ResolveError
from b2c_builder.run import run
from tests.conftest import require, require_tool

pytestmark = pytest.mark.skipif(Arch.host() is not Arch.amd64, reason="oracles run on amd64")

ARCH = Arch.amd64
# Dynamically linked programs that `make deps-test` installs (the Makefile's TEST_DEBS).
HOST_PROGRAMS = [
    "/usr/bin/qemu-system-x86_64",
    "/usr/bin/qemu-img",
    "/usr/bin/gpgv",
    "/usr/bin/gpg",
    "/usr/bin/bsdtar",
    "/usr/bin/skopeo",
]
_LDD_LINE = re.compile(r"^\s*(\S+)(?: => (\S+))? \(0x[0-9a-f]+\)$")


def ldd(program: str | Path) -> dict[str, str | None]:
    """soname (or loader path) -> realpath of the file ldd found, None for 'not found'."""
    out = run(["ldd", str(program)], reason="list libraries as the oracle", check=False)
    result: dict[str, str | None] = {}
    for line in out.stdout.decode().splitlines():
        if "=> not found" in line:
            result[line.split()[0]] = None
            continue
        match = _LDD_LINE.match(line)
        assert match, f"unexpected ldd line {line!r}"
        name, path = match.groups()
        if name.startswith("linux-vdso") or name.startswith("linux-gate"):
            continue
        result[name] = os.path.realpath(path or name)
    return result


@pytest.mark.parametrize("program", HOST_PROGRAMS)
def test_host_binaries_match_ldd(program: str) -> None:
    require(Path(program).exists(), f"{program} is not installed (make deps-test installs it)")
    expected = ldd(program)
    found = elf.needed_files(HostTree("/"), [program], ARCH)

    assert {n.soname for n in found} == set(expected)
    assert {"/" + n.canonical for n in found} == {p for p in expected.values() if p}
    for needed in found:
        # Each path is where the loader looks; on the host it leads to the same file.
        assert os.path.realpath("/" + needed.path) == "/" + needed.canonical
    loader = [n for n in found if n.soname.startswith("/")]
    assert [n.path for n in loader] == ["lib64/ld-linux-x86-64.so.2"]
    assert elf.closure(HostTree("/"), [program], ARCH) == sorted(n.path for n in found)


def test_several_programs_are_one_sorted_union() -> None:
    programs = [p for p in HOST_PROGRAMS if Path(p).exists()][:3]
    union = sorted({p for prog in programs for p in elf.closure(HostTree("/"), [prog], ARCH)})
    assert elf.closure(HostTree("/"), programs, ARCH) == union


# A small usr-merged tree: the app under opt/app with its own libraries, libc from the host.

FOO_C = "int bar(void); int foo(void) { return bar() + 1; }\n"
BAR_C = "int bar(void) { return 41; }\n"
MAIN_C = '#include <stdio.h>\nint foo(void);\nint main(void) { printf("%d\\n", foo()); }\n'


def gcc(*args: str | Path) -> None:
    run(["gcc", *map(str, args)], reason="build test binaries")


def make_tree(root: Path, *, new_dtags: bool) -> Path:
    """opt/app/bin/main -(R[UN]PATH $ORIGIN/../lib)-> libfoo.so.1 -($ORIGIN)-> libbar.so.1."""
    src = root.parent / f"src-{root.name}"
    src.mkdir()
    (src / "foo.c").write_text(FOO_C)
    (src / "bar.c").write_text(BAR_C)
    (src / "main.c").write_text(MAIN_C)
    app = root / "opt/app"
    (app / "bin").mkdir(parents=True)
    (app / "lib").mkdir()
    bar_dir = app / "lib"
    gcc("-shared", "-fPIC", "-Wl,-soname,libbar.so.1", "-o", bar_dir / "libbar.so.1", src / "bar.c")
    dtags = "--enable-new-dtags" if new_dtags else "--disable-new-dtags"
    gcc(
        "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o", app / "lib/libfoo.so.1.2.3",
        src / "foo.c", f"-L{bar_dir}", "-l:libbar.so.1", f"-Wl,{dtags},-rpath,$ORIGIN",
    )  # fmt: skip
    (app / "lib/libfoo.so.1").symlink_to("libfoo.so.1.2.3")
    gcc(
        "-o", app / "bin/main", src / "main.c", f"-L{app / 'lib'}", "-l:libfoo.so.1",
        f"-Wl,-rpath-link,{bar_dir}", f"-Wl,{dtags},-rpath,$ORIGIN/../lib",
    )  # fmt: skip
    # The C library and loader, laid out as in trixie (usr-merged, loader in /lib64).
    multiarch = root / "usr/lib" / ARCH.facts.multiarch
    multiarch.mkdir(parents=True)
    for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
        shutil.copy(os.path.realpath(f"/lib/{ARCH.facts.multiarch}/{name}"), multiarch / name)
    (root / "usr/lib64").mkdir()
    (root / "usr/lib64/ld-linux-x86-64.so.2").symlink_to(
        f"../lib/{ARCH.facts.multiarch}/ld-linux-x86-64.so.2"
    )
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").symlink_to("usr/lib64")
    return app / "bin/main"


def manifest_of(root: Path) -> Rootfs:
    manifest = Rootfs()
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            manifest.add_symlink(rel, os.readlink(path))
        elif path.is_dir():
            manifest.add_dir(rel)
        else:
            manifest.add_file(rel, path.read_bytes(), 0o755)
    return manifest


@pytest.mark.parametrize("new_dtags", [True, False], ids=["runpath", "rpath"])
def test_origin_search_path(tmp_path: Path, new_dtags: bool) -> None:
    root = tmp_path / "root"
    main = make_tree(root, new_dtags=new_dtags)
    assert run([str(main)], reason="check the test program runs").stdout == b"42\n"

    expected = {
        "lib64/ld-linux-x86-64.so.2",
        "opt/app/lib/libfoo.so.1",
        "opt/app/lib/libbar.so.1",
        f"lib/{ARCH.facts.multiarch}/libc.so.6",
    }
    for tree in (HostTree(root), manifest_of(root)):
        found = elf.needed_files(tree, ["opt/app/bin/main"], ARCH)
        assert {n.path for n in found} == expected
        by_soname = {n.soname: n.canonical for n in found}
        assert by_soname["libfoo.so.1"] == "opt/app/lib/libfoo.so.1.2.3"
        assert by_soname["/lib64/ld-linux-x86-64.so.2"].startswith("usr/lib/")

    # ldd agrees on the app's own libraries (libc comes from the host there).
    oracle = ldd(main)
    assert oracle["libfoo.so.1"] == str(root / "opt/app/lib/libfoo.so.1.2.3")
    assert oracle["libbar.so.1"] == str(root / "opt/app/lib/libbar.so.1")


def test_runpath_is_not_inherited_but_rpath_is(tmp_path: Path) -> None:
    """libfoo has no search path of its own: only the executable's DT_RPATH reaches libbar."""
    for new_dtags in (True, False):
        root = tmp_path / f"root-{new_dtags}"
        main = make_tree(root, new_dtags=new_dtags)
        # Move libbar next to the program: only the executable's search path can find it.
        (root / "opt/app/lib/libbar.so.1").rename(root / "opt/app/bin/libbar.so.1")
        lib = root / "opt/app/lib"
        run(
            ["gcc", "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o",
             str(lib / "libfoo.so.1.2.3"), str(root.parent / f"src-{root.name}/foo.c"),
             f"-L{root / 'opt/app/bin'}", "-l:libbar.so.1"],
            reason="rebuild libfoo",
        )  # fmt: skip
        run(
            ["gcc", "-o", str(main), str(root.parent / f"src-{root.name}/main.c"),
             f"-L{lib}", "-l:libfoo.so.1", f"-Wl,-rpath-link,{root / 'opt/app/bin'}",
             f"-Wl,{'--enable-new-dtags' if new_dtags else '--disable-new-dtags'}",
             "-Wl,-rpath,$ORIGIN/../lib:$ORIGIN"],
            reason="relink main",
        )  # fmt: skip
        oracle = ldd(main)
        if new_dtags:
            assert oracle["libbar.so.1"] is None
            with pytest.raises(
                ResolveError, match=r"libbar\.so\.1 \(needed by /opt/app/lib/libfoo"
            ):
                elf.closure(HostTree(root), ["opt/app/bin/main"], ARCH)
        else:
            assert oracle["libbar.so.1"] == str(root / "opt/app/bin/libbar.so.1")
            paths = elf.closure(HostTree(root), ["opt/app/bin/main"], ARCH)
            assert "opt/app/bin/libbar.so.1" in paths


def test_wrong_machine_candidates_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    main = make_tree(root, new_dtags=False)
    # An aarch64-labelled libfoo earlier in the search path: ld.so skips it, so must we.
    lib = root / "opt/app/lib"
    wrong = root / "opt/app/wrong"
    wrong.mkdir()
    data = bytearray((lib / "libfoo.so.1.2.3").read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    (wrong / "libfoo.so.1").write_bytes(bytes(data))
    run(
        ["gcc", "-o", str(main), str(root.parent / f"src-{root.name}/main.c"), f"-L{lib}",
         "-l:libfoo.so.1", f"-Wl,-rpath-link,{lib}", "-Wl,--disable-new-dtags",
         "-Wl,-rpath,$ORIGIN/../wrong:$ORIGIN/../lib"],
        reason="relink main",
    )  # fmt: skip
    assert ldd(main)["libfoo.so.1"] == str(lib / "libfoo.so.1.2.3")
    found = {n.soname: n.path for n in elf.needed_files(HostTree(root), ["opt/app/bin/main"], ARCH)}
    assert found["libfoo.so.1"] == "opt/app/lib/libfoo.so.1"


def test_missing_library_names_program_soname_and_fix(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root, new_dtags=True)
    (root / "opt/app/lib/libbar.so.1").unlink()
    with pytest.raises(ResolveError) as info:
        elf.closure(HostTree(root), ["opt/app/bin/main"], ARCH)
    assert "libbar.so.1 (needed by /opt/app/lib/libfoo.so.1.2.3)" in info.value.message
    assert info.value.hint is not None and "--extra-package" in info.value.hint


def test_missing_loader_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root, new_dtags=True)
    (root / "usr/lib64/ld-linux-x86-64.so.2").unlink()
    with pytest.raises(ResolveError, match=r"/lib64/ld-linux-x86-64\.so\.2"):
        elf.closure(HostTree(root), ["opt/app/bin/main"], ARCH)


def test_program_of_another_architecture_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    main = make_tree(root, new_dtags=True)
    data = bytearray(main.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")
    main.write_bytes(bytes(data))
    with pytest.raises(ResolveError, match="EM_AARCH64 binary, not amd64"):
        elf.closure(HostTree(root), ["opt/app/bin/main"], ARCH)


def test_scripts_and_static_programs_need_nothing(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "static.c").write_text("int main(void) { return 0; }\n")
    gcc("-static", "-o", tmp_path / "static", tmp_path / "static.c")
    assert elf.closure(HostTree(tmp_path), ["script", "static"], ARCH) == []


def test_missing_program_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ResolveError, match="/usr/bin/nothing is not in the tree"):
        elf.closure(HostTree(tmp_path), ["usr/bin/nothing"], ARCH)


@pytest.mark.parametrize("cut", [5, 64, 100, 600, 5000])
def test_a_truncated_elf_file_is_an_error_not_a_static_program(cut: int) -> None:
    """ELF magic with a broken body: ld.so would refuse it, so must we (never 'no libraries')."""
    program = Path(require_tool("gpgv")).resolve().read_bytes()
    assert elf.parse(program) is not None  # whole, it parses
    tree = Rootfs()
    tree.add_file("usr/bin/broken", program[:cut], 0o755)
    with pytest.raises(ResolveError, match=r"/usr/bin/broken has the ELF magic but is not a valid"):
        elf.closure(tree, ["usr/bin/broken"], ARCH)


def test_offsets_out_of_range_are_an_error() -> None:
    program = bytearray(Path(require_tool("gpgv")).resolve().read_bytes())
    program[0x20:0x28] = b"\xff" * 8  # e_phoff far beyond the file
    with pytest.raises(ResolveError, match="not a valid ELF file"):
        elf.parse(bytes(program), "gpgv")


def test_data_without_the_elf_magic_is_not_elf() -> None:
    assert elf.parse(b"#!/bin/sh\necho hi\n") is None
