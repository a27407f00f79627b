"""The contract's batch create (``create_resources``): machines whose ``Creation``s share a
group are made in one request, with the contract's fault points, pending references taken back
when the request is refused, and one outcome per machine. The shelf below is a warehouse in
this process's memory, the smallest one that takes a request for many resources."""

from __future__ import annotations

import itertools

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.driver import ConfigError, Creation, Driver
from provisioning.faults import FAULT_ENV
from provisioning.lifecycle import Provisioner
from provisioning.store.memory import MemoryStore


class _ShelfDriver(Driver):
    """``shelf:``: boxes on a shelf; one request puts any number of the same size on it."""

    scheme = "shelf"
    resource_kind = "box"
    _ids = itertools.count(1)

    def __init__(self, driver_url, config):
        super().__init__(driver_url, config)
        self.boxes: dict[str, dict] = {}
        self.requests: list[list[str]] = []

    def find_resource(self, machine_spec):
        token = self.idempotency_token(machine_spec)
        return next(({"box_id": i} for i, b in self.boxes.items() if b["token"] == token), None)

    def resource_state(self, machine_spec):
        return "running" if machine_spec.reference.get("box_id") in self.boxes else "missing"

    def prepare_create(self, action_handler, machine_spec, machine_options):
        size = machine_options.get("size", "small")
        return Creation(machine_spec, machine_options, action_handler, f"create box ({size})",
                        group=size, plan=size)

    def create_resources(self, action_handler, creations):
        for creation in creations:
            self.save_pending_reference(creation.machine_spec, {"box_id": None,
                                                                 "size": creation.plan})
        if creations[0].plan == "refused":
            raise ConfigError("no such size: refused")
        self.requests.append([c.machine_spec.name for c in creations])
        made = []
        for creation in creations:
            box_id = f"box-{next(self._ids)}"
            self.boxes[box_id] = {"token": self.idempotency_token(creation.machine_spec)}
            made.append(box_id)
        return made

    def record_created(self, creation, made):
        return {**creation.machine_spec.reference, "box_id": made}

    def open_machine(self, machine_spec, machine_options, action_handler=None):
        raise NotImplementedError

    def delete_resource(self, action_handler, machine_spec):
        del self.boxes[machine_spec.reference["box_id"]]


@pytest.fixture
def driver(tmp_path):
    return _ShelfDriver("shelf:", Config(base_dir=str(tmp_path)))


def _allocate(driver, store, requests, *, why_run=False):
    handler = RecordingActionHandler(why_run=why_run)
    results = Provisioner(store, config=driver.config, action_handler=handler).allocate_batch(
        driver, requests)
    return results, handler


def test_a_group_is_made_in_one_request_and_saved_per_machine(driver):
    store = MemoryStore()
    requests = [("a", {}), ("b", {}), ("c", {}), ("d", {"size": "big"})]
    results, handler = _allocate(driver, store, requests)
    assert results.ok, results.failures
    assert driver.requests == [["a", "b", "c"], ["d"]]
    assert [str(a) for a in handler.actions(performed=True)] == [
        "create a box for each of a, b, c in one request", "[d] create box (big)"]
    assert {store.get("machine", n).reference["box_id"] for n, _ in requests} == set(driver.boxes)
    assert store.get("machine", "d").reference["size"] == "big"  # the pending fields are kept

    again, handler = _allocate(driver, store, requests)
    assert again.ok and not handler.actions(performed=True) and len(driver.requests) == 2


def test_why_run_plans_the_requests_and_makes_nothing(driver):
    store = MemoryStore()
    _, handler = _allocate(driver, store, [("a", {}), ("b", {})], why_run=True)
    assert [str(a) for a in handler.actions()] == ["would create a box for each of a, b in one request"]
    assert driver.requests == [] and store.get("machine", "a") is None


def test_a_refused_request_takes_its_pending_references_back(driver):
    store = MemoryStore()
    results, _ = _allocate(driver, store, [("a", {"size": "refused"}), ("b", {"size": "refused"}),
                                           ("c", {})])
    assert isinstance(results["a"].error, ConfigError)
    assert isinstance(results["b"].error, ConfigError) and results["c"].ok
    assert store.get("machine", "a") is None and store.get("machine", "b") is None


def test_a_failure_after_the_request_is_adopted_by_the_rerun(driver, monkeypatch):
    store = MemoryStore()
    monkeypatch.setenv(FAULT_ENV, "after_create:fail")
    results, _ = _allocate(driver, store, [("a", {}), ("b", {})])
    assert not results["a"].ok and not results["b"].ok and len(driver.boxes) == 2
    monkeypatch.delenv(FAULT_ENV)
    results, handler = _allocate(driver, store, [("a", {}), ("b", {})])
    assert results.ok and len(driver.boxes) == 2 and len(driver.requests) == 1
    assert sorted(str(a) for a in handler.actions(performed=True)) == [
        f"[a] adopt box {store.get('machine', 'a').reference['box_id']} tagged for this machine",
        f"[b] adopt box {store.get('machine', 'b').reference['box_id']} tagged for this machine"]


class _CountingStore(MemoryStore):
    """Counts how often the whole state is listed."""

    def __init__(self):
        super().__init__()
        self.lists = 0

    def list(self, kind="machine"):
        self.lists += 1
        return super().list(kind)


def test_a_rerun_adopting_a_whole_batch_lists_the_state_once(driver, monkeypatch):
    """Each adopted machine is checked against the other entries (a resource another entry
    records is never adopted): one listing for the batch, not one per machine (a re-run after
    a crash at 10,000 machines would read the state once per machine of the unsaved chunks)."""
    store = _CountingStore()
    requests = [(f"m-{i}", {}) for i in range(30)]
    monkeypatch.setenv(FAULT_ENV, "after_create:fail")
    _allocate(driver, store, requests)
    monkeypatch.delenv(FAULT_ENV)
    store.lists = 0
    results, handler = _allocate(driver, store, requests)
    assert results.ok and len(driver.boxes) == 30 and len(driver.requests) == 1
    assert len([a for a in handler.actions(performed=True) if "adopt box" in str(a)]) == 30
    assert store.lists == 1
