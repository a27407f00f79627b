"""One conformance class, run against every store: memory, SQLite and PostgreSQL.

Cross-process behaviour (crash mid-save, concurrent writers, a killed lock holder) runs in real
separate processes for the stores that outlive a process; the memory store, which lives in one
process, runs the same checks with threads and an injected in-process failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from provisioning.errors import ConfigError, ProviderError, StateConflict, StateError, StateLocked
from provisioning.faults import CRASH_EXIT_CODE, FAULT_ENV
from provisioning.spec import MachineSpec
from provisioning.store import open_store
from provisioning.store.base import ManagedEntryStore
from provisioning.store.memory import MemoryStore

WORKER = os.path.join(os.path.dirname(__file__), "store_worker.py")

UNICODE_NAMES = ["wéb-1", "сервер-2", "机器-٣", "🚀-rocket", "a b/c:d", "e\u0301-combining",
                 "Z-upper", "naïve'quote\"double"]


def worker(url: str, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    full = dict(os.environ, STORE_URL=url, **(env or {}))
    return subprocess.Popen([sys.executable, WORKER, *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


class StoreConformance:
    """Subclasses provide ``url`` (a fixture) and may set ``shared = False`` (memory)."""

    #: the store outlives a process and is shared between processes
    shared = True

    @pytest.fixture
    def store(self, url: str):
        store = self.open(url)
        yield store
        store.close()

    def open(self, url: str) -> ManagedEntryStore:
        return open_store(url)

    # -- entries -----------------------------------------------------------------------------
    def test_save_get_list_delete(self, store):
        assert store.get("machine", "web-1") is None
        spec = MachineSpec("web-1", {"driver_url": "fake:/x", "id": 7}, store=store)
        spec.last_action = "allocate"
        spec.save()
        MachineSpec("web-2", {"driver_url": "fake:/x", "id": 8}, store=store).save()
        got = store.get("machine", "web-1")
        assert isinstance(got, MachineSpec)
        assert (got.reference, got.last_action, got.version) == ({"driver_url": "fake:/x",
                                                                  "id": 7}, "allocate", 1)
        assert [e.name for e in store.list("machine")] == ["web-1", "web-2"]
        assert store.list("image") == []
        got.reference["id"] = 9
        got.save()
        assert store.get("machine", "web-1").reference["id"] == 9
        assert store.get("machine", "web-1").version == 2
        store.delete("machine", "web-1")
        store.delete("machine", "never-saved")  # deleting a missing entry is fine
        assert store.get("machine", "web-1") is None
        assert [e.name for e in store.list("machine")] == ["web-2"]

    def test_stale_save_is_a_conflict(self, store):
        MachineSpec("a", {"driver_url": "fake:/x", "n": 0}, store=store).save()
        first, second = store.get("machine", "a"), store.get("machine", "a")
        first.reference["n"] = 1
        first.save()
        second.reference["n"] = 2
        with pytest.raises(StateConflict, match="changed since it was read"):
            second.save()
        fresh = store.get("machine", "a")
        assert fresh.reference["n"] == 1
        fresh.reference["n"] = 2
        fresh.save()
        assert store.get("machine", "a").version == 3
        new_twice = MachineSpec("b", {"driver_url": "fake:/x"}, store=store)
        MachineSpec("b", {"driver_url": "fake:/x"}, store=store).save()
        with pytest.raises(StateConflict):
            new_twice.save()

    def test_save_with_release_frees_the_lock_also_when_the_save_is_refused(self, store, url):
        lock = store.lock("a", ttl=30)
        spec = MachineSpec("a", {"driver_url": "fake:", "n": 0}, store=store)
        spec.save(release=lock)  # a new entry
        assert spec.version == 1 and "a" not in store.locks()
        lock = store.lock("a", ttl=30)
        spec.reference["n"] = 1
        spec.save(release=lock)  # over the version it was read at
        assert spec.version == 2 and "a" not in store.locks()
        stale = MachineSpec("a", {"driver_url": "fake:"}, store=store)  # version 0: stale
        lock = store.lock("a", ttl=30)
        with pytest.raises(StateConflict):
            stale.save(release=lock)
        assert "a" not in store.locks()
        assert store.get("machine", "a").reference["n"] == 1
        other = self.open(url) if self.shared else store  # free for anyone at once
        try:
            other.lock("a", ttl=30).release()
        finally:
            if other is not store:
                other.close()

    def test_an_entry_saved_with_another_writes_it_over_any_version(self, store):
        """``save_with``: a machine's facts go with its last save under its lock, over
        whichever version the store holds (a destroy may have forgotten them meanwhile)."""
        facts = MachineSpec("a", {"driver_url": "fake:", "facts": {"os": "old"}}, kind="facts",
                            store=store)
        facts.save()
        facts.reference["facts"]["os"] = "older"
        facts.save()  # version 2 in the store
        lock = store.lock("a", ttl=30)
        spec = MachineSpec("a", {"driver_url": "fake:", "n": 1}, store=store)
        stale = MachineSpec("a", {"driver_url": "fake:", "facts": {"os": "new"}}, kind="facts",
                            store=store)  # read as version 0
        spec.save_with(stale)
        assert not spec.unchanged()
        spec.save(release=lock)
        assert (spec.version, stale.version) == (1, 3) and "a" not in store.locks()
        assert store.get("facts", "a").reference["facts"] == {"os": "new"}
        assert store.get("machine", "a").reference["n"] == 1
        again = MachineSpec("a", {"driver_url": "fake:"}, store=store)  # stale: version 0
        again.save_with(MachineSpec("a", {"driver_url": "fake:"}, kind="facts", store=store))
        lock = store.lock("a", ttl=30)
        with pytest.raises(StateConflict):  # the entry's own error, its lock freed anyway
            again.save(release=lock)
        assert "a" not in store.locks() and store.get("machine", "a").reference["n"] == 1

    def test_an_entry_refused_by_its_checks_does_not_stop_the_save_it_goes_with(self, store):
        lock = store.lock("a", ttl=30)
        spec = MachineSpec("a", {"driver_url": "fake:", "n": 1}, store=store)
        spec.save_with(MachineSpec("a", {"driver_url": "fake:", "token": "t0p"}, kind="facts",
                                   store=store))
        with pytest.raises(ConfigError, match="secret"):
            spec.save(release=lock)
        assert store.get("machine", "a").reference["n"] == 1 and spec.version == 1
        assert store.get("facts", "a") is None and "a" not in store.locks()

    def test_saves_of_many_threads_at_once_keep_their_own_outcomes(self, store):
        """Saves sent together (one transaction or statement for many threads' saves where
        the store groups them) each keep their own version check and lock release."""
        for i in range(12):
            MachineSpec(f"m{i}", {"driver_url": "fake:", "n": 0}, store=store).save()
        specs = [store.get("machine", f"m{i}") for i in range(12)]
        for spec in specs[::3]:  # every third one goes stale: another writer saved it since
            store.get("machine", spec.name).save()
        locks = [store.lock(spec.name, ttl=30) for spec in specs]
        barrier = threading.Barrier(len(specs))
        outcomes: dict[str, BaseException | None] = {}

        def save(spec: MachineSpec, lock) -> None:
            spec.reference["n"] = 1
            barrier.wait()
            try:
                spec.save(release=lock)
                outcomes[spec.name] = None
            except BaseException as exc:
                outcomes[spec.name] = exc
        threads = [threading.Thread(target=save, args=pair) for pair in zip(specs, locks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        refused = {name for name, exc in outcomes.items() if exc is not None}
        assert refused == {f"m{i}" for i in range(0, 12, 3)}
        assert all(isinstance(outcomes[name], StateConflict) for name in refused)
        for i in range(12):
            saved = store.get("machine", f"m{i}")
            assert (saved.reference["n"], saved.version) == ((0, 2) if i % 3 == 0 else (1, 2))
        assert store.locks() == {}

    def test_unicode_names(self, store):
        for index, name in enumerate(UNICODE_NAMES):
            MachineSpec(name, {"driver_url": "fake:/x", "label": name * 2, "i": index},
                        store=store).save()
        assert [e.name for e in store.list("machine")] == sorted(UNICODE_NAMES)
        for index, name in enumerate(UNICODE_NAMES):
            got = store.get("machine", name)
            assert got.reference == {"driver_url": "fake:/x", "label": name * 2, "i": index}
        with store.lock(UNICODE_NAMES[3], 10):
            assert UNICODE_NAMES[3] in store.locks()

    def test_large_reference(self, store):
        big = {"driver_url": "fake:/x", "blob": "x" * 4_000_000, "lines": ["ä€🚀"] * 50_000,
               "nested": {"deep": [{"i": i, "s": str(i) * 10} for i in range(5_000)]},
               "control": "tab\tnewline\nbell\x07nul\x00"}
        MachineSpec("big", big, store=store).save()
        assert store.get("machine", "big").reference == big
        assert store.list("machine")[0].reference == big

    def test_store_id_is_stable(self, url, store):
        first = store.store_id
        assert len(first) >= 8
        if self.shared:
            other = self.open(url)
            try:
                assert other.store_id == first
            finally:
                other.close()

    # -- locks -------------------------------------------------------------------------------
    def test_lock_names_its_holder(self, store, url):
        other = self.open(url) if self.shared else store
        try:
            with store.lock("web-1", 10, holder={"host": "ci-7", "pid": 4242,
                                                 "command": "converge up", "since": "T0"}):
                with pytest.raises(StateLocked) as info:
                    other.lock("web-1", 10)
                err = info.value
                assert err.holder["host"] == "ci-7" and err.holder["pid"] == 4242
                for part in ("ci-7", "4242", "converge up", "T0"):
                    assert part in str(err)
                assert other.locks()["web-1"]["command"] == "converge up"
                other.lock("web-2", 10).release()  # other names stay free
            other.lock("web-1", 10).release()
            assert "web-1" not in store.locks()
        finally:
            if other is not store:
                other.close()

    def test_many_names_locked_and_read_at_once(self, store, url):
        other = self.open(url) if self.shared else store
        try:
            for name in ("b", "d"):
                entry = store.get_or_new("machine", name)
                entry.reference = {"driver_url": "fake:x", "id": name}
                store.save(entry)
            with other.lock("c", 10, holder={"host": "ci-7", "pid": 4242}):
                locks, refused = store.lock_many(["a", "b", "c", "d"], 10)
                assert sorted(locks) == ["a", "b", "d"] and list(refused) == ["c"]
                assert isinstance(refused["c"], StateLocked) and "ci-7" in str(refused["c"])
                assert set(other.locks()) == {"a", "b", "c", "d"}
                entries = store.get_many("machine", ["a", "b", "d", "zz"])
                assert [entries[n].reference.get("id") for n in ("a", "b", "d", "zz")] == \
                    [None, "b", "d", None]
                assert entries["b"].version == 1 and entries["zz"].version == 0
                for lock in locks.values():
                    lock.release()
            assert other.locks() == {}
        finally:
            if other is not store:
                other.close()

    def test_lock_wait_gets_it_when_released(self, store):
        """A waiter refused once gets the lock when its holder releases it (ordered by
        events: the release happens after the waiter's first refused attempt)."""
        held = store.lock("w", 10)
        refused, order = threading.Event(), []
        attempt = store._try_acquire

        def observed(name, token, holder, ttl):  # the real attempt, reported to the test
            current = attempt(name, token, holder, ttl)
            if current is not None:
                refused.set()
            return current

        def release_after_a_refusal() -> None:
            assert refused.wait(60)
            order.append("released")
            held.release()
        store._try_acquire = observed
        releaser = threading.Thread(target=release_after_a_refusal)
        releaser.start()
        try:
            with store.lock("w", 10, wait=120, poll=0.01):
                order.append("got it")
        finally:
            del store._try_acquire
            releaser.join(60)
        assert order == ["released", "got it"]

    def test_unrenewed_lease_expires_after_its_ttl(self, store):
        holder = {"host": "elsewhere", "pid": 1, "command": "gone", "since": "T0"}
        assert store._try_acquire("x", "tok", holder, 3600) is None  # no heartbeat: lost runner
        with pytest.raises(StateLocked):
            store.lock("x", 10)
        store._renew("x", "tok", 0.0)  # its last renewal had no time left: the lease is over
        store.lock("x", 10).release()

    def test_heartbeat_keeps_a_short_lease(self, store):
        """Past its first TTL, a lease the heartbeat renews is still held: checked by an
        intruder right after each renewal, until three renewals spanning more than a TTL."""
        ttl, seen = 2.0, []
        renew = store._renew

        def observed(name, token, ttl_):  # the real renewal, then an intruder's try
            renew(name, token, ttl_)
            if name == "hb":
                seen.append(store._try_acquire("hb", "intruder", {"host": "elsewhere"}, 5))
        store._renew = observed
        try:
            with store.lock("hb", ttl):
                started = time.monotonic()
                deadline = started + 120
                while len(seen) < 3 or time.monotonic() - started <= ttl:
                    assert time.monotonic() < deadline, "the heartbeat never renewed the lease"
                    time.sleep(0.05)
        finally:
            del store._renew
        assert seen and all(holder is not None for holder in seen)  # never free for an intruder

    # -- across processes --------------------------------------------------------------------
    def test_crash_mid_save_keeps_the_previous_version(self, url, store):
        MachineSpec("m", {"driver_url": "fake:/w", "tag": "old"}, store=store).save()
        if not self.shared:
            spec = store.get("machine", "m")
            spec.reference = {"driver_url": "fake:/w", "tag": "new", "blob": "n" * 100_000}
            os.environ[FAULT_ENV] = "mid_save:fail"
            try:
                with pytest.raises(ProviderError):
                    spec.save()
            finally:
                del os.environ[FAULT_ENV]
        else:
            proc = worker(url, "save", "m", "new", "500000", env={FAULT_ENV: "mid_save:crash"})
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == CRASH_EXIT_CODE, err
            assert "saved" not in out
        after = self.open(url) if self.shared else store
        got = after.get("machine", "m")
        assert got.reference == {"driver_url": "fake:/w", "tag": "old"} and got.version == 1
        got.reference["tag"] = "next"
        got.save()  # the store is usable after the crash
        assert after.get("machine", "m").version == 2
        if after is not store:
            after.close()

    def test_concurrent_updates_lose_nothing(self, url, store):
        MachineSpec("counter", {"driver_url": "fake:/w", "count": 0}, store=store).save()
        workers, each = 4, 15
        if self.shared:
            procs = [worker(url, "increment", "counter", str(each)) for _ in range(workers)]
            outs = [p.communicate(timeout=120) for p in procs]
            assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
            conflicts = sum(int(o[0].split()[1]) for o in outs)
        else:
            conflicts_seen = []

            def bump() -> None:
                n = 0
                for _ in range(each):
                    while True:
                        spec = store.get("machine", "counter")
                        spec.reference["count"] += 1
                        time.sleep(0.001)  # widen the race window
                        try:
                            spec.save()
                            break
                        except StateConflict:
                            n += 1
                conflicts_seen.append(n)
            threads = [threading.Thread(target=bump) for _ in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            conflicts = sum(conflicts_seen)
        got = store.get("machine", "counter")
        assert got.reference["count"] == workers * each
        assert got.version == workers * each + 1
        assert conflicts >= 0

    def test_lock_of_a_killed_holder_frees_within_its_lease(self, url, store):
        """A holder on another host (so no local PID check helps) killed with SIGKILL: the lock
        frees by itself within the lease TTL."""
        ttl = 4.0
        if self.shared:
            proc = worker(url, "hold-lock", "job", str(ttl), "another-host")
            assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
            with pytest.raises(StateLocked, match="another-host"):
                store.lock("job", ttl)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        else:
            store._try_acquire("job", "t", {"host": "another-host", "pid": 1}, ttl)
        # the wait is a generous guard; a lease that never freed would raise StateLocked
        with store.lock("job", ttl, wait=ttl + 120):
            assert store.locks()["job"].get("host") != "another-host"
        if self.shared:
            proc.stdout.close()
            proc.stderr.close()

    def test_lock_of_a_killed_local_process_frees_at_once(self, url, store):
        host = socket.gethostname()
        if self.shared:
            proc = worker(url, "hold-lock", "local", "3600", host)
            assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()
        else:
            done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True)
            store._try_acquire("local", "t", {"host": host, "pid": int(done.stdout)}, 3600)
        # an hour's lease: only recognising the dead holder frees it within the wait
        with store.lock("local", 60, wait=120):
            assert store.locks()["local"]["pid"] == os.getpid()


class TestMemoryStore(StoreConformance):
    shared = False

    @pytest.fixture
    def url(self):
        return "memory:"

    @pytest.fixture
    def store(self, url):
        self._store = MemoryStore()
        yield self._store

    def open(self, url):
        return self._store


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def url(self, tmp_path):
        return str(tmp_path / "state.db")


@pytest.mark.postgres
class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def url(self, postgres_url):
        return postgres_url

    @staticmethod
    def _queued(store, saves, writes: int | None = None) -> list[BaseException | None]:
        """Run ``saves`` (callables) in threads while this thread holds the store's connection,
        until their ``writes`` (one each by default) wait in its queue; then let them all go,
        so they are sent together."""
        writes = writes or len(saves)
        outcomes: list[BaseException | None] = [None] * len(saves)

        def run(index: int) -> None:
            try:
                saves[index]()
            except BaseException as exc:
                outcomes[index] = exc
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(saves))]
        deadline = time.monotonic() + 60  # a bound for a stuck test, not a timing
        with store._mutex:
            for thread in threads:  # one at a time: queued in this order
                before = len(store._pending)
                thread.start()
                while len(store._pending) == before and time.monotonic() < deadline:
                    time.sleep(0.005)
            assert len(store._pending) == writes
        for thread in threads:
            thread.join()
        return outcomes

    def test_saves_waiting_for_the_connection_go_in_one_statement(self, store, url):
        """Workers finishing together: their saves (new entries, updates, lock releases, an
        entry written with another) share one statement, one transaction: one ``xmin``."""
        from provisioning.testing.postgres import query
        MachineSpec("old", {"driver_url": "fake:"}, store=store).save()
        old = store.get("machine", "old")
        old.reference["n"] = 1
        lock = store.lock("old", ttl=30)
        news = [MachineSpec(f"new-{i}", {"driver_url": "fake:", "i": i}, store=store)
                for i in range(5)]
        news[0].save_with(MachineSpec("new-0", {"driver_url": "fake:"}, kind="facts",
                                      store=store))
        outcomes = self._queued(store, [lambda: old.save(release=lock)] +
                                [spec.save for spec in news], writes=7)
        assert outcomes == [None] * 6 and store.locks() == {}
        rows = query(url, "SELECT DISTINCT xmin::text FROM provisioning_entries WHERE "
                          "name <> 'old' OR kind = 'machine'")
        assert len(rows) == 1, rows
        assert store.get("machine", "old").version == 2
        assert [store.get("machine", f"new-{i}").reference["i"] for i in range(5)] == \
            list(range(5))

    def test_a_save_the_server_refuses_fails_alone_in_a_shared_statement(self, store):
        """Text PostgreSQL cannot take (a lone surrogate) in one save of a shared statement:
        that save fails with a StateError naming it; the others are saved."""
        bad = MachineSpec("bad", {"driver_url": "fake:", "x": "\ud800"}, store=store)
        goods = [MachineSpec(f"good-{i}", {"driver_url": "fake:"}, store=store)
                 for i in range(3)]
        outcomes = self._queued(store, [bad.save] + [spec.save for spec in goods])
        assert isinstance(outcomes[0], StateError) and "'bad'" in str(outcomes[0])
        assert outcomes[1:] == [None] * 3
        assert store.get("machine", "bad") is None
        assert all(store.get("machine", spec.name) is not None for spec in goods)

    def test_the_same_entry_twice_in_the_queue_is_saved_in_order(self, store):
        first = MachineSpec("twice", {"driver_url": "fake:", "n": 1}, store=store)
        second = MachineSpec("twice", {"driver_url": "fake:", "n": 2}, store=store)
        outcomes = self._queued(store, [first.save, second.save])
        assert outcomes[0] is None and isinstance(outcomes[1], StateConflict)
        assert store.get("machine", "twice").reference["n"] == 1
