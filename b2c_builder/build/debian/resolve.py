"""Dependency closure over Depends and Pre-Depends: the *search space* of an image.

The image never gets whole packages, only files picked from them, so this is not apt:
Conflicts, Breaks and Recommends are ignored and nothing is installed. The rules:

- the requested names are chosen first (a virtual name takes its first provider);
- for each relation ``a | b | c``, nothing is added if a chosen package already satisfies
  an alternative; otherwise the first alternative that the archive can satisfy wins, a
  real package before a provider of the same virtual name, providers in name order;
- versions compare with Debian's rules (``debian.debian_support.Version``); an unversioned
  Provides does not satisfy a versioned dependency (Debian policy 7.5);
- the index holds one architecture plus ``all``, so ``:any`` and ``:native`` match any
  package of that name; a qualifier naming another architecture matches nothing.

Given the same archive and the same request the result is the same list, sorted by name.
"""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Callable, Iterable

from debian.debian_support import Version

from b2c_builder.errors import ResolveError
from b2c_builder.log import log

from .index import Alternatives, Archive, Dependency, Package

_COMPARE = {
    "<<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    "=": lambda c: c == 0,
    ">=": lambda c: c >= 0,
    ">>": lambda c: c > 0,
}


def version_satisfies(version: str, op: str | None, wanted: str | None) -> bool:
    """Does ``version`` satisfy ``op wanted`` (no op: anything does)?"""
    if op is None or wanted is None:
        return True
    if op not in _COMPARE:
        raise ResolveError(f"unknown version operator {op!r} in a dependency")
    a, b = Version(version), Version(wanted)
    return bool(_COMPARE[op]((a > b) - (a < b)))


def _arch_ok(dep: Dependency, archive: Archive) -> bool:
    return dep.arch in (None, "any", "native", archive.arch)


def satisfies(package: Package, dep: Dependency, archive: Archive) -> bool:
    """Does ``package`` satisfy ``dep``, as itself or through one of its Provides?"""
    if not _arch_ok(dep, archive):
        return False
    if package.name == dep.name and version_satisfies(package.version, dep.op, dep.version):
        return True
    for provided in package.provides:
        if provided.name != dep.name:
            continue
        if dep.op is None:
            return True
        if (
            provided.op == "="
            and provided.version is not None
            and version_satisfies(provided.version, dep.op, dep.version)
        ):
            return True
    return False


def candidates(archive: Archive, dep: Dependency) -> list[Package]:
    """Packages that satisfy ``dep``: real packages first, then providers by name."""
    found = [p for p in archive.versions(dep.name) if satisfies(p, dep, archive)]
    found += [
        p for p in archive.providers(dep.name) if p.name != dep.name and satisfies(p, dep, archive)
    ]
    return found


def _describe(group: Alternatives) -> str:
    return " | ".join(str(d) for d in group)


def _root(archive: Archive, name: str) -> Package:
    found = candidates(archive, Dependency(name))
    if found:
        return found[0]
    close = difflib.get_close_matches(name, list(archive.names()), n=3)
    raise ResolveError(
        f"package {name!r} is not in {archive.suite}/{archive.arch} (main)",
        hint=(f"did you mean {', '.join(close)}? " if close else "")
        + "names must be binary packages of the main component",
    )


def closure(
    archive: Archive,
    names: Iterable[str],
    *,
    follow: Callable[[Package], bool] | None = None,
) -> list[Package]:
    """``names`` and everything they Depend or Pre-Depend on, sorted by package name.

    With ``follow``, a dependency whose pick it rejects is left out, with its own
    dependencies (e.g. the C libraries behind Go source packages, for a build without cgo).
    """
    chosen: dict[str, Package] = {}
    queue: deque[Package] = deque()
    for name in names:
        package = _root(archive, name)
        if package.name not in chosen:
            chosen[package.name] = package
            queue.append(package)
    while queue:
        package = queue.popleft()
        for group in package.pre_depends + package.depends:
            if any(satisfies(p, dep, archive) for dep in group for p in _chosen_for(chosen, dep)):
                continue
            pick = next((c[0] for dep in group if (c := candidates(archive, dep))), None)
            if pick is None:
                raise ResolveError(
                    f"{package.name} {package.version} depends on {_describe(group)}, "
                    f"which nothing in {archive.suite}/{archive.arch} (main) satisfies",
                    hint="the mirror may be incomplete or the suite mixed; try another --mirror",
                )
            if follow is not None and not follow(pick):
                continue
            log.debug("%s: %s -> %s %s", package.name, _describe(group), pick.name, pick.version)
            chosen[pick.name] = pick
            queue.append(pick)
    return [chosen[name] for name in sorted(chosen)]


def _chosen_for(chosen: dict[str, Package], dep: Dependency) -> Iterable[Package]:
    """Chosen packages that might satisfy ``dep``: the one named so, or any provider."""
    if dep.name in chosen:
        yield chosen[dep.name]
    for package in chosen.values():
        if package.name != dep.name and any(p.name == dep.name for p in package.provides):
            yield package
