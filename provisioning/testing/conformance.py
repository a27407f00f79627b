"""DriverConformance: the test class every driver passes (in the spirit of Flocker's
``make_iblockdeviceapi_tests``).

A driver package subclasses it in a test module and says how to build its driver::

    from provisioning.testing.conformance import DriverConformance

    class TestMyDriver(DriverConformance):
        def driver_url(self, tmp_path):
            return f"mine:{tmp_path / 'warehouse'}"

        def count_machines(self, driver, name):
            return len(driver.find_by_tag(name))   # resources the provider holds for ``name``

Snapshot and synced-folder cases run for drivers declaring ``snapshots`` and ``mounts_folders``;
import cases for drivers declaring ``imports`` (the others must raise UnsupportedOperation).
The plan cases drive a one-file cluster (``provisioning.cluster``) on the same store: why-run
plans ``create`` for a resource deleted behind our back and ``start`` for a stopped machine,
touching nothing, and ``apply`` performs what the plan said (``provisioning.testing.plan_check``).

Drivers declaring ``images`` get the image-contract cases (``conformance_images``): capture,
``image_state``, why-run, destroy, and a capture killed before its save (``find_image``).

Drivers whose machines speak SSH must refuse a host presenting another key than the pinned one
(``provisioning.testing.conformance_hostkeys``; hook ``present_other_host_key``).

Optional hooks: ``config_data`` (plain data: it is rebuilt in subprocesses), ``machine_options``,
``missing_resource_id`` (an id ``import_machine`` must report as MachineNotFound), the
fixture ``import_source`` (the id of a resource made outside the state; default: allocated
through a second state),
``worker_env``, ``delete_behind_back``, ``cleanup``, ``leftovers``, ``image_of`` (drivers with
``images``), ``machine_name`` and ``batch_size`` (drivers whose machines take minutes to boot
share them between cases; see the libvirt tests). ``capabilities`` defaults to the driver
class's own; a case a driver declares it cannot do is reported as not applicable with the flag
named, and for ``stoppable=False`` the suite checks that stopping raises UnsupportedOperation.

Every case runs against a real SQLite store; the concurrency and crash cases run separate
processes (``python -m provisioning.testing.conformance_worker``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from provisioning.actions import ActionHandler, RecordingActionHandler
from provisioning.config import Config
from provisioning.driver import Capabilities, Driver
from provisioning.errors import UnsupportedOperation
from provisioning.faults import CRASH_EXIT_CODE, FAULT_ENV
from provisioning.inputs.url import parse_driver_url
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.spec import MachineSpec
from provisioning.store.sqlite import SQLiteStore
from provisioning.testing.conformance_hostkeys import HostKeyConformance
from provisioning.testing.conformance_images import ImageConformance
from provisioning.testing.conformance_plan import PlanConformance

__all__ = ["DriverConformance"]

WORKER = "provisioning.testing.conformance_worker"


class DriverConformance(HostKeyConformance, ImageConformance, PlanConformance):
    """Subclass me (name starting with ``Test``) and implement ``driver_url`` and
    ``count_machines``."""

    #: None: use the driver class's declared capabilities
    capabilities: Capabilities | None = None
    #: seconds a subprocess allocate may take
    worker_timeout: float = 300.0

    # -- hooks for the subclass ----------------------------------------------------------------
    def driver_url(self, tmp_path) -> str:
        raise NotImplementedError("DriverConformance subclasses return their driver URL here")

    def count_machines(self, driver: Driver, name: str) -> int:
        """How many provider resources exist for machine ``name`` (tagged or named for it)."""
        raise NotImplementedError("DriverConformance subclasses count provider resources here")

    def config_data(self, tmp_path) -> dict[str, Any]:
        """Config as plain data (JSON-able): subprocesses rebuild the same Config from it."""
        return {}

    def machine_options(self, name: str) -> dict[str, Any]:
        return {}

    def worker_env(self) -> dict[str, str]:
        """Extra environment for subprocess workers."""
        return {}

    def delete_behind_back(self, driver: Driver, spec) -> None:
        """Make the provider forget a machine without touching our state (the default asks the
        driver to destroy a copy of the spec that is not bound to the store)."""
        loose = MachineSpec(name=spec.name, reference=dict(spec.reference))
        driver.destroy_machine(ActionHandler().for_machine(spec.name), loose,
                               self.machine_options(spec.name))

    def machine_name(self, name: str) -> str:
        """The machine a case uses for its name ``name``. Drivers whose machines take minutes to
        boot map several cases to one machine booted once per session (the cases that destroy
        or lose their machine need their own); the default keeps every case's own name."""
        return name

    #: how many machines the batch case allocates and readies at once
    batch_size: int = 5

    def image_of(self, driver: Driver, spec) -> str | None:
        """The image id a machine was booted from (default: its reference's ``image``)."""
        return spec.reference.get("image")

    def leftovers(self, driver: Driver) -> list[str]:
        """What the warehouse holds that belongs to no machine (half-made or half-removed
        resources of a killed run). The crash cases require it to be empty after a re-run."""
        return []

    def cleanup(self, driver: Driver) -> None:
        """Remove anything left in the warehouse after a test (after every machine in the store
        has been destroyed)."""

    # -- fixtures ------------------------------------------------------------------------------
    @pytest.fixture
    def conformance_config(self, tmp_path) -> Config:
        return Config(self.config_data(tmp_path), base_dir=str(tmp_path))

    @pytest.fixture
    def driver(self, tmp_path, conformance_config) -> Driver:
        return driver_for_url(self.driver_url(tmp_path), conformance_config)

    @pytest.fixture
    def caps(self, driver) -> Capabilities:
        return self.capabilities or type(driver).capabilities

    @pytest.fixture
    def store(self, tmp_path):
        store = SQLiteStore(tmp_path / "state.db")
        yield store
        store.close()

    @pytest.fixture
    def handler(self) -> RecordingActionHandler:
        return RecordingActionHandler()

    @pytest.fixture
    def provisioner(self, store, conformance_config, handler, driver):
        provisioner = Provisioner(store, config=conformance_config, action_handler=handler,
                                  lock_wait=60)
        yield provisioner
        cleaner = Provisioner(store, config=conformance_config, lock_wait=60)
        for spec in store.list("machine"):
            try:
                cleaner.destroy(spec.name, self.machine_options(spec.name), driver)
            except Exception as exc:  # report, but keep cleaning the others
                print(f"conformance cleanup of {spec.name} failed: {exc}", file=sys.stderr)
        for image in store.list("image"):  # after the machines that boot from them
            try:
                driver.destroy_image(RecordingActionHandler(), image, {})
            except Exception as exc:
                print(f"conformance cleanup of image {image.name} failed: {exc}", file=sys.stderr)
        self.cleanup(driver)

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def require(caps: Capabilities, flag: str) -> None:
        if not getattr(caps, flag):
            pytest.skip(f"not applicable: the driver declares {flag}=False")

    def _worker(self, tmp_path, conformance_config, driver, name: str, *,
                fault: str | None = None, operation: str = "allocate",
                image: str | None = None) -> subprocess.Popen:
        job = {"url": driver.driver_url, "config": conformance_config.to_data(),
               "base_dir": str(tmp_path), "state": str(tmp_path / "state.db"), "name": name,
               "options": self.machine_options(name), "lock_wait": 120,
               "operation": operation, "image": image}
        env = dict(os.environ, **self.worker_env())
        env.pop(FAULT_ENV, None)
        if fault:
            env[FAULT_ENV] = fault
        return subprocess.Popen([sys.executable, "-m", WORKER, json.dumps(job)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _up(self, provisioner, caps, driver, name):
        options = self.machine_options(name)
        if caps.connectable:
            return provisioner.up(driver, name, options)
        provisioner.allocate(driver, name, options)
        return None

    # -- the cases -----------------------------------------------------------------------------
    def test_canonical_url_is_stable_and_round_trips(self, driver, conformance_config):
        url = driver.driver_url
        assert parse_driver_url(url).scheme == type(driver).scheme
        assert type(driver).canonicalize_url(url, conformance_config) == url
        again = driver_for_url(url, conformance_config)
        assert again.driver_url == url
        assert str(parse_driver_url(url)) == url

    def test_allocate_twice_gives_one_machine(self, provisioner, driver, handler):
        name = self.machine_name("conf-twice")
        first = provisioner.allocate(driver, name, self.machine_options(name))
        reference = dict(first.reference)
        performed_before = len(handler.actions(performed=True))
        second = provisioner.allocate(driver, name, self.machine_options(name))
        assert self.count_machines(driver, name) == 1
        assert second.reference == reference
        assert len(handler.actions(performed=True)) == performed_before, \
            "a second allocate of an existing machine must change nothing"

    def test_reference_holds_driver_url(self, provisioner, driver, store):
        name = self.machine_name("conf-ref")
        provisioner.allocate(driver, name, self.machine_options(name))
        saved = store.get("machine", name)
        assert saved is not None and saved.reference["driver_url"] == driver.driver_url
        assert "driver_version" in saved.reference
        json.dumps(saved.reference)  # the reference is plain JSON

    def test_ready_returns_machine_that_executes(self, provisioner, driver, caps):
        self.require(caps, "connectable")
        name = self.machine_name("conf-ready")
        machine = provisioner.up(driver, name, self.machine_options(name))
        assert machine is not None
        result = machine.execute_always("echo conformance-$((6*7))")
        assert result.ok and result.stdout.strip() == "conformance-42"
        failed = machine.execute_always("exit 3", check=False)
        assert failed.exit_status == 3
        machine.disconnect()

    def test_connect_changes_nothing(self, provisioner, driver, caps, store, handler):
        name = self.machine_name("conf-connect")
        self._up(provisioner, caps, driver, name)
        before = store.get("machine", name)
        actions_before = len(handler.actions(performed=True))
        if caps.connectable:
            machine = provisioner.connect(name, self.machine_options(name))
            assert machine.execute_always("true").ok
            machine.disconnect()
        else:
            spec = provisioner.spec(name)
            driver.connect_to_machine(spec, self.machine_options(name))
        after = store.get("machine", name)
        assert after.reference == before.reference and after.version == before.version
        assert len(handler.actions(performed=True)) == actions_before
        assert self.count_machines(driver, name) == 1

    def test_stop_then_ready(self, provisioner, driver, caps):
        name = self.machine_name("conf-stop")
        machine = self._up(provisioner, caps, driver, name)
        if not caps.stoppable:
            with pytest.raises(UnsupportedOperation):
                provisioner.stop(name, self.machine_options(name), driver)
            return
        if machine is not None:
            machine.execute_always("echo kept > conformance-marker.txt")
            machine.disconnect()
        provisioner.stop(name, self.machine_options(name), driver)
        assert driver.machine_state(provisioner.spec(name)) in ("stopped", "unknown")
        machine = provisioner.ready(driver, name, self.machine_options(name))
        if caps.connectable:
            assert machine.execute_always("cat conformance-marker.txt").stdout.strip() == "kept"
            machine.disconnect()
        assert self.count_machines(driver, name) == 1

    def test_destroy_is_idempotent(self, provisioner, driver, caps, store):
        name = self.machine_name("conf-destroy")
        self._up(provisioner, caps, driver, name)
        provisioner.destroy(name, self.machine_options(name), driver)
        assert store.get("machine", name) is None
        assert self.count_machines(driver, name) == 0
        provisioner.destroy(name, self.machine_options(name), driver)
        assert store.get("machine", name) is None

    def test_destroy_works_when_resource_is_gone(self, provisioner, driver, caps, store):
        name = self.machine_name("conf-gone")
        self._up(provisioner, caps, driver, name)
        self.delete_behind_back(driver, provisioner.spec(name))
        assert self.count_machines(driver, name) == 0
        provisioner.destroy(name, self.machine_options(name), driver)
        assert store.get("machine", name) is None

    def test_lost_resource_is_reported_and_recreated(self, provisioner, driver, caps, handler):
        self.require(caps, "detects_lost")
        name = self.machine_name("conf-lost")
        self._up(provisioner, caps, driver, name)
        self.delete_behind_back(driver, provisioner.spec(name))
        assert driver.machine_state(provisioner.spec(name)) == "missing"
        before = len(handler.actions(name, performed=True))
        machine = self._up(provisioner, caps, driver, name)
        assert self.count_machines(driver, name) == 1
        # a pool or slot driver may hand the same id back: what counts is that it was re-made
        assert len(handler.actions(name, performed=True)) > before, \
            "a lost machine must be re-created"
        assert driver.machine_state(provisioner.spec(name)) != "missing", \
            "the reference must record the re-created resource, not the lost one"
        if machine is not None:
            assert machine.execute_always("true").ok
            machine.disconnect()

    def test_why_run_on_fresh_spec_performs_nothing(self, store, conformance_config, driver, caps):
        planner = RecordingActionHandler(why_run=True)
        provisioner = Provisioner(store, config=conformance_config, action_handler=planner)
        name = self.machine_name("conf-whyrun")
        result = provisioner.up(driver, name, self.machine_options(name))
        assert result is None
        provisioner.stop(name, self.machine_options(name), driver)
        provisioner.destroy(name, self.machine_options(name), driver)
        assert store.get("machine", name) is None
        assert self.count_machines(driver, name) == 0
        assert planner.actions(), "why-run must still report what it would do"
        assert not planner.actions(performed=True)

    def test_batch_allocate_and_ready_five(self, provisioner, driver, caps):
        names = [self.machine_name(f"conf-batch-{i}") for i in range(1, self.batch_size + 1)]
        allocated = provisioner.allocate_batch(driver, [(n, self.machine_options(n)) for n in names])
        assert allocated.ok, allocated.failures
        for name in names:
            assert self.count_machines(driver, name) == 1
            assert provisioner.spec(name).reference["driver_url"] == driver.driver_url
        if not caps.connectable:
            return
        readied = provisioner.run_many("ready", [(driver, n, self.machine_options(n)) for n in names])
        assert readied.ok, readied.failures
        for name, outcome in readied.items():
            assert outcome.value.execute_always(f"echo {name}").stdout.strip() == name
            outcome.value.disconnect()

    def test_concurrent_allocates_of_one_name_create_one_machine(
            self, tmp_path, conformance_config, driver, caps, store):
        self.require(caps, "cross_process")
        name = self.machine_name("conf-race")
        workers = [self._worker(tmp_path, conformance_config, driver, name) for _ in range(2)]
        outputs = [w.communicate(timeout=self.worker_timeout) for w in workers]
        for worker, (out, err) in zip(workers, outputs):
            assert worker.returncode == 0, f"worker failed: {out}\n{err}"
        assert self.count_machines(driver, name) == 1
        assert store.get("machine", name).reference["driver_url"] == driver.driver_url

    @pytest.mark.parametrize("point", ["after_create", "before_save"])
    def test_crash_between_create_and_save_is_adopted(
            self, tmp_path, conformance_config, driver, caps, provisioner, point):
        self.require(caps, "crash_safe")
        name = self.machine_name(f"conf-crash-{point.replace('_', '-')}")
        worker = self._worker(tmp_path, conformance_config, driver, name, fault=f"{point}:crash")
        out, err = worker.communicate(timeout=self.worker_timeout)
        assert worker.returncode == CRASH_EXIT_CODE, \
            f"the driver never reached fault point {point!r} (exit {worker.returncode}): {err}"
        provisioner.allocate(driver, name, self.machine_options(name))
        assert self.count_machines(driver, name) == 1, "the re-run must adopt, not create twice"
        assert provisioner.spec(name).reference["driver_url"] == driver.driver_url
        assert self.leftovers(driver) == [], "the re-run must reclaim what the killed run left"

    def test_crash_during_destroy_is_finished_by_the_rerun(
            self, tmp_path, conformance_config, driver, caps, provisioner):
        self.require(caps, "crash_safe_destroy")
        name = "conf-crash-destroy"
        provisioner.allocate(driver, name, self.machine_options(name))
        worker = self._worker(tmp_path, conformance_config, driver, name,
                              fault="during_destroy:crash", operation="destroy")
        out, err = worker.communicate(timeout=self.worker_timeout)
        assert worker.returncode == CRASH_EXIT_CODE, \
            f"the driver never reached fault point 'during_destroy' (exit {worker.returncode}): {err}"
        provisioner.destroy(name, self.machine_options(name), driver)
        assert self.count_machines(driver, name) == 0
        assert provisioner.store.get("machine", name) is None
        assert self.leftovers(driver) == [], "the re-run must remove what the killed run left"

    # -- local-machine features: snapshots, synced folders ------------------------------------
    def test_snapshot_restore_returns_the_saved_files(self, provisioner, driver, caps, handler):
        name = "conf-snap"
        if not caps.snapshots:
            self._up(provisioner, caps, driver, name)
            with pytest.raises(UnsupportedOperation):
                driver.save_snapshot(handler.for_machine(name), provisioner.spec(name), "s1")
            return
        self.require(caps, "connectable")
        machine = self._up(provisioner, caps, driver, name)
        sums = "cd /srv/conf && find . -type f -exec sha256sum {} + | sort"
        machine.execute_always("mkdir -p /srv/conf && cd /srv/conf && echo one > a && "
                               "echo two > b && head -c 65536 /dev/urandom > blob")
        saved = machine.execute_always(sums).stdout
        driver.save_snapshot(handler.for_machine(name), provisioner.spec(name), "s1")
        assert [s.name for s in driver.list_snapshots(provisioner.spec(name))] == ["s1"]
        machine.execute_always("cd /srv/conf && echo changed > a && rm b && echo new > c")
        assert machine.execute_always(sums).stdout != saved
        machine.disconnect()
        options = self.machine_options(name)
        provisioner.run_locked("snapshot restore", driver, name, options,
                               lambda d, h, s, o: d.restore_snapshot(h, s, "s1"))
        machine = provisioner.ready(driver, name, options)
        assert machine.execute_always(sums).stdout == saved, "restore must bring back the files"
        machine.disconnect()
        driver.delete_snapshot(handler.for_machine(name), provisioner.spec(name), "s1")
        assert driver.list_snapshots(provisioner.spec(name)) == []

    def test_synced_folder_reaches_the_machine(self, tmp_path, provisioner, driver, caps):
        # copy mode (drivers that cannot mount) is checked on the fake: driver in
        # tests/integration/local, whose "machines" are this host
        self.require(caps, "connectable")
        self.require(caps, "mounts_folders")
        name = "conf-sync"
        folder = tmp_path / "synced"
        folder.mkdir()
        (folder / "hello.txt").write_text("from the host\n")
        options = {**self.machine_options(name),
                   "sync": [{"from": str(folder), "to": "/srv/conf-sync", "mode": "auto"}]}
        machine = provisioner.up(driver, name, options)
        provisioner.run_locked("sync", driver, name, options,
                               lambda d, h, s, o: d.sync_folders(h, s, o, machine))
        assert machine.execute_always("cat /srv/conf-sync/hello.txt").stdout == "from the host\n"
        (folder / "hello.txt").write_text("changed on the host\n")
        provisioner.run_locked("sync", driver, name, options,
                               lambda d, h, s, o: d.sync_folders(h, s, o, machine))
        assert machine.execute_always("cat /srv/conf-sync/hello.txt").stdout == \
            "changed on the host\n"
        machine.disconnect()
        provisioner.destroy(name, options, driver)
