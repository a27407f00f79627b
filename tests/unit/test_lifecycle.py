"""Provisioner: locks, state saved with last action and error, faults, why-run."""

from __future__ import annotations

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.errors import (
    ClusterConflict,
    ConfigError,
    MachineNotFound,
    ProviderError,
    StateLocked,
)
from provisioning.lifecycle import Provisioner, connect_to_machine
from provisioning.registry import driver_for_url
from provisioning.store.sqlite import SQLiteStore


@pytest.fixture
def setup(tmp_path):
    config = Config({"state": str(tmp_path / "state.db")}, base_dir=str(tmp_path))
    store = SQLiteStore(tmp_path / "state.db")
    driver = driver_for_url("fake:", config)
    yield Provisioner(store, config=config, action_handler=RecordingActionHandler()), driver, store
    store.close()


def test_failure_is_saved_as_last_error_and_rerun_recovers(setup, monkeypatch):
    provisioner, driver, store = setup
    monkeypatch.setenv("PROVISIONING_FAULT", "during_ready:fail")
    with pytest.raises(ProviderError, match="during_ready"):
        provisioner.up(driver, "web-1")
    saved = store.get("machine", "web-1")
    assert saved.last_action == "ready" and "during_ready" in saved.last_error
    monkeypatch.delenv("PROVISIONING_FAULT")
    machine = provisioner.up(driver, "web-1")
    assert machine.execute("echo ok").stdout == "ok\n"
    saved = store.get("machine", "web-1")
    assert saved.last_error is None and saved.last_action == "ready"
    assert driver.warehouse.counters()["creates"] == 1


def test_a_held_lock_stops_a_second_runner(setup):
    provisioner, driver, store = setup
    with store.lock("web-1"):
        with pytest.raises(StateLocked):
            provisioner.allocate(driver, "web-1")
    assert driver.warehouse.counters()["creates"] == 0


def test_connect_to_machine_by_name_uses_the_saved_driver_url(setup, tmp_path):
    provisioner, driver, store = setup
    provisioner.up(driver, "db")
    machine = connect_to_machine("db", provisioner.config)
    assert machine.execute("pwd").stdout.strip().startswith(str(tmp_path))
    with pytest.raises(MachineNotFound, match="converge up ghost"):
        connect_to_machine("ghost", provisioner.config)


def test_why_run_plans_without_locks_or_state(setup):
    _, driver, store = setup
    planner = Provisioner(store, config=setup[0].config,
                          action_handler=RecordingActionHandler(why_run=True))
    with store.lock("web-9"):  # why-run must not even need the lock
        assert planner.up(driver, "web-9") is None
    assert store.list("machine") == []
    assert [str(e) for e in planner.action_handler.actions()] == [
        "[web-9] would create server (small, fake-linux)"]


def _meddle(driver, handler, spec, options):
    """Work that changes the entry, then meets another cluster's machine (web-1) or fails."""
    spec.last_action = "meddle"
    spec.reference["meddled"] = True
    if spec.name == "web-1":
        raise ClusterConflict(spec.name, "alpha", "beta")
    raise ProviderError("the warehouse said no", machine=spec.name)


@pytest.mark.parametrize("path", ["one machine", "batch"])
def test_another_clusters_entry_is_left_as_it_was_and_other_errors_are_recorded(setup, path):
    """One machine's work under its lock (``run_locked``) and a batch's (``run_many_locked``,
    a chunked hold) end the same way: a ClusterConflict leaves the entry exactly as it was,
    another error is saved as its last_error, and every lock is free afterwards."""
    provisioner, driver, store = setup
    names = ["web-1", "web-2"]
    for name in names:
        provisioner.allocate(driver, name)
    before = store.get("machine", "web-1")
    if path == "one machine":
        for name, error in zip(names, (ClusterConflict, ProviderError)):
            with pytest.raises(error):
                provisioner.run_locked("meddle", driver, name, {}, _meddle)
    else:
        results = provisioner.run_many_locked("meddle", [(driver, n, {}) for n in names],
                                              _meddle)
        assert isinstance(results["web-1"].error, ClusterConflict)
        assert isinstance(results["web-2"].error, ProviderError)
    kept = store.get("machine", "web-1")
    assert (kept.version, kept.data_json()) == (before.version, before.data_json())
    failed = store.get("machine", "web-2")
    assert failed.last_action == "meddle"
    assert failed.last_error == "ProviderError: [web-2] the warehouse said no"
    for name in names:
        with store.lock(name, wait=0):  # StateLocked if a lock was left held
            pass


def test_the_outcome_of_a_machines_locked_work_is_handled_in_one_place():
    """The single-machine and the batch path share one outcome handler (they had each their
    own copy of the ClusterConflict and last_error handling)."""
    import inspect

    import provisioning.lifecycle as lifecycle

    assert inspect.getsource(lifecycle).count("isinstance(exc, ClusterConflict)") == 1


def test_a_batch_checks_the_options_its_machines_share_once(setup):
    """The machines of a group share one options mapping: a batch checks it once, and a
    problem in it is still named for every machine, before anything is created."""
    provisioner, driver, store = setup
    checked = []

    class CountingDriver(type(driver)):
        def validate_machine_options(self, machine_options, **kwargs):
            checked.append(machine_options)
            return super().validate_machine_options(machine_options, **kwargs)

    counting = CountingDriver.from_url(driver.driver_url, provisioner.config)
    shared, other = {"size": "small"}, {"size": "small"}
    provisioner.allocate_batch(counting, [(f"web-{i}", shared) for i in range(1, 6)]
                               + [("db-1", other)])
    assert [id(o) for o in checked] == [id(shared), id(other)]
    assert sorted(e.name for e in store.list("machine")) == \
        ["db-1", "web-1", "web-2", "web-3", "web-4", "web-5"]

    checked.clear()
    bad = {"sise": "small"}
    with pytest.raises(ConfigError) as raised:
        provisioner.allocate_batch(counting, [(f"app-{i}", bad) for i in range(1, 4)])
    assert len(checked) == 1
    assert [p.message.split(":")[0] for p in raised.value.problems] == \
        ["machine 'app-1'", "machine 'app-2'", "machine 'app-3'"]
    assert all("unknown option 'sise'" in p.message for p in raised.value.problems)
    assert store.get("machine", "app-1") is None
