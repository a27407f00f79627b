"""Parts of the nspawn: driver that need no machine: URLs, apt sources, images, options."""

from __future__ import annotations

import os

import pytest

from provisioning.config import Config
from provisioning.drivers.nspawn import DEFAULT_DIR, NspawnDriver
from provisioning.drivers.nspawn_host import image
from provisioning.drivers.nspawn_host.warehouse import Warehouse, hostname_for
from provisioning.errors import ConfigError


def test_canonical_urls_are_absolute_paths(tmp_path, monkeypatch):
    config = Config({}, base_dir=str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert NspawnDriver.canonicalize_url("nspawn:", config) == f"nspawn:{DEFAULT_DIR}"
    assert NspawnDriver.canonicalize_url("nspawn:./m", config) == f"nspawn:{tmp_path}/m"
    assert NspawnDriver.canonicalize_url("nspawn:m/../n/", config) == f"nspawn:{tmp_path}/n"
    assert NspawnDriver.canonicalize_url("nspawn:~/m", config) == f"nspawn:{tmp_path}/home/m"
    url = NspawnDriver.canonicalize_url("nspawn:/srv/x", config)
    assert url == "nspawn:/srv/x" and NspawnDriver.canonicalize_url(url, config) == url


def _apt_root(tmp_path, sources: str = "", one_line: str = "") -> str:
    etc = tmp_path / "etc" / "apt" / "sources.list.d"
    etc.mkdir(parents=True)
    if sources:
        (etc / "debian.sources").write_text(sources)
    if one_line:
        (tmp_path / "etc" / "apt" / "sources.list").write_text(one_line)
    return str(tmp_path)


def test_mirror_comes_from_deb822_sources_skipping_security(tmp_path):
    root = _apt_root(tmp_path, sources=(
        "Types: deb\nURIs: http://security.example.org/debian-security\n"
        "Suites: trixie-security\nComponents: main\n\n"
        "# a comment\nTypes: deb deb-src\nURIs: http://mirror.example.org/debian\n"
        "Suites: trixie trixie-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://disabled.example.org/debian\nSuites: trixie\nEnabled: no\n"))
    sources = image.apt_sources(root)
    assert [s.uri for s in sources] == ["http://security.example.org/debian-security",
                                       "http://mirror.example.org/debian"]
    picked = image.pick_mirror("trixie", sources)
    assert picked.uri == "http://mirror.example.org/debian"
    assert picked.keyring == "/usr/share/keyrings/debian-archive-keyring.gpg"
    # another suite still comes from the main archive, never from the security pocket
    assert image.pick_mirror("bookworm", sources).uri == "http://mirror.example.org/debian"


def test_mirror_comes_from_one_line_sources(tmp_path):
    root = _apt_root(tmp_path, one_line=(
        "# deb http://commented.example.org/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] https://m.example.net/debian bookworm main contrib\n"))
    picked = image.pick_mirror("bookworm", image.apt_sources(root))
    assert (picked.uri, picked.keyring, picked.suites) == (
        "https://m.example.net/debian", "/k.gpg", ("bookworm",))


def test_no_mirror_is_a_config_error_naming_the_option(tmp_path):
    root = _apt_root(tmp_path, sources="Types: deb\nURIs: http://s.example.org/debian-security\n"
                                       "Suites: bookworm-security\n")
    with pytest.raises(ConfigError, match="mirror"):
        image.pick_mirror("bookworm", image.apt_sources(root))


def test_image_names_resolve_or_fail_clearly(tmp_path):
    cache = str(tmp_path / "cache")
    img = image.resolve_image("debian:trixie", cache)
    assert (img.kind, img.rootfs, img.ready) == ("debootstrap",
                                                 f"{cache}/debian-trixie/rootfs", False)
    with pytest.raises(ConfigError, match="suite"):
        image.resolve_image("debian:Bad Suite!", cache)
    with pytest.raises(ConfigError, match="neither"):
        image.resolve_image("ubuntu-something", cache)
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/sbin").mkdir(parents=True)
    with pytest.raises(ConfigError, match="systemd"):  # sshd present, systemd missing
        (rootfs / "usr/sbin/sshd").write_text("")
        image.resolve_image(str(rootfs), cache)
    (rootfs / "usr/lib/systemd").mkdir(parents=True)
    (rootfs / "usr/lib/systemd/systemd").write_text("")
    assert image.resolve_image(str(rootfs), cache).kind == "directory"
    tarball = tmp_path / "img.tar.gz"
    tarball.write_bytes(b"")
    tar = image.resolve_image(str(tarball), cache)
    assert tar.kind == "tarball" and tar.rootfs.startswith(cache)


def test_unknown_machine_option_is_rejected(tmp_path):
    driver = NspawnDriver(f"nspawn:{tmp_path}", Config({}, base_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="imagee"):
        driver._options({"imagee": "debian:bookworm"}, "m")
    assert driver._options({}, "m").image == "debian:bookworm"


def test_warehouse_names_and_subnet(tmp_path):
    first, second = Warehouse(str(tmp_path / "a")), Warehouse(str(tmp_path / "b"))
    assert first.hub_netns != second.hub_netns
    assert first.gateway == "198.18.77.1"
    with pytest.raises(ConfigError, match="subnet"):
        Warehouse(str(tmp_path / "c"), "198.18.0.0/33")
    small = Warehouse(str(tmp_path / "d"), "198.19.0.0/29")
    records = [small.new_record(name=f"m{i}", store_id="s", hostname=f"m{i}", image="x",
                                lower="/", key_name="k") for i in range(5)]
    assert [r.address for r in records] == [f"198.19.0.{i}" for i in range(2, 7)]
    assert all(len(r.veth) <= 15 for r in records)  # IFNAMSIZ
    with pytest.raises(Exception, match="full"):
        small.new_record(name="m6", store_id="s", hostname="m6", image="x", lower="/",
                         key_name="k")
    assert hostname_for("Web_1.example") == "web-1-example"
    assert os.path.isdir(small.machine_dir(records[0].id))


def test_debian_release_must_be_known_to_debootstrap(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for suite in ("bullseye", "bookworm", "sid"):
        (scripts / suite).write_text("")
    cache = str(tmp_path / "cache")
    for suite in ("bullseye", "bookworm"):
        built = image.resolve_image(f"debian:{suite}", cache, scripts_dir=str(scripts))
        assert built.rootfs == f"{cache}/debian-{suite}/rootfs"  # one image per release
    with pytest.raises(ConfigError) as caught:
        image.resolve_image("debian:trixie", cache, scripts_dir=str(scripts))
    message = str(caught.value)
    assert "cannot build 'trixie'" in message
    assert "debian:bullseye, debian:bookworm" in message and "newer debootstrap" in message
    with pytest.raises(ConfigError, match="did you mean debian:bookworm"):
        image.resolve_image("debian:bokworm", cache, scripts_dir=str(scripts))
    # without debootstrap the name is accepted; building names the package to install
    assert image.resolve_image("debian:trixie", cache, scripts_dir=str(tmp_path / "none")).ready \
        is False
