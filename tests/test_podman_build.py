"""The trimmed podman: inputs from Build-Depends, the cache key, the command overlay, the SBOM,
the configuration it needs, and (network) two cold builds giving the same bytes."""

from __future__ import annotations

import dataclasses
import json
import time
import tomllib
from pathlib import Path

import pytest

from b2c_builder.build import image, podman
from b2c_builder.build.debian import download, index, sources, srcpkg
from b2c_builder.build.rootfs import Kind, Origin, Rootfs
from b2c_builder.config import Arch, BuildConfig, PodmanVariant
from b2c_builder.digest import file_sha256
from b2c_builder.errors import ResolveError
from tests.conftest import require_tool, shared_cache
from tests.localmirror import capture_log


def stanza(name: str, arch: str = "all", depends: str = "", version: str = "1.0-1") -> str:
    text = (
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        f"Filename: pool/main/{name[0]}/{name}/{name}_{version}_{arch}.deb\nSize: 1\n"
        f"SHA256: {hash(name) % 10**12:064d}\n"
    )
    return text + (f"Depends: {depends}\n" if depends else "")


ARCHIVE = index.Archive(
    "http://mirror.invalid/debian",
    "trixie",
    "amd64",
    0,
    "\n".join(
        [
            stanza("golang-go", "amd64", "golang-1.24-go, golang-src"),
            stanza("golang-src", "all", "golang-1.24-src"),
            stanza("golang-1.24-go", "amd64", "golang-1.24-src"),
            stanza("golang-1.24-src", "all"),
            stanza("golang-foo-dev", "all", "golang-bar-dev, libfoo-dev"),
            stanza("golang-bar-dev", "all"),
            stanza("golang-golang-x-tools", "amd64", "libc6"),
            stanza("libfoo-dev", "amd64", "libfoo1"),
            stanza("libfoo1", "amd64", "libc6"),
            stanza("libc6", "amd64"),
        ]
    ),
)


def source(build_depends: str) -> srcpkg.SourcePackage:
    return srcpkg.SourcePackage(
        name="podman",
        version="5.4.2+ds1-2",
        directory="pool/main/p/podman",
        files=(
            index.FileRef("podman_5.4.2+ds1-2.dsc", "1" * 64, 10),
            index.FileRef("podman_5.4.2+ds1.orig.tar.xz", "2" * 64, 20),
        ),
        build_depends=index._relations(build_depends),
        binaries=("podman",),
        format="3.0 (quilt)",
        go_import_path="github.com/containers/podman",
    )


SOURCE = source(
    "debhelper-compat (= 13), golang-go, golang-foo-dev (>= 1), golang-golang-x-tools, "
    "libfoo-dev, conmon"
)


def test_go_inputs_follow_only_the_go_part_of_build_depends() -> None:
    toolchain, code = podman.go_inputs(ARCHIVE, SOURCE)
    assert [p.name for p in toolchain] == [
        "golang-1.24-go",
        "golang-1.24-src",
        "golang-go",
        "golang-src",
    ]
    # golang-foo-dev's libfoo-dev is a C library for cgo code: not followed; the tools
    # package is Architecture: amd64 programs, not Go code.
    assert [p.name for p in code] == ["golang-bar-dev", "golang-foo-dev"]


def test_a_source_without_golang_go_is_refused() -> None:
    with pytest.raises(ResolveError, match="does not Build-Depend on golang-go"):
        podman.go_inputs(ARCHIVE, source("debhelper-compat (= 13), libfoo-dev"))


def test_the_cache_key_changes_with_every_input() -> None:
    toolchain, code = podman.go_inputs(ARCHIVE, SOURCE)
    recipe = podman.RECIPE

    def key(**changes: object) -> str:
        args: dict[str, object] = {
            "source": SOURCE,
            "toolchain": toolchain,
            "code": code,
            "recipe": recipe,
            "arch": Arch.amd64,
            "cc_version": "gcc 12",
        }
        args.update(changes)
        return podman.cache_key(**args)  # type: ignore[arg-type]

    base = key()
    assert key() == base  # stable
    other_file = dataclasses.replace(SOURCE.files[1], sha256="3" * 64)
    variants = {
        "a source file": key(
            source=dataclasses.replace(SOURCE, files=(SOURCE.files[0], other_file))
        ),
        "a Go package": key(code=[dataclasses.replace(code[0], sha256="4" * 64), *code[1:]]),
        "the toolchain": key(toolchain=[dataclasses.replace(toolchain[0], version="1.24.5-1")]),
        "a tag": key(recipe=dataclasses.replace(recipe, tags=recipe.tags[1:])),
        "the ldflags": key(recipe=dataclasses.replace(recipe, ldflags=("-s",))),
        "the commands": key(recipe=dataclasses.replace(recipe, drop_commands=())),
        "cgo": key(recipe=dataclasses.replace(recipe, cgo=False)),
        "the arch": key(arch=Arch.arm64),
        "the C compiler": key(cc_version="gcc 14"),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)


