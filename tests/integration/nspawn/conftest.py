"""Fixtures for nspawn: tests: one image per CI run, a warehouse per test, leftovers checked.

The Debian image is built once (debootstrap, about a minute) into a cache shared by every test
and by the conformance suite's subprocess workers: ``$PROVISIONING_NSPAWN_IMAGE_CACHE``, default
``/var/cache/provisioning-test-images``. Each test's warehouse lives in its pytest tmp dir, and
whatever machine a test leaves behind is destroyed at teardown (and counted as a failure).
"""

from __future__ import annotations

import os
import shutil

import pytest

from provisioning.config import Config
from provisioning.drivers.nspawn import IMAGE_CACHE_ENV

DEFAULT_CACHE = "/var/cache/provisioning-test-images"
IMAGE = "debian:bookworm"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "nspawn machines need root"
    for binary, package in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"),
                            ("ip", "iproute2")):
        if not (shutil.which(binary) or os.path.exists(f"/usr/sbin/{binary}")):
            return f"{binary} is missing: apt-get install {package}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _why_not()
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here) and "test_nspawn_units" not in str(item.fspath):
            item.add_marker(pytest.mark.nspawn)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def image_cache() -> str:
    """The shared image cache, with the image built (once, under the image lock)."""
    from provisioning.drivers.nspawn_host import image

    cache = os.environ.get(IMAGE_CACHE_ENV) or DEFAULT_CACHE
    os.environ[IMAGE_CACHE_ENV] = cache  # subprocess workers find the same cache
    image.ensure_image(image.resolve_image(IMAGE, cache))
    return cache


@pytest.fixture
def warehouse_url(tmp_path, image_cache) -> str:
    return f"nspawn:{tmp_path / 'warehouse'}"


@pytest.fixture
def nspawn_config(tmp_path, warehouse_url, image_cache) -> Config:
    return Config({"driver_options": {warehouse_url: {"image_cache": image_cache}}},
                  base_dir=str(tmp_path))


@pytest.fixture
def nspawn_driver(warehouse_url, nspawn_config):
    """A driver on a fresh warehouse; anything left in it at teardown is removed and reported."""
    from provisioning.registry import driver_for_url

    driver = driver_for_url(warehouse_url, nspawn_config)
    yield driver
    left = sweep(driver)
    assert not left, f"test left machines behind: {left}"


@pytest.fixture(scope="session")
def sweeper():
    """``sweep(driver)``: for test classes whose hooks are plain methods."""
    return sweep


def sweep(driver) -> list[str]:
    """Destroy every machine still in the warehouse and its hub; returns what was left."""
    from provisioning.drivers.nspawn_host import netns

    left = []
    for record in driver.warehouse.records():
        left.append(f"{record.name} ({record.id})")
        driver._remove({"machine_id": record.id, "cgroup": record.cgroup, "netns": record.netns,
                        "veth": record.veth})
    hub = driver.warehouse.hub_netns
    if os.path.lexists(netns.netns_path(hub)):
        left.append(f"hub namespace {hub}")
        netns.delete_hub(hub)
    return left
