"""The conformance cases of plan/apply and import (``DriverConformance`` inherits them): why-run
plans ``create`` for a resource deleted behind our back and ``start`` for a stopped machine,
touching nothing; ``apply`` performs what the plan said (``provisioning.testing.plan_check``);
``converge import`` adopts a resource the driver made outside the state (drivers that do not
declare ``imports`` must raise UnsupportedOperation); a ``create_before_destroy`` replace
makes the new resource before destroying the old one (where the driver declares it). The plan
cases drive a one-file cluster (``provisioning.cluster``) on the suite's store. The hooks
(``machine_options``, ``count_machines``, ``delete_behind_back``...) are
``DriverConformance``'s."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.cluster.apply import apply_plan
from provisioning.cluster.file import parse_cluster
from provisioning.cluster.plan import make_plan
from provisioning.cluster.runner import ClusterRunner
from provisioning.cluster.state_ops import import_resource
from provisioning.errors import ConfigError, MachineNotFound, UnsupportedOperation
from provisioning.lifecycle import Provisioner
from provisioning.spec import MachineSpec
from provisioning.store.sqlite import SQLiteStore
from provisioning.testing.plan_check import performed_by_machine, plan_mismatches

__all__ = ["PlanConformance"]


class PlanConformance:
    """Mixed into ``DriverConformance``; not used on its own."""

    # the hooks and helpers DriverConformance defines
    machine_options: Any
    count_machines: Any
    delete_behind_back: Any
    machine_name: Any
    require: Any
    leftovers: Any
    batch_size: int
    _up: Any

    def missing_resource_id(self) -> str:
        """A resource id no resource has (import must raise MachineNotFound for it)."""
        return "conf-no-such-resource"

    @pytest.fixture
    def import_source(self, tmp_path, driver, caps, conformance_config) -> Iterator[str | None]:
        """The id of a resource the driver made outside the suite's state, for the import case
        (None for drivers that do not import): by default one allocated now through a second
        state. Drivers whose machines take minutes to boot override it to lend one they
        already run, and take it back after the case (see the libvirt tests)."""
        if not caps.imports:
            yield None
            return
        elsewhere = SQLiteStore(tmp_path / "elsewhere.db")  # someone else's state
        try:
            source = "conf-import-source"
            made = Provisioner(elsewhere, config=conformance_config, lock_wait=60).allocate(
                driver, source, self.machine_options(source))
            yield driver.resource_id(made.reference)
        finally:
            elsewhere.close()

    # -- plan and apply (provisioning.cluster) --------------------------------------------------
    def _cluster_runner(self, tmp_path, store, conformance_config, driver, names, *,
                        why_run: bool, **group: Any):
        """A ClusterRunner over a cluster file naming ``names`` (each its own group, with the
        settings ``group``) on this driver, on ``store``."""
        data = {"name": "conformance", "driver": driver.driver_url,
                "machines": {n: {"machine_options": self.machine_options(n), **group}
                             for n in names}}
        for key in ("private_keys", "private_key_paths"):  # the file's key check reads them
            if conformance_config.data.get(key):
                data[key] = conformance_config.data[key]
        path = tmp_path / "conformance-cluster.yml"
        path.write_text(json.dumps(data))  # JSON is YAML
        handler = RecordingActionHandler(why_run=why_run)
        return ClusterRunner(parse_cluster(data, str(path)), store=store,
                             config=conformance_config, action_handler=handler)

    def test_why_run_plans_create_for_a_resource_deleted_behind_our_back(
            self, tmp_path, provisioner, driver, caps, store, conformance_config):
        self.require(caps, "detects_lost")
        name = self.machine_name("conf-plan-lost")
        self._up(provisioner, caps, driver, name)
        self.delete_behind_back(driver, provisioner.spec(name))
        before = store.get("machine", name)
        runner = self._cluster_runner(tmp_path, store, conformance_config, driver, [name],
                                      why_run=True)
        [planned] = make_plan(runner).machines
        assert (planned.action, planned.observed) == ("create", "missing"), planned
        assert planned.steps, "the plan must say what the create would do"
        assert self.count_machines(driver, name) == 0, "why-run must create nothing"
        after = store.get("machine", name)
        assert (after.reference, after.version) == (before.reference, before.version)
        assert not runner.action_handler.actions(performed=True)

    def test_destroy_of_a_batch_removes_every_machine(self, tmp_path, provisioner, driver,
                                                      caps, store, conformance_config):
        """``converge destroy`` of several machines: a driver overriding ``delete_resources``
        removes them in one request (``destroy_together``), the others one by one. Why-run
        touches nothing; the real run leaves no machine, no entry and no leftover."""
        names = [self.machine_name(f"conf-gone-{i}") for i in range(1, self.batch_size + 1)]
        made = provisioner.allocate_batch(driver, [(n, self.machine_options(n)) for n in names])
        assert made.ok, made.failures
        planner = self._cluster_runner(tmp_path, store, conformance_config, driver, names,
                                       why_run=True)
        assert planner.destroy_names(names).ok
        assert not planner.action_handler.actions(performed=True)
        assert [self.count_machines(driver, n) for n in names] == [1] * len(names)
        runner = self._cluster_runner(tmp_path, store, conformance_config, driver, names,
                                      why_run=False)
        result = runner.destroy_names(names)
        assert result.ok, result.failures
        assert [self.count_machines(driver, n) for n in names] == [0] * len(names), \
            "every machine of the batch must be gone (delete_resources got them all?)"
        assert [n for n in names if store.get("machine", n) is not None] == []
        assert self.leftovers(driver) == []

    def test_why_run_plans_start_for_a_stopped_machine(self, tmp_path, provisioner, driver,
                                                       caps, store, conformance_config):
        self.require(caps, "stoppable")
        name = self.machine_name("conf-plan-stopped")
        self._up(provisioner, caps, driver, name)
        provisioner.stop(name, self.machine_options(name), driver)
        state = driver.machine_state(provisioner.spec(name))
        if state != "stopped":
            pytest.skip(f"not applicable: the driver reports a stopped machine as {state!r}")
        runner = self._cluster_runner(tmp_path, store, conformance_config, driver, [name],
                                      why_run=True)
        [planned] = make_plan(runner).machines
        assert (planned.action, planned.observed) == ("start", "stopped"), planned
        assert driver.machine_state(provisioner.spec(name)) == "stopped", "why-run started it"
        assert not runner.action_handler.actions(performed=True)

    def test_apply_performs_exactly_the_plan(self, tmp_path, provisioner, driver, caps, store,
                                             conformance_config):
        self.require(caps, "connectable")  # apply readies and converges: it connects
        kept, new = self.machine_name("conf-pa-kept"), self.machine_name("conf-pa-new")
        names = [kept, new]
        self._up(provisioner, caps, driver, kept)
        if caps.stoppable and caps.detects_lost:
            stopped = self.machine_name("conf-pa-stopped")
            self._up(provisioner, caps, driver, stopped)
            provisioner.stop(stopped, self.machine_options(stopped), driver)
            names.append(stopped)
        planner = self._cluster_runner(tmp_path, store, conformance_config, driver, names,
                                       why_run=True)
        plan = make_plan(planner)
        assert {m.name: m.action for m in plan.machines}[new] == "create"
        assert not planner.action_handler.actions(performed=True)
        runner = self._cluster_runner(tmp_path, store, conformance_config, driver, names,
                                      why_run=False)
        results = apply_plan(runner, plan)
        assert results.ok, results.failures
        for outcome in results.values():
            if outcome.value is not None:
                outcome.value.disconnect()
        performed = performed_by_machine(runner.action_handler.events)
        saved = [e.name for e in store.list("machine")]
        assert plan_mismatches(plan, performed, saved) == []
        for name in names:
            assert self.count_machines(driver, name) == 1
        again = make_plan(self._cluster_runner(tmp_path, store, conformance_config, driver,
                                               names, why_run=True))
        assert {m.action for m in again.machines} == {"nothing"}, again.summary()

    def test_replace_creates_the_new_machine_before_destroying_the_old(
            self, tmp_path, provisioner, driver, caps, store, conformance_config):
        """``create_before_destroy: true`` (Capabilities.create_before_destroy): why-run plans
        it and touches nothing; apply makes a second resource beside the first (never adopting
        the old one as the new one) and destroys the old one once the new one is up. A driver
        that does not declare it has the group refused (ConfigError) before anything is done."""
        name = self.machine_name("conf-cbd")

        def runner(why_run: bool):
            return self._cluster_runner(tmp_path, store, conformance_config, driver, [name],
                                        why_run=why_run, create_before_destroy=True)
        if not caps.create_before_destroy:
            with pytest.raises(ConfigError, match=r"create_before_destroy"):
                make_plan(runner(True), replace=[name])
            assert store.get("machine", name) is None and self.count_machines(driver, name) == 0
            return
        self.require(caps, "connectable")
        self._up(provisioner, caps, driver, name)
        before = store.get("machine", name)
        old = dict(before.reference)
        planner = runner(True)
        plan = make_plan(planner, replace=[name])
        [item] = plan.machines
        assert (item.action, item.create_before_destroy) == ("replace", True), item
        assert not planner.action_handler.actions(performed=True)
        after = store.get("machine", name)
        assert (after.reference, after.version) == (old, before.version), "why-run changed it"
        assert self.count_machines(driver, name) == 1
        applier = runner(False)
        results = apply_plan(applier, plan)
        assert results.ok, results.failures
        for outcome in results.values():
            if outcome.value is not None:
                outcome.value.disconnect()
        saved = [e.name for e in store.list("machine")]
        performed = performed_by_machine(applier.action_handler.events)
        assert plan_mismatches(plan, performed, saved) == [], performed
        new = store.get("machine", name)
        assert (new.generation, new.deposed) == (1, []), new
        assert new.reference != old, "the new machine must be a new resource"
        assert driver.machine_state(MachineSpec(name, reference=old)) == "missing", \
            "the old resource must be destroyed once the new one is up"
        assert driver.machine_state(new) == "running"
        assert self.count_machines(driver, name) == 1
        again = make_plan(runner(True))
        assert [m.action for m in again.machines] == ["nothing"], again.summary()

    # -- import (Capabilities.imports) -----------------------------------------------------------
    def test_import_adopts_a_resource_made_outside_the_state(self, provisioner, driver, caps,
                                                             store, handler, conformance_config,
                                                             import_source):
        name = "conf-imported"
        options = self.machine_options(name)
        if not caps.imports:
            with pytest.raises(UnsupportedOperation):
                import_resource(provisioner, driver, name, "anything", options)
            assert store.get("machine", name) is None
            return
        resource_id = import_source
        assert resource_id, "resource_id() must name the resource a reference records"
        planner = RecordingActionHandler(why_run=True)
        planned = import_resource(Provisioner(store, config=conformance_config,
                                              action_handler=planner),
                                  driver, name, resource_id, options)
        assert planned is None and store.get("machine", name) is None
        assert planner.actions() and not planner.actions(performed=True)
        with pytest.raises(MachineNotFound):
            import_resource(provisioner, driver, name, self.missing_resource_id(), options)
        assert store.get("machine", name) is None
        spec = import_resource(provisioner, driver, name, resource_id, options)
        saved = store.get("machine", name)
        assert saved is not None and saved.reference["driver_url"] == driver.driver_url
        assert driver.resource_id(saved.reference) == resource_id == driver.resource_id(
            spec.reference)
        json.dumps(saved.reference)
        assert self.count_machines(driver, name) == 1, "the import must mark it as this machine's"
        with pytest.raises(ConfigError, match="already in the state"):
            import_resource(provisioner, driver, "conf-imported-twice", resource_id, options)
        with pytest.raises(ConfigError, match="already in the state"):
            import_resource(provisioner, driver, name, resource_id, options)
        performed = len(handler.actions(performed=True))
        provisioner.allocate(driver, name, options)
        assert len(handler.actions(performed=True)) == performed, \
            "allocate of an imported machine must adopt it, not create another"
        if caps.connectable:
            machine = provisioner.up(driver, name, options)
            assert machine.execute_always("echo imported").stdout.strip() == "imported"
            machine.disconnect()
