"""The SQLite and memory stores: entries, versions, locks (also across processes)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from provisioning.errors import ConfigError, StateConflict, StateLocked
from provisioning.spec import MachineSpec
from provisioning.store import mask_url, open_store
from provisioning.store.memory import MemoryStore
from provisioning.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    s = SQLiteStore(tmp_path / "state.db") if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


def test_save_get_list_delete(store):
    spec = MachineSpec("web-1", {"driver_url": "fake:/x", "id": "é"}, store=store)
    spec.save()
    got = store.get("machine", "web-1")
    assert isinstance(got, MachineSpec) and got.reference == spec.reference and got.version == 1
    assert [e.name for e in store.list("machine")] == ["web-1"]
    store.delete("machine", "web-1")
    assert store.get("machine", "web-1") is None


def test_stale_save_is_a_conflict(store):
    MachineSpec("a", {"driver_url": "fake:"}, store=store).save()
    one, two = store.get("machine", "a"), store.get("machine", "a")
    one.reference["x"] = 1
    one.save()
    two.reference["x"] = 2
    with pytest.raises(StateConflict):
        two.save()


def test_reference_needs_driver_url_and_no_secrets(store):
    with pytest.raises(ConfigError, match="driver_url"):
        MachineSpec("a", {"id": 1}, store=store).save()
    with pytest.raises(ConfigError, match="secret"):
        MachineSpec("a", {"driver_url": "x:", "transport": {"password": "p"}}, store=store).save()


def test_lock_names_holder_and_is_free_after_release(store):
    with store.lock("web-1", ttl=30):
        with pytest.raises(StateLocked) as info:
            store.lock("web-1", ttl=30)
        assert info.value.holder["pid"] == os.getpid()
        assert str(os.getpid()) in str(info.value)
    with store.lock("web-1", ttl=30):
        pass


def test_a_lease_without_heartbeat_expires(store):
    """A frozen runner (no more heartbeats) loses its lease once the TTL has passed; that the
    heartbeat keeps a lease is ``test_store_conformance``'s ``test_heartbeat_keeps_a_short_lease``."""
    held = store.lock("web-2", ttl=0.3)
    held._stop.set()  # simulate a frozen runner: no more heartbeats
    deadline = time.monotonic() + 60  # a guard only: the lease frees after 0.3 s
    while True:
        try:
            store.lock("web-2", ttl=30).release()
            break
        except StateLocked:
            assert time.monotonic() < deadline, "the lease never expired"
            time.sleep(0.05)


