"""Dependency closure over a small in-memory Packages index; versions checked against dpkg."""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest

from b2c_builder.build.debian.index import Archive, Dependency
from b2c_builder.build.debian.resolve import closure, version_satisfies
from b2c_builder.errors import ResolveError
from b2c_builder.run import run


def stanza(name: str, version: str = "1.0", arch: str = "amd64", **fields: str) -> str:
    text = f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
    for key, value in fields.items():
        text += f"{key.replace('_', '-').title()}: {value}\n"
    sha = hashlib.sha256(name.encode()).hexdigest()
    return (
        text
        + f"Filename: pool/main/{name[0]}/{name}/{name}_{version}_{arch}.deb\n"
        + (f"Size: 100\nSHA256: {sha}\nDescription: {name}\n")
    )


def archive(*stanzas: str) -> Archive:
    return Archive("http://mirror.invalid/debian", "trixie", "amd64", 0, "\n".join(stanzas))


def names(archive: Archive, wanted: list[str]) -> list[str]:
    return [p.name for p in closure(archive, wanted)]


def test_package_fields_are_parsed() -> None:
    a = archive(
        stanza(
            "podman",
            "5.4.2+ds1-2",
            depends="conmon (>= 2.0.18), crun (>= 1.4) | runc, libc6 (>= 2.34), python3:any",
            pre_depends="dpkg (>= 1.15)",
            provides="container-engine, oci (= 1.0)",
            multi_arch="foreign",
        )
    )
    p = a["podman"]
    assert (p.name, p.version, p.architecture, p.size) == ("podman", "5.4.2+ds1-2", "amd64", 100)
    assert p.filename == "pool/main/p/podman/podman_5.4.2+ds1-2_amd64.deb"
    assert p.depends[0] == (Dependency("conmon", None, ">=", "2.0.18"),)
    assert p.depends[1] == (Dependency("crun", None, ">=", "1.4"), Dependency("runc"))
    assert p.depends[3] == (Dependency("python3", "any"),)
    assert p.pre_depends == ((Dependency("dpkg", None, ">=", "1.15"),),)
    assert p.provides == (Dependency("container-engine"), Dependency("oci", None, "=", "1.0"))
    assert p.multi_arch == "foreign"
    assert a.url_for(p) == "http://mirror.invalid/debian/" + p.filename
    assert [x.name for x in a.providers("container-engine")] == ["podman"]


def test_chain_with_pre_depends() -> None:
    a = archive(
        stanza("app", depends="liba"),
        stanza("liba", pre_depends="libc6"),
        stanza("libc6"),
        stanza("unrelated"),
    )
    assert names(a, ["app"]) == ["app", "liba", "libc6"]


def test_first_satisfiable_alternative() -> None:
    a = archive(
        stanza("app", depends="missing | second | third"), stanza("second"), stanza("third")
    )
    assert names(a, ["app"]) == ["app", "second"]


def test_already_chosen_alternative_is_preferred() -> None:
    a = archive(stanza("app", depends="first | second"), stanza("first"), stanza("second"))
    assert names(a, ["app", "second"]) == ["app", "second"]
    assert names(a, ["second", "app"]) == ["app", "second"]


def test_virtual_packages() -> None:
    a = archive(
        stanza("app", depends="mail-transport-agent"),
        stanza("zmta", provides="mail-transport-agent"),
        stanza("exim4", provides="mail-transport-agent"),
    )
    assert names(a, ["app"]) == ["app", "exim4"]  # providers in name order
    assert names(a, ["app", "zmta"]) == ["app", "zmta"]  # a chosen provider wins
    assert names(a, ["mail-transport-agent"]) == ["exim4"]  # a virtual root


def test_real_package_before_provider() -> None:
    a = archive(stanza("app", depends="awk"), stanza("awk"), stanza("aaa-awk", provides="awk"))
    assert names(a, ["app"]) == ["app", "awk"]


def test_versions() -> None:
    a = archive(
        stanza("new", depends="lib (>= 2.0)"),
        stanza("old", depends="lib (<< 2.0)"),
        stanza("lib", "2.1-1"),
        stanza("lib", "1.9-1"),  # two versions: the constraint picks
    )
    assert [(p.name, p.version) for p in closure(a, ["new"])] == [("lib", "2.1-1"), ("new", "1.0")]
    assert [(p.name, p.version) for p in closure(a, ["old"])] == [("lib", "1.9-1"), ("old", "1.0")]
    assert a["lib"].version == "2.1-1"


def test_unsatisfiable_version_is_an_error() -> None:
    a = archive(stanza("app", "3", depends="lib (>= 2.0)"), stanza("lib", "1.9-1"))
    with pytest.raises(ResolveError, match=r"app 3 depends on lib \(>= 2.0\)"):
        closure(a, ["app"])


def test_versioned_provides() -> None:
    a = archive(
        stanza("app", depends="virt (>= 1.0)"),
        stanza("aaa-unversioned", provides="virt"),
        stanza("bbb-versioned", provides="virt (= 1.5)"),
    )
    # Debian policy: an unversioned Provides never satisfies a versioned dependency
    assert names(a, ["app"]) == ["app", "bbb-versioned"]


def test_arch_qualifiers() -> None:
    a = archive(
        stanza("app", depends="python3:any, libfoo:native, tool:arm64 | fallback"),
        stanza("python3", multi_arch="allowed"),
        stanza("libfoo"),
        stanza("tool"),
        stanza("fallback", arch="all"),
    )
    assert names(a, ["app"]) == ["app", "fallback", "libfoo", "python3"]


def test_unknown_package() -> None:
    a = archive(stanza("podman"), stanza("buildah"))
    with pytest.raises(ResolveError) as err:
        closure(a, ["podmann"])
    assert "podmann" in err.value.message and "trixie/amd64" in err.value.message
    assert err.value.hint is not None and "podman" in err.value.hint


def test_missing_dependency_names_the_chain() -> None:
    a = archive(stanza("app", depends="liba"), stanza("liba", depends="gone | also-gone"))
    with pytest.raises(ResolveError, match=re.escape("liba 1.0 depends on gone | also-gone")):
        closure(a, ["app"])


def test_cycles_terminate_and_order_is_sorted() -> None:
    a = archive(stanza("b", depends="a"), stanza("a", depends="c"), stanza("c", depends="b"))
    assert names(a, ["b"]) == ["a", "b", "c"]


VERSIONS = ["1.0", "1.0-1", "1.0-1+b1", "1.0~rc1", "1:0.9", "1.0.1", "1.0+ds1", "2.0", "0.9a"]


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(VERSIONS, 2)))
def test_version_comparison_agrees_with_dpkg(a: str, b: str) -> None:
    dpkg_ops = {"<<": "lt", "<=": "le", "=": "eq", ">=": "ge", ">>": "gt"}
    for op, dpkg_op in dpkg_ops.items():
        dpkg = run(
            ["dpkg", "--compare-versions", a, dpkg_op, b],
            reason="compare Debian versions as the test oracle",
            check=False,
        )
        assert version_satisfies(a, op, b) is (dpkg.returncode == 0), (a, op, b)
