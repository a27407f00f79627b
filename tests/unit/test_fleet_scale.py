"""Fleet scale: each driver is asked once for the state of all its machines, and a fake cloud
of many servers answers without re-reading them all for each one."""

from __future__ import annotations

import threading

import pytest

from provisioning.cluster import Cluster
from provisioning.drivers.fake import FakeDriver, FakeWarehouse
from provisioning.registry import register_driver


class CountingFake(FakeDriver):
    """The fake driver, counting the state questions it is asked (per warehouse directory)."""

    scheme = "scale-counting"
    calls: dict[str, list[str]] = {}
    _lock = threading.Lock()

    def _record(self, what: str) -> None:
        with self._lock:
            self.calls.setdefault(self.driver_url, []).append(what)

    def machine_state(self, machine_spec):
        self._record("machine_state")
        return super().machine_state(machine_spec)

    def machine_states(self, machine_specs, parallelizer=None):
        self._record(f"machine_states:{len(machine_specs)}")
        return super().machine_states(machine_specs, parallelizer)

    def allocate_machine(self, action_handler, machine_spec, machine_options):
        self._record("allocate_machine")
        return super().allocate_machine(action_handler, machine_spec, machine_options)

    def allocate_machines(self, action_handler, specs_and_options, parallelizer=None):
        self._record(f"allocate_machines:{len(specs_and_options)}")
        return super().allocate_machines(action_handler, specs_and_options, parallelizer)


class ChunkOfFour(CountingFake):
    scheme = "scale-chunk-four"
    allocate_chunk_size = 4


@pytest.fixture
def counting():
    register_driver(CountingFake.scheme, CountingFake)
    CountingFake.calls.clear()
    return CountingFake


def test_status_asks_each_driver_once_for_all_its_machines(tmp_path, counting):
    cluster = tmp_path / "cluster.yml"
    cluster.write_text("machines:\n"
                       "  web: {count: 30, driver: 'scale-counting:./east'}\n"
                       "  db: {count: 12, driver: 'scale-counting:./west'}\n"
                       "  spare: {driver: 'scale-counting:./west'}\n")
    with Cluster.load(str(cluster), parallel=8) as fleet:
        assert fleet.up(["web", "db"]).ok
        counting.calls.clear()
        rows = {row["name"]: row for row in fleet.status()}
    east, west = (f"scale-counting:{tmp_path / d}" for d in ("east", "west"))
    assert counting.calls == {east: ["machine_states:30"], west: ["machine_states:12"]}
    assert rows["web-7"]["state"] == rows["db-12"]["state"] == "running"
    assert rows["spare"]["state"] == "not created"


def test_up_creates_a_group_through_one_batch_allocate_per_driver_chunk(tmp_path):
    register_driver(ChunkOfFour.scheme, ChunkOfFour)
    CountingFake.calls.clear()
    cluster = tmp_path / "cluster.yml"
    cluster.write_text("driver: 'scale-chunk-four:./cloud'\nmachines:\n  web: {count: 10}\n")
    with Cluster.load(str(cluster), parallel=3) as fleet:
        results = fleet.up()
        assert results.ok
        (calls,) = CountingFake.calls.values()
        assert sorted(calls) == ["allocate_machines:2", "allocate_machines:4",
                                 "allocate_machines:4"]  # no machine allocated alone
        assert FakeWarehouse(str(tmp_path / "cloud")).counters()["creates"] == 10
        assert all(fleet.runner.actions[f"web-{i}"] == 1 for i in range(1, 11))  # its create
        CountingFake.calls.clear()
        assert fleet.up().ok  # nothing to create: each machine checks its own server
        (calls,) = CountingFake.calls.values()
        assert calls == ["allocate_machine"] * 10
    assert FakeWarehouse(str(tmp_path / "cloud")).counters()["creates"] == 10


def test_fake_warehouse_finds_and_counts_servers_of_a_big_cloud(tmp_path):
    warehouse = FakeWarehouse(str(tmp_path / "cloud"))
    made = warehouse.create_many([(f"m{i}", {"provisioning:name": f"m{i}",
                                             "provisioning:store": "s1"}, "small", "fake-linux")
                                  for i in range(300)])
    assert warehouse.counters() == {"creates": 300, "destroys": 0}
    assert warehouse.find_tagged("m123", "s1")["id"] == made[123]["id"]
    assert warehouse.find_tagged("m123", "other-store") is None
    assert warehouse.delete(made[123]["id"]) and not warehouse.delete(made[123]["id"])
    assert warehouse.find_tagged("m123", "s1") is None
    assert len(warehouse.servers()) == 299
    assert warehouse.counters() == {"creates": 300, "destroys": 1}


def test_fake_cloud_of_the_old_single_file_layout_is_split_on_open(tmp_path):
    import json
    import os

    directory = tmp_path / "cloud"
    os.makedirs(directory / "machines" / "srv-1")
    server = {"id": "srv-1", "name": "a", "tags": {"provisioning:name": "a",
                                                   "provisioning:store": "s"},
              "size": "small", "image": "fake-linux", "state": "stopped",
              "dir": str(directory / "machines" / "srv-1"), "created_at": 1.0}
    (directory / "servers.json").write_text(json.dumps(
        {"servers": {"srv-1": server}, "counters": {"creates": 4, "destroys": 3}}))
    warehouse = FakeWarehouse(str(directory))
    assert warehouse.servers() == {"srv-1": server}
    assert warehouse.find_tagged("a", "s") == server
    assert warehouse.counters() == {"creates": 4, "destroys": 3}
    assert not (directory / "servers.json").exists()