def test_sqlite_file_is_private_and_wal(tmp_path):
    store = SQLiteStore(tmp_path / "sub" / "state.db")
    MachineSpec("a", {"driver_url": "x:"}, store=store).save()
    assert stat.S_IMODE(os.stat(tmp_path / "sub" / "state.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "sub").st_mode) == 0o700
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_lock_of_a_killed_process_frees_at_once(tmp_path):
    path = tmp_path / "state.db"
    code = textwrap.dedent(f"""
        import sys, time
        from provisioning.store.sqlite import SQLiteStore
        s = SQLiteStore({str(path)!r}); s.lock("web-1", ttl=600)
        print("locked", flush=True); time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    store = SQLiteStore(path)
    with pytest.raises(StateLocked) as info:
        store.lock("web-1")
    assert info.value.holder["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with store.lock("web-1", wait=60):  # a guard: a dead holder's lock frees at once
        pass
    store.close()


def test_store_urls_and_masking(tmp_path):
    assert isinstance(open_store("memory:"), MemoryStore)
    assert isinstance(open_store(str(tmp_path / "s.db")), SQLiteStore)
    assert isinstance(open_store(None, base_dir=str(tmp_path)), SQLiteStore)
    assert os.path.exists(tmp_path / ".provisioning" / "state.db")
    with pytest.raises(ConfigError, match="unknown state URL"):
        open_store("redis://u:pw@h/0")
    assert mask_url("postgresql://bob:hunter2@db/x") == "postgresql://bob:***@db/x"


def test_store_id_is_stable(tmp_path):
    first = SQLiteStore(tmp_path / "s.db").store_id
    assert SQLiteStore(tmp_path / "s.db").store_id == first and len(first) == 16


def test_sqlite_errors_become_state_errors_naming_the_file(tmp_path):
    from provisioning.errors import StateError

    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    MachineSpec("a", {"driver_url": "x:"}, store=store).save()
    store._db.execute("DROP TABLE entries")  # a damaged file, as a crash of another tool leaves
    with pytest.raises(StateError) as info:
        store.get("machine", "a")
    assert str(path) in str(info.value) and isinstance(info.value.__cause__, Exception)
    with pytest.raises(StateError):
        MachineSpec("b", {"driver_url": "x:"}, store=store).save()
    store.close()
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    from provisioning.errors import ConfigError

    with pytest.raises(ConfigError, match="junk.db"):  # the user's input: refused, left unchanged
        SQLiteStore(tmp_path / "junk.db")
    assert (tmp_path / "junk.db").read_bytes() == b"this is not sqlite" * 100


def test_many_held_locks_share_one_heartbeat_thread_and_stay_alive(tmp_path):
    import threading

    store = SQLiteStore(tmp_path / "state.db")
    renewed: dict[str, int] = {}
    intruder: list[object] = []
    renew = store._renew

    def observed(name, token, ttl):  # the real renewal, counted; m199 tried right after
        renew(name, token, ttl)
        renewed[name] = renewed.get(name, 0) + 1
        if name == "m199":
            intruder.append(store._try_acquire(name, "intruder", {"host": "elsewhere"}, 5))
    store._renew = observed
    before = threading.active_count()
    held = [store.lock(f"m{i}", ttl=1.0) for i in range(200)]
    assert threading.active_count() <= before + 1
    deadline = time.monotonic() + 120  # a guard: renewals come every third of a TTL
    while len(renewed) < 200 or min(renewed.values()) < 4:  # past one TTL for every lease
        assert time.monotonic() < deadline, f"only {len(renewed)} leases renewed"
        time.sleep(0.05)
    assert threading.active_count() <= before + 1
    assert intruder and all(holder is not None for holder in intruder)  # never free
    for lock in held:
        lock.release()
    with store.lock("m0"):
        pass
    store.close()


def test_writes_of_many_threads_share_one_transaction_each_with_its_own_outcome(tmp_path):
    """Group commit: while the connection is busy, the writes other threads start wait in a
    queue; the next one to get the connection commits them all in one transaction, each in its
    own savepoint (a stale one fails alone) and each returning only once committed."""
    import threading

    store = SQLiteStore(tmp_path / "state.db")
    stale = MachineSpec("stale", {"driver_url": "fake:"}, store=store)
    stale.save()
    stale.version = 0  # as if read before the save above
    specs = [MachineSpec(f"m{i}", {"driver_url": "fake:"}, store=store) for i in range(8)]
    errors: dict[str, BaseException] = {}

    def save(spec):
        try:
            spec.save()
        except StateConflict as exc:
            errors[spec.name] = exc

    commits: list[str] = []
    store._db.set_trace_callback(lambda s: commits.append(s) if s == "COMMIT" else None)
    threads = [threading.Thread(target=save, args=(s,)) for s in specs + [stale]]
    with store._mutex:  # the connection is busy: every write queues up behind it
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60  # a bound for a broken store, not a timing
        while len(store._pending) < len(threads) and time.monotonic() < deadline:
            time.sleep(0.001)  # until each thread's write is queued
        assert len(store._pending) == len(threads)
    for thread in threads:
        thread.join()
    assert len(commits) == 1
    assert list(errors) == ["stale"]
    assert [store.get("machine", s.name).version for s in specs] == [1] * 8
    assert all(s.version == 1 for s in specs)
    store.close()


def test_save_many_saves_each_with_its_own_version_check(store):
    MachineSpec("taken", {"driver_url": "fake:"}, store=store).save()
    fresh = [MachineSpec(f"m{i}", {"driver_url": "fake:"}, store=store) for i in range(5)]
    stale = MachineSpec("taken", {"driver_url": "fake:", "x": 1}, store=store)  # version 0
    with pytest.raises(StateConflict):
        store.save_many(fresh + [stale])
    assert [store.get("machine", s.name).version for s in fresh] == [1] * 5
    assert all(s.version == 1 for s in fresh)
    assert store.get("machine", "taken").reference == {"driver_url": "fake:"}
    store.save_many(fresh)  # at the versions just saved
    assert [store.get("machine", s.name).version for s in fresh] == [2] * 5


def test_the_sqlite_store_is_still_importable_from_the_package_and_loaded_on_demand():
    """``provisioning.store`` loads the SQLite store only for a SQLite state (a runner on
    PostgreSQL never loads ``sqlite3``); ``from provisioning.store import SQLiteStore``, which
    worked before, still does, loading it then."""
    code = ("import sys\nimport provisioning.store\nprint('sqlite3' in sys.modules)\n"
            "from provisioning.store import SQLiteStore, inspect_state_file\n"
            "print(SQLiteStore.__name__, callable(inspect_state_file), 'sqlite3' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["False", "SQLiteStore True True"]
