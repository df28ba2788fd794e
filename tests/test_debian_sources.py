"""Mirror discovery from fake apt configurations (made-up hosts only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from b2c_builder.build.debian.sources import default_mirror, is_debian_mirror, read_sources
from b2c_builder.errors import ConfigError

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def apt(root: Path, files: dict[str, str]) -> Path:
    """Write etc/apt files under ``root`` (keys relative to etc/apt)."""
    for name, text in files.items():
        path = root / "etc/apt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_one_line_sources_list(tmp_path: Path) -> None:
    root = apt(
        tmp_path,
        {
            "sources.list": "# a comment\n"
            "deb-src http://src.invalid/debian trixie main\n"
            "deb http://security.invalid/debian-security trixie-security main\n"
            "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
            "http://mirror.invalid/debian/ trixie main contrib # trailing comment\n"
            "deb http://second.invalid/debian trixie main\n"
        },
    )
    assert default_mirror(root) == "http://mirror.invalid/debian"


def test_deb822_sources(tmp_path: Path) -> None:
    root = apt(
        tmp_path,
        {
            "sources.list.d/debian.sources": "Types: deb-src\n"
            "URIs: http://src.invalid/debian\nSuites: trixie\nComponents: main\n\n"
            "Types: deb\n"
            "# a comment inside a stanza\n"
            "URIs: https://security.invalid/debian-security\n"
            "Suites: trixie-security\nComponents: main\n"
            f"Signed-By: {KEYRING}\n\n"
            "Types: deb deb-src\n"
            "URIs: https://mirror.invalid/debian\n"
            "Suites: trixie trixie-updates\nComponents: main\n"
            f"Signed-By: {KEYRING}\n"
        },
    )
    assert default_mirror(root) == "https://mirror.invalid/debian"
    sources = read_sources(root)
    assert [s.types for s in sources] == [("deb-src",), ("deb",), ("deb", "deb-src")]
    assert sources[2].suites == ("trixie", "trixie-updates")


def test_apt_order_and_ignored_files(tmp_path: Path) -> None:
    """sources.list first, then sources.list.d by name; other extensions are ignored."""
    stanza = "Types: deb\nURIs: http://{}/debian\nSuites: trixie\nComponents: main\n"
    root = apt(
        tmp_path,
        {
            "sources.list": "# nothing here\n",
            "sources.list.d/00-old.list.disabled-by-farm": "deb http://off.invalid/debian x m\n",
            "sources.list.d/01-old.sources.save": stanza.format("save.invalid"),
            "sources.list.d/02-bad name.list": "deb http://badname.invalid/debian x m\n",
            "sources.list.d/10-off.sources": stanza.format("off.invalid") + "Enabled: no\n",
            "sources.list.d/20-b.sources": stanza.format("b.invalid"),
            "sources.list.d/30-a.list": "deb http://a.invalid/debian trixie main\n",
        },
    )
    assert default_mirror(root) == "http://b.invalid/debian"
    (root / "etc/apt/sources.list").write_text("deb http://first.invalid/debian trixie main\n")
    assert default_mirror(root) == "http://first.invalid/debian"


def test_third_party_repositories_are_not_debian(tmp_path: Path) -> None:
    root = apt(
        tmp_path,
        {
            "sources.list.d/docker.list": "deb [signed-by=/etc/apt/keyrings/docker.asc] "
            "https://vendor.invalid/linux/debian trixie stable\n",
            "sources.list.d/vendor.sources": "Types: deb\nURIs: https://other.invalid/apt\n"
            "Suites: nodistro\nComponents: main\nSigned-By: /usr/share/keyrings/vendor.gpg\n",
            "sources.list.d/ports.list": "deb http://ports.invalid/debian-ports sid main\n",
            "sources.list.d/local.list": "deb file:/srv/debian trixie main\n",
        },
    )
    with pytest.raises(ConfigError) as err:
        default_mirror(root)
    assert "--mirror" in str(err.value)
    assert str(root / "etc/apt") in err.value.message


def test_no_apt_configuration_at_all(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Debian archive mirror"):
        default_mirror(tmp_path)


@pytest.mark.parametrize(
    ("uri", "signed_by", "expected"),
    [
        ("http://m.invalid/debian", (), True),
        ("http://m.invalid/debian/", (), True),
        (
            "http://m.invalid/pub/linux/debian",
            ("/usr/share/keyrings/debian-archive-keyring.pgp",),
            True,
        ),
        ("http://m.invalid/archive/debian/20250520T000000Z", (), True),
        ("http://m.invalid/debian-security", (), False),
        ("http://m.invalid/debian-debug", (), False),
        ("http://m.invalid/linux/debian", ("/etc/apt/keyrings/vendor.asc",), False),
        ("http://m.invalid/debian", ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n...",), False),
        ("ftp://m.invalid/debian", (), False),
        ("cdrom:[Debian]/", (), False),
    ],
)
def test_is_debian_mirror(uri: str, signed_by: tuple[str, ...], expected: bool) -> None:
    assert is_debian_mirror(uri, signed_by) is expected


def test_host_configuration_is_readable() -> None:
    """The real host config parses (its verdict depends on the host, so only no crash)."""
    try:
        mirror = default_mirror()
    except ConfigError:
        return
    assert mirror.startswith(("http://", "https://")) and not mirror.endswith("/")