def _statements(store):
    """Every SQL statement the SQLite store runs from now on (SQLite's own trace hook)."""
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    return seen


def _fleet(tmp_path, count):
    path = tmp_path / f"fleet-{count}" / "cluster.yml"
    path.parent.mkdir()
    path.write_text(f"driver: 'fake:./cloud'\nmachines:\n  web: {{count: {count}}}\n")
    return str(path)


def test_status_reads_the_state_in_the_same_few_queries_for_any_fleet_size(tmp_path):
    counts = {}
    for count in (5, 120):
        with Cluster.load(_fleet(tmp_path, count), parallel=4) as fleet:
            assert fleet.up().ok
            seen = _statements(fleet.store)
            rows = fleet.status()
            assert len(rows) == count and {r["state"] for r in rows} == {"running"}
            counts[count] = len(seen)
    assert counts[5] == counts[120] <= 4, counts


def test_up_saves_each_machine_with_its_lock_release_and_a_no_change_up_writes_no_entry(
        tmp_path):
    """Each machine's last save and its lock release are one write of one transaction; a
    no-change up reads machines and facts a chunk at a time (never one by one), writes no
    entry (versions stay) and only releases each lock."""
    single_read = "SELECT data, version FROM entries WHERE kind=? AND name=?"
    with Cluster.load(_fleet(tmp_path, 150), parallel=6) as fleet:
        created = _statements(fleet.store)
        assert fleet.up().ok
        versions = {e.name: e.version for e in fleet.store.list("machine")}
        seen = _statements(fleet.store)
        assert fleet.up().ok
        assert {e.name: e.version for e in fleet.store.list("machine")} == versions
    last_saves = [i for i, s in enumerate(created) if s.startswith("INSERT OR REPLACE INTO "
                                                                   "entries") and
                  created[i + 1].startswith("DELETE FROM locks")]  # in the same write
    assert len(last_saves) == 150
    assert not [s for s in seen if s.startswith(single_read)]
    assert not [s for s in seen if s.startswith(("INSERT OR REPLACE INTO entries", "UPDATE "
                                                 "entries", "DELETE FROM entries"))]
    assert len([s for s in seen if s.startswith("DELETE FROM locks")]) == 150


class TogetherFake(FakeDriver):
    """The fake driver whose first ``together`` machines finish readying at one moment (a
    barrier of all the workers), so that every worker then needs the ``machines`` view at
    once; the machines after them do not wait."""

    scheme = "scale-together"
    together = 0
    barrier: threading.Barrier | None = None
    _lock = threading.Lock()

    def wait_for_machine(self, action_handler, machine_spec, machine_options, *, started=True):
        with self._lock:
            mine = type(self).together > 0
            type(self).together -= 1
        if mine and self.barrier is not None:
            self.barrier.wait()
        return super().wait_for_machine(action_handler, machine_spec, machine_options,
                                         started=started)


@pytest.mark.parametrize("workers", [1, 8])
def test_up_reads_the_whole_state_a_fixed_number_of_times_whatever_the_workers(tmp_path,
                                                                                 workers):
    """The ``machines`` template view is read once per wave, not once by each worker that
    needs it first: the full reads of a no-change up do not grow with ``--parallel`` (each
    reads every entry of a kind)."""
    register_driver(TogetherFake.scheme, TogetherFake)
    path = tmp_path / "cluster.yml"
    path.write_text("driver: 'scale-together:./cloud'\nmachines:\n  web: {count: 300}\n")
    with Cluster.load(str(path), parallel=workers) as fleet:
        assert fleet.up().ok
        seen = _statements(fleet.store)
        TogetherFake.barrier, TogetherFake.together = threading.Barrier(workers), workers
        assert fleet.up().ok
    full_reads = [s for s in seen if s.endswith("ORDER BY name")]
    assert len(full_reads) == 3, full_reads  # the plan's entries; the view's machines, facts


def test_locking_a_chunk_reads_the_holders_in_one_query_whatever_its_size(tmp_path):
    """``lock_many`` on SQLite: one transaction, one query for the current holders (of up to
    500 names), then one insert per free name; a name another holder keeps is refused."""
    from provisioning.store.sqlite import SQLiteStore

    others = {"host": "elsewhere", "pid": 1, "command": "another runner"}
    shapes = {}
    for size in (3, 300):
        with SQLiteStore(tmp_path / f"state-{size}.db") as store:
            store.lock("m-0", 60, holder=others)
            seen = _statements(store)
            locks, refused = store.lock_many([f"m-{i}" for i in range(size)], 60)
            assert sorted(locks) == sorted(f"m-{i}" for i in range(1, size)) and \
                list(refused) == ["m-0"]
            inserts = [s for s in seen if s.startswith("INSERT OR REPLACE INTO locks")]
            assert len(inserts) == size - 1
            shapes[size] = [s.split(" WHERE")[0] for s in seen if s not in inserts]
            for lock in locks.values():
                lock.release()
    assert shapes[3] == shapes[300] == ["BEGIN IMMEDIATE",
                                        "SELECT name, holder, expires_at FROM locks",
                                        "COMMIT"], shapes
