"""Fixtures for libvirt: tests: the daemons, one base disk, and ONE pool of machines per session.

Under TCG a machine takes a minute or more of CPU to boot, so the session boots the machines the
conformance cases need once, all in parallel (``POOL``), and the cases share them (see
``TestLibvirtConformance.machine_name``). Base disks go to the shared test image cache (the
nspawn tests' debootstrap root is reused), ``$PROVISIONING_LIBVIRT_IMAGE_CACHE``, default
``/var/cache/provisioning-test-images``. Whatever a test leaves behind is destroyed at teardown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from provisioning.config import Config
from provisioning.drivers.libvirt import IMAGE_CACHE_ENV
from provisioning.testing.libvirtd import libvirt_daemons, why_no_libvirt  # noqa: F401

DEFAULT_CACHE = "/var/cache/provisioning-test-images"
URL = "libvirt:qemu:///system"
#: booted once per session, in parallel; "a" and "b" are kept, the others are consumed
POOL = ("pool-a", "pool-b", "pool-destroy", "pool-gone", "pool-lost")


def pytest_collection_modifyitems(config, items):
    reason = None
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here) and "test_libvirt_units" not in str(item.fspath):
            item.add_marker(pytest.mark.libvirt)
            item.add_marker(pytest.mark.slow)
            reason = reason or why_no_libvirt() or ""
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def libvirt_image_cache() -> str:
    cache = os.environ.get(IMAGE_CACHE_ENV) or DEFAULT_CACHE
    os.environ[IMAGE_CACHE_ENV] = cache  # subprocess workers and converge find the same cache
    return cache


@dataclass
class Pool:
    base: str
    url: str
    config: Config
    driver: object
    store: object
    names: tuple[str, ...]
    options: dict

    @property
    def state_path(self) -> str:
        return os.path.join(self.base, "state.db")


def sweep(driver) -> None:
    """Remove every machine of the warehouse (for teardown after failures)."""
    from provisioning.actions import ActionHandler
    from provisioning.spec import MachineSpec

    for record in driver.warehouse.records():
        loose = MachineSpec(name=record.name, reference={"machine_id": record.id,
                                                         "domain": record.domain})
        driver.destroy_machine(ActionHandler().for_machine(record.name), loose, {})


@pytest.fixture(scope="session")
def libvirt_pool(libvirt_daemons, libvirt_image_cache, tmp_path_factory):  # noqa: F811
    """The session's machines, booted in parallel through the driver's batch calls."""
    from provisioning.lifecycle import Provisioner
    from provisioning.registry import driver_for_url
    from provisioning.store.sqlite import SQLiteStore

    base = str(tmp_path_factory.mktemp("libvirt-pool"))
    # boots take minutes under TCG on a loaded host: wait long rather than fail
    config = Config({"driver_options": {URL: {"directory": os.path.join(base, "warehouse"),
                                              "image_cache": libvirt_image_cache,
                                              "ready_timeout": 1800}}},
                    base_dir=base)
    driver = driver_for_url(URL, config)
    store = SQLiteStore(os.path.join(base, "state.db"))
    provisioner = Provisioner(store, config=config, lock_wait=60)
    from provisioning.drivers.libvirt_host.netns import free_port, namespace_of

    # pool-b forwards a port (test_libvirt_local): free where qemu binds it, in libvirtd's netns
    guest_port = 8000
    host_port = free_port(namespace_of(None))
    options = {n: {} for n in POOL}
    options["pool-b"] = {"ports": [f"127.0.0.1:{host_port}:{guest_port}"]}
    pool = Pool(base, URL, config, driver, store, POOL, options)
    try:
        allocated = provisioner.allocate_batch(driver, [(n, options[n]) for n in POOL])
        assert allocated.ok, allocated.failures
        readied = provisioner.run_many("ready", [(driver, n, options[n]) for n in POOL])
        assert readied.ok, readied.failures
        for outcome in readied.values():
            outcome.value.disconnect()
        yield pool
    finally:
        for spec in store.list("machine"):
            try:
                provisioner.destroy(spec.name, {}, driver)
            except Exception as exc:  # keep cleaning the others
                print(f"libvirt pool cleanup of {spec.name} failed: {exc}")
        sweep(driver)
        store.close()