MAIN_GO = """\
package main

import (
\t"fmt"

\t_ "github.com/containers/podman/v5/cmd/podman/containers"
\t_ "github.com/containers/podman/v5/cmd/podman/kube"
\t"github.com/containers/podman/v5/cmd/podman/registry"
\t_ "github.com/containers/podman/v5/cmd/podman/system/connection"
\t_ "github.com/containers/podman/v5/cmd/podman/system"
)
"""


def test_the_overlay_leaves_out_only_the_dropped_command_groups(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    (tree / "cmd/podman").mkdir(parents=True)
    (tree / "cmd/podman/main.go").write_text(MAIN_GO)
    with capture_log() as messages:
        overlay, dropped = podman._overlay(tree, tmp_path, ("kube", "system/connection", "machine"))
    assert dropped == ["kube", "system/connection"]
    assert any("no command group machine" in m for m in messages)
    replace = json.loads(overlay.read_text())["Replace"]
    assert list(replace) == [str(tree / "cmd/podman/main.go")]
    text = Path(replace[str(tree / "cmd/podman/main.go")]).read_text()
    assert text == MAIN_GO.replace(
        '\t_ "github.com/containers/podman/v5/cmd/podman/kube"\n', ""
    ).replace('\t_ "github.com/containers/podman/v5/cmd/podman/system/connection"\n', "")
    assert (tree / "cmd/podman/main.go").read_text() == MAIN_GO  # the tree is untouched


def fake_build(tmp_path: Path, recipe: podman.Recipe = podman.RECIPE) -> podman.PodmanBuild:
    binary = tmp_path / "podman"
    binary.write_bytes(b"\x7fELF fake podman")
    toolchain, code = podman.go_inputs(ARCHIVE, SOURCE)
    return podman.PodmanBuild(
        binary=binary,
        sha256=file_sha256(binary),
        source="podman",
        source_version="5.4.2+ds1-2",
        source_files=SOURCE.files,
        patches=("a.patch",),
        toolchain=tuple(podman._input(p) for p in toolchain),
        go_dependencies=tuple(podman._input(p) for p in code[1:]),
        go_unlinked=tuple(podman._input(p) for p in code[:1]),
        c_sysroot=(podman.InputPackage("libc6-dev", "2.41-12", "5" * 64),),
        c_compiler="x86_64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0",
        recipe=recipe,
        goarch="amd64",
        dropped_commands=("kube",),
        cached=False,
    )


def test_the_sbom_section_names_the_source_and_every_build_dependency(tmp_path: Path) -> None:
    section = fake_build(tmp_path).sbom()
    assert section["variant"] == "trimmed"
    assert section["source"] == {
        "package": "podman",
        "version": "5.4.2+ds1-2",
        "files": [
            {"name": "podman_5.4.2+ds1-2.dsc", "size": 10, "sha256": "1" * 64},
            {"name": "podman_5.4.2+ds1.orig.tar.xz", "size": 20, "sha256": "2" * 64},
        ],
        "patches": ["a.patch"],
    }
    deps = section["go_build_dependencies"]
    assert isinstance(deps, list)
    assert [(d["name"], d["version"]) for d in deps] == [("golang-foo-dev", "1.0-1")]
    unlinked = section["go_build_dependencies_not_linked"]
    assert isinstance(unlinked, list)
    assert [d["name"] for d in unlinked] == ["golang-bar-dev"]
    assert section["c_build_dependencies"] == [
        {"name": "libc6-dev", "version": "2.41-12", "sha256": "5" * 64, "architecture": ""}
    ]
    toolchain = section["toolchain"]
    assert isinstance(toolchain, list)
    assert [d["architecture"] for d in toolchain] == ["amd64", "all", "amd64", "all"]
    build = section["build"]
    assert isinstance(build, dict)
    assert build["tags"] == [t.name for t in podman.RECIPE.tags]
    assert build["dropped_commands"] == ["kube"]


def test_use_podman_replaces_debians_binary_and_names_the_source(tmp_path: Path) -> None:
    staging = Rootfs()
    staging.add_file("usr/bin/podman", b"debian's", 0o755, origin=Origin("podman", "5.4.2-2+b2"))
    image.use_podman(staging, fake_build(tmp_path))
    entry = staging["usr/bin/podman"]
    assert (entry.kind, entry.data, entry.mode) == (Kind.FILE, b"\x7fELF fake podman", 0o755)
    assert entry.origin == Origin("src:podman", "5.4.2+ds1-2")


@pytest.mark.parametrize("cgo", [True, False])
def test_containers_conf_replaces_what_a_podman_without_cgo_lacks(cgo: bool) -> None:
    rootfs = Rootfs()
    image.add_config(
        rootfs,
        {
            "version": "1",
            "suite": "trixie",
            "crun_wrapper": "x",
            "conmon_wrapper": "y",
            "podman_cgo": cgo,
        },
    )
    conf = tomllib.loads(rootfs.read("etc/containers/containers.conf").decode())
    assert conf["engine"].get("lock_type") == (None if cgo else "file")
    assert conf["containers"].get("seccomp_profile") == (None if cgo else "unconfined")
    assert conf["engine"]["events_logger"] == "file"  # the rest is unchanged


# --- network: the real thing -------------------------------------------------------------

REPRO_SUITE = "bookworm"  # the suite whose podman source package the mirror serves


@pytest.mark.network
def test_two_cold_builds_give_the_same_bytes_and_a_warm_one_compiles_nothing(
    tmp_path: Path,
) -> None:
    """Two compiles from scratch (fresh GOCACHE, different build folders) of the same
    inputs give the same binary; a third build is a cache hit. The downloads are shared
    with the other tests' cache (a by-sha256 link), the compiles are not."""
    require_tool("patch")
    require_tool("pkg-config")
    require_tool("x86_64-linux-gnu-gcc")
    session = download.make_session()
    mirror = sources.default_mirror()
    shared = shared_cache()
    (shared / "by-sha256").mkdir(parents=True, exist_ok=True)
    builds = []
    for name in ("first", "second"):
        cache = tmp_path / name
        cache.mkdir()
        (cache / "by-sha256").symlink_to(shared / "by-sha256")
        cfg = BuildConfig(
            suite=REPRO_SUITE,
            cache_dir=cache,
            output=tmp_path / "out",
            podman=PodmanVariant.trimmed,
        )
        archive = index.open_archive(
            session, mirror, cfg.suite, cfg.arch, keyring=cfg.keyring, cache_dir=cache
        )
        builds.append(podman.build_trimmed(session, archive, cfg))
    first, second = builds
    assert not first.cached and not second.cached
    assert first.binary != second.binary  # two compiles, in two places
    assert first.binary.read_bytes()[:4] == b"\x7fELF"
    assert first.sha256 == second.sha256, "the trimmed podman build is not reproducible"
    started = time.monotonic()
    warm = podman.build_trimmed(session, archive, cfg)
    assert warm.cached and warm.sha256 == second.sha256
    assert time.monotonic() - started < 60
    assert warm.source in ("podman", "libpod") and warm.go_dependencies


def test_a_cross_build_takes_the_toolchain_from_the_build_hosts_index() -> None:
    host = index.Archive(
        "http://mirror.invalid/debian",
        "trixie",
        "amd64",
        0,
        "\n".join([stanza("golang-1.24-go", "amd64"), stanza("golang-1.24-src", "all")]),
    )
    target_toolchain = [
        index.Package.from_stanza(stanza("golang-1.24-go", "arm64")),
        index.Package.from_stanza(stanza("golang-1.24-src", "all")),
    ]
    found = podman.host_toolchain(host, target_toolchain)
    assert [(p.name, p.architecture) for p in found] == [
        ("golang-1.24-go", "amd64"),
        ("golang-1.24-src", "all"),
    ]
    newer = [index.Package.from_stanza(stanza("golang-1.24-go", "arm64", version="1.24.5-1"))]
    with pytest.raises(ResolveError, match=r"golang-1\.24-go 1\.24\.5-1 is not in trixie/amd64"):
        podman.host_toolchain(host, newer)
