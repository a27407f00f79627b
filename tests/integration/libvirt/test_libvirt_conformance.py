"""The libvirt: driver passes the driver conformance suite with real VMs under TCG, real SSH,
and crashes at the fault points in real subprocesses.

The cases share the session's pool (``conftest.POOL``): booting costs minutes here, so the cases
that only need a running machine use ``pool-a`` (ready, connect, stop then ready, batch with
``pool-b``, import: lent to it outside the state), while the cases that destroy or lose their machine each have one of their own.
Allocate-only cases (allocate twice, reference, race, crashes) keep their own fresh names.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.cluster.state_ops import import_resource
from provisioning.lifecycle import Provisioner
from provisioning.testing.conformance import DriverConformance

SHARED = {"conf-ready": "pool-a", "conf-connect": "pool-a", "conf-stop": "pool-a",
          "conf-batch-1": "pool-a", "conf-batch-2": "pool-b", "conf-destroy": "pool-destroy",
          "conf-gone": "pool-gone", "conf-lost": "pool-lost"}


class TestLibvirtConformance(DriverConformance):
    worker_timeout = 900.0
    batch_size = 2

    def machine_name(self, name: str) -> str:
        return SHARED.get(name, name)

    def count_machines(self, driver, name) -> int:
        """Records (each the directory of a machine's overlay and seed disk) plus domains
        tagged for ``name`` without a record, plus qemu processes of this warehouse whose domain
        is gone: a destroy must leave none of them."""
        records = driver.find_machines(name)
        ids = {r.id for r in records}
        prefix = f"prov-{driver.warehouse.tag}-"
        domains = {d.name(): d for d in driver.connection().listAllDomains()}
        orphans = [d for n, d in domains.items()
                   if n.startswith(prefix) and n[len(prefix):] not in ids
                   and f'name="{name}"' in d.XMLDesc(0)]
        qemus = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        stray = [line for line in qemus.splitlines() if f"guest={prefix}" in line
                 and line.split(f"guest={prefix}", 1)[1].split(",")[0].split()[0]
                 not in {n[len(prefix):] for n in domains}]
        return len(records) + len(orphans) + len(stray)

    # -- the session's pool instead of a warehouse per case -------------------------------------
    @pytest.fixture
    def conformance_config(self, libvirt_pool):
        return libvirt_pool.config

    @pytest.fixture
    def driver(self, libvirt_pool):
        return libvirt_pool.driver

    @pytest.fixture
    def store(self, libvirt_pool):
        return libvirt_pool.store

    @pytest.fixture
    def provisioner(self, libvirt_pool, handler):
        yield Provisioner(libvirt_pool.store, config=libvirt_pool.config, action_handler=handler,
                          lock_wait=60)
        cleaner = Provisioner(libvirt_pool.store, config=libvirt_pool.config, lock_wait=60)
        for spec in libvirt_pool.store.list("machine"):
            if spec.name not in libvirt_pool.names:
                cleaner.destroy(spec.name, {}, libvirt_pool.driver)
        strays = [r for r in libvirt_pool.driver.warehouse.records()
                  if r.name not in libvirt_pool.names]
        assert not strays, f"a case left machines behind: {strays}"

    @pytest.fixture
    def import_source(self, provisioner, libvirt_pool):
        """``pool-a`` lent to the import case (another boot costs minutes under TCG): the state
        forgets it for the case, then takes it back under its name, by importing it again."""
        store, driver, lent = libvirt_pool.store, libvirt_pool.driver, "pool-a"
        resource_id = driver.resource_id(store.get("machine", lent).reference)
        with store.lock(lent, 60):
            store.delete("machine", lent)
        yield resource_id
        for spec in store.list("machine"):  # what the case imported it as
            if driver.resource_id(spec.reference or {}) == resource_id:
                with store.lock(spec.name, 60):
                    store.delete("machine", spec.name)
        import_resource(Provisioner(store, config=libvirt_pool.config, lock_wait=60), driver,
                        lent, resource_id, libvirt_pool.options[lent])

    def _worker(self, tmp_path, conformance_config, driver, name, **kwargs):
        """Workers share the pool's state store (its directory stands in for tmp_path)."""
        return super()._worker(Path(conformance_config.base_dir), conformance_config, driver,
                               name, **kwargs)

    def leftovers(self, driver) -> list[str]:
        """Domains of this warehouse without a record, and directories half removed."""
        prefix = f"prov-{driver.warehouse.tag}-"
        ids = {r.id for r in driver.warehouse.records()}
        found = [f"domain {d.name()}" for d in driver.connection().listAllDomains()
                 if d.name().startswith(prefix) and d.name()[len(prefix):] not in ids]
        found += [f"directory {n}" for n in os.listdir(driver.warehouse.machines_dir)
                  if n.startswith(".")]
        return found

    # -- libvirt specifics ---------------------------------------------------------------------
    def test_host_key_is_the_one_written_before_boot(self, libvirt_pool, provisioner):
        spec = provisioner.spec("pool-a")
        with open(libvirt_pool.driver.warehouse.path(spec.reference["machine_id"],
                                                     "host_key.pub")) as handle:
            written = " ".join(handle.read().split()[:2])
        assert spec.reference["host_key"] == written
        machine = provisioner.connect("pool-a", {})
        served = machine.execute_always("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout
        machine.disconnect()
        assert " ".join(served.split()[:2]) == written

    def test_accel_fallback_is_reported_once(self, libvirt_pool):
        from provisioning.drivers.libvirt_host.accel import detect_kvm

        usable, _ = detect_kvm()
        handler = RecordingActionHandler()
        driver = type(libvirt_pool.driver)(libvirt_pool.driver.driver_url, libvirt_pool.config)
        opts = driver._options({}, "x")
        first = driver._accel(opts, handler.report_progress)
        second = driver._accel(opts, handler.report_progress)
        assert first == second
        notices = [e for e in handler.events if "TCG" in e.description]
        assert first.kind == ("kvm" if usable else "tcg")
        assert len(notices) == (0 if usable else 1)
