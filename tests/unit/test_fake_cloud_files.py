"""The ``fake:`` cloud's files at fleet scale: creating a batch of servers writes one journal line
(not a file per server), ``status`` reads the journal once (not a file per machine) and writes
nothing, and what a run killed mid-create leaves is finished by the next run."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.cluster import Cluster
from provisioning.drivers.fake import FakeWarehouse
from provisioning.drivers.fake_journal import ServerJournal
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.store.memory import MemoryStore
from tests.cli_runner import converge

_seen: list[tuple[str, str]] = []
_watching = threading.local()


def _audit(event: str, args: tuple) -> None:
    if getattr(_watching, "root", None) and event in ("open", "os.mkdir", "os.rename"):
        path = args[0]
        if isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(
                _watching.root):
            mode = args[1] if event == "open" else "w"
            flags = args[2] if event == "open" and len(args) > 2 else 0
            write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
            _seen.append((event, "write" if write else "read"))


sys.addaudithook(_audit)  # the interpreter's own record of every file opened (no patching)


def _files_touched(root: Path, action) -> list[tuple[str, str]]:
    """What ``action()`` opened, made and renamed under ``root`` in this thread."""
    _seen.clear()
    _watching.root = str(root)
    try:
        action()
    finally:
        _watching.root = None
    return list(_seen)


def _fleet(tmp_path: Path, count: int) -> str:
    path = tmp_path / f"fleet-{count}" / "cluster.yml"
    path.parent.mkdir()
    path.write_text(f"driver: 'fake:./cloud'\nmachines:\n  web: {{count: {count}}}\n")
    return str(path)


def test_creating_servers_writes_one_journal_line_per_batch_not_files_per_server(tmp_path):
    """``up`` of N new machines (chunks of 100): the fake cloud's file writes grow with the
    chunks, not with N; each server costs only its own directory."""
    writes, dirs = {}, {}
    for count in (10, 250):
        cloud = tmp_path / f"fleet-{count}" / "cloud"
        with Cluster.load(_fleet(tmp_path, count), parallel=1) as fleet:
            results: list = []
            touched = _files_touched(cloud, lambda: results.append(fleet.up()))  # noqa: B023
            assert results[0].ok
        writes[count] = len([t for t in touched if t == ("open", "write")])
        dirs[count] = len([t for t in touched if t[0] == "os.mkdir"])
        warehouse = FakeWarehouse(str(cloud))
        assert len(warehouse.servers()) == warehouse.counters()["creates"] == count
        journal = (cloud / "servers" / "journal").read_text().splitlines()
        assert len(journal) == (count + 99) // 100  # one line per chunk's request
        assert sorted(os.listdir(cloud / "servers")) == ["journal"]
        assert warehouse.leftovers() == []
    # the lock when the cloud is opened, then per chunk: the lock, the journal, the counter
    assert writes == {10: 1 + 3, 250: 1 + 3 * 3}, writes
    assert dirs[250] - dirs[10] == 240, dirs  # a directory per server, nothing else per server


def test_status_reads_the_fake_cloud_once_and_writes_nothing(tmp_path):
    """``status`` of N machines opens the same few fake-cloud files for any N (the journal,
    not a record per machine) and changes none of them."""
    opened = {}
    for count in (5, 120):
        cloud = tmp_path / f"fleet-{count}" / "cloud"
        with Cluster.load(_fleet(tmp_path, count), parallel=4) as fleet:
            assert fleet.up().ok
        with Cluster.load(_fleet_again(tmp_path, count), parallel=4) as fleet:
            rows: list = []
            touched = _files_touched(cloud, lambda: rows.extend(fleet.status()))  # noqa: B023
        assert {r["state"] for r in rows} == {"running"} and len(rows) == count
        assert [t for t in touched if t[1] == "write"] == []
        opened[count] = len(touched)
    assert opened[5] == opened[120] <= 2, opened


def _fleet_again(tmp_path: Path, count: int) -> str:
    return str(tmp_path / f"fleet-{count}" / "cluster.yml")


def test_status_before_creation_shows_the_canonical_driver_url_and_writes_nothing(tmp_path):
    """A machine not created yet shows the driver URL a created one is saved with
    (``fake:/abs/cloud``, not the file's ``fake:./cloud``); working it out creates nothing."""
    (tmp_path / "cluster.yml").write_text("driver: 'fake:./cloud'\nmachines:\n"
                                          "  web: {count: 2}\n")
    canonical = f"fake:{tmp_path / 'cloud'}"

    def urls() -> dict[str, tuple[str, str]]:
        shown = converge("status", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        rows = [line.split() for line in shown.stdout.splitlines()[1:]]
        return {row[0]: (row[1], " ".join(row[2:4])) for row in rows}

    assert urls() == {"web-1": (canonical, "not created"), "web-2": (canonical, "not created")}
    assert sorted(os.listdir(tmp_path)) == ["cluster.yml"]  # no state, no cloud
    assert converge("up", "web-1", cwd=tmp_path).returncode == 0
    assert urls() == {"web-1": (canonical, "running -"), "web-2": (canonical, "not created")}


def test_a_torn_journal_line_and_an_unrecorded_server_directory_are_left_behind(tmp_path):
    """A create killed while writing its journal line, or after making its directories but
    before the line: the records read are whole, the next writer starts a fresh line, and the
    directories of servers never recorded are removed."""
    cloud = tmp_path / "cloud"
    warehouse = FakeWarehouse(str(cloud))
    first = warehouse.create("a", {"provisioning:name": "a", "provisioning:store": "s"},
                             "small", "fake-linux")
    with open(cloud / "servers" / "journal", "a") as handle:
        handle.write('{"put": [{"id": "srv-0000000000aa", "na')  # killed mid-write
    orphan = cloud / "machines" / "srv-0000000000bb"
    orphan.mkdir()  # killed after its directory, before its line
    again = FakeWarehouse(str(cloud))  # the next run
    assert list(again.servers()) == [first["id"]]
    second = again.create("b", {"provisioning:name": "b", "provisioning:store": "s"},
                          "small", "fake-linux")
    assert not orphan.exists()
    reader = FakeWarehouse(str(cloud))
    assert sorted(reader.servers()) == sorted([first["id"], second["id"]])
    assert reader.find_tagged("b", "s")["id"] == second["id"]
    assert reader.leftovers() == []
    assert reader.counters()["creates"] == 2


def test_journal_is_compacted_once_most_of_it_is_destroyed_servers(tmp_path):
    cloud = tmp_path / "cloud"
    warehouse = FakeWarehouse(str(cloud))
    made = warehouse.create_many([(f"m{i}", {"provisioning:name": f"m{i}",
                                             "provisioning:store": ""}, "small", "fake-linux")
                                  for i in range(1200)])
    for server in made[:1100]:
        assert warehouse.delete(server["id"])
    warehouse.set_state(made[1150]["id"], "stopped")
    size = os.path.getsize(cloud / "servers" / "journal")
    reopened = FakeWarehouse(str(cloud))
    assert len(reopened.servers()) == 100  # opening compacts (the next writer's first look)
    assert os.path.getsize(cloud / "servers" / "journal") < size / 3
    assert reopened.get(made[1150]["id"])["state"] == "stopped"
    assert warehouse.get(made[1199]["id"]) is not None  # an earlier reader re-reads it all
    assert warehouse.counters() == {"creates": 1200, "destroys": 1100}


def test_a_run_killed_after_a_batch_create_is_finished_by_the_next(tmp_path):
    """kill -9 right after the fake cloud made a chunk's servers (before any was saved): the
    next ``up`` adopts them by their tags, creates the rest, and leaves nothing behind."""
    (tmp_path / "cluster.yml").write_text("driver: 'fake:./cloud'\nmachines:\n"
                                          "  web: {count: 150}\n")
    killed = converge("up", "--parallel", "1", cwd=tmp_path,
                      env={"PROVISIONING_FAULT": "after_create:crash"})
    assert killed.returncode == 86, killed.stderr
    warehouse = FakeWarehouse(str(tmp_path / "cloud"))
    assert warehouse.counters()["creates"] == 100  # the first chunk, unsaved
    again = converge("up", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("adopt server") == 100
    assert warehouse.counters()["creates"] == 150 and len(warehouse.servers()) == 150
    assert warehouse.leftovers() == []


def test_a_batch_create_saves_its_references_in_one_transaction_per_chunk(tmp_path):
    """The references of a chunk's servers are saved together (one SQLite transaction each
    chunk), not one transaction per machine before each machine's final save."""
    with Cluster.load(_fleet(tmp_path, 250), parallel=1) as fleet:
        seen: list[str] = []
        fleet.store._db.set_trace_callback(seen.append)
        assert fleet.up().ok
    transactions = "\n".join(seen).split("BEGIN IMMEDIATE")
    saves = [t.count("INSERT OR REPLACE INTO entries") for t in transactions]
    assert sorted(n for n in saves if n > 2) == [50, 100, 100], saves
    # each machine's last save writes its facts with it: one transaction, not two
    assert saves.count(2) == 250 and saves.count(1) == 0, saves


def test_a_reader_sees_every_compaction_even_one_of_the_same_size(tmp_path):
    """A long-lived reader (a run's warehouse) and another process compacting the journal
    between its looks: each compaction leaves a file of exactly the size the reader had read,
    with other contents. The reader must read the new file, never take it for the old one
    (ext4 hands a freed inode number to the next file made, so the number alone cannot tell
    them apart unless the reader keeps the old file open)."""
    journal = str(tmp_path / "journal")
    lock = str(tmp_path / "lock")
    reader, writer = ServerJournal(journal, lock), ServerJournal(journal, lock)
    with writer.locked():
        writer.append(put=[{"id": "srv-kept", "state": "state-00"}])
    for round_ in range(1, 13):
        reader.refresh()
        assert reader.state("srv-kept") == f"state-{2 * round_ - 2:02d}"
        for step in (2 * round_ - 1, 2 * round_):  # two compactions between the reader's looks:
            with writer.locked():  # the second file may get the first one's freed number
                writer.append(put=[{"id": f"srv-{i}", "state": "x"} for i in range(1000)])
                writer.append(delete=[f"srv-{i}" for i in range(1000)])
                writer.append(put=[{"id": "srv-kept", "state": f"state-{step:02d}"}])
                assert writer.compact()
    reader.refresh()
    assert reader.state("srv-kept") == "state-24"
    assert reader.ids() == ["srv-kept"]


def test_a_fake_destroy_stopped_between_its_halves_is_finished_by_the_next(tmp_path, monkeypatch):
    """The contract, not the fake cloud, places during_destroy: between forgetting the server
    and removing its files. The next destroy in the same process finishes the files (why-run
    only plans it), and the server is counted destroyed once."""
    driver = driver_for_url(f"fake:{tmp_path / 'cloud'}")
    store = MemoryStore()
    Provisioner(store, config=driver.config).allocate(driver, "web-1")
    server_id = store.get("machine", "web-1").reference["server_id"]
    monkeypatch.setenv("PROVISIONING_FAULT", "during_destroy:fail")
    with pytest.raises(Exception, match="injected failure at during_destroy"):
        Provisioner(store, config=driver.config).destroy("web-1", {}, driver)
    monkeypatch.delenv("PROVISIONING_FAULT")
    machines = tmp_path / "cloud" / "machines"
    assert os.listdir(machines) == [f".removing-{server_id}"]
    planner = RecordingActionHandler(why_run=True)
    Provisioner(store, config=driver.config, action_handler=planner).destroy("web-1", {}, driver)
    assert [a.description for a in planner.actions(performed=False)] == [
        f"finish destroying server {server_id}: remove the files of server {server_id}"]
    Provisioner(store, config=driver.config).destroy("web-1", {}, driver)
    assert os.listdir(machines) == [] and store.get("machine", "web-1") is None
    assert FakeWarehouse(str(tmp_path / "cloud")).counters()["destroys"] == 1


def test_destroying_a_fleet_removes_each_chunk_of_servers_in_one_request(tmp_path):
    """``destroy`` of N machines hands the fake cloud a held chunk (100) at a time: one journal
    line per chunk forgets its servers, not a line (and a lock) per server; every machine
    still has its own destroy action, and nothing is left."""
    with Cluster.load(_fleet(tmp_path, 250), parallel=4) as fleet:
        assert fleet.up().ok
    cloud = tmp_path / "fleet-250" / "cloud"
    made = len((cloud / "servers" / "journal").read_text().splitlines())
    events: list = []
    with Cluster.load(_fleet_again(tmp_path, 250), parallel=4,
                      listeners=[events.append]) as fleet:
        assert fleet.destroy().ok
        assert fleet.store.list("machine") == []
    lines = (cloud / "servers" / "journal").read_text().splitlines()[made:]
    assert sorted(len(json.loads(line)["del"]) for line in lines) == [50, 100, 100], lines
    actions = {e.machine: e.description for e in events if e.kind == "action" and e.performed}
    assert len(actions) == 250
    assert all(a.startswith("destroy server srv-") for a in actions.values())
    warehouse = FakeWarehouse(str(cloud))
    assert warehouse.counters() == {"creates": 250, "destroys": 250}
    assert warehouse.servers() == {} and warehouse.leftovers() == []
    assert os.listdir(cloud / "machines") == []


def test_a_fleet_destroy_killed_between_the_halves_of_its_batch_is_finished_by_the_next(
        tmp_path):
    """kill -9 at during_destroy of a batch destroy: the chunk's servers were all forgotten in
    one request, their files set aside, the state still lists every machine. The next
    ``destroy`` finishes them: no server, file or entry left, each counted destroyed once."""
    (tmp_path / "cluster.yml").write_text("driver: 'fake:./cloud'\nmachines:\n"
                                          "  web: {count: 30}\n")
    assert converge("up", cwd=tmp_path).returncode == 0
    killed = converge("destroy", cwd=tmp_path, env={"PROVISIONING_FAULT": "during_destroy:crash"})
    assert killed.returncode == 86, killed.stdout + killed.stderr
    machines = tmp_path / "cloud" / "machines"
    assert len(os.listdir(machines)) == 30
    assert all(entry.startswith(".removing-srv-") for entry in os.listdir(machines))
    with Cluster.load(str(tmp_path / "cluster.yml")) as fleet:
        assert len(fleet.store.list("machine")) == 30
    again = converge("destroy", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert os.listdir(machines) == []
    with Cluster.load(str(tmp_path / "cluster.yml")) as fleet:
        assert fleet.store.list("machine") == []
    warehouse = FakeWarehouse(str(tmp_path / "cloud"))
    assert warehouse.counters() == {"creates": 30, "destroys": 30}
    assert warehouse.servers() == {} and warehouse.leftovers() == []
