"""Work claims on PostgreSQL: each name claimed once under contention, claims of dead or silent
runners come back, runs are joined while fresh and restarted when finished or abandoned."""

from __future__ import annotations

import os
import threading
import time

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.cluster.claims import WorkSplit, run_key, split_run, supports_claims
from provisioning.lifecycle import Provisioner
from provisioning.store import open_store

pytestmark = pytest.mark.postgres

HOLDER = {"host": "h", "pid": 1, "command": "test", "since": "T0"}


def end_session(store, url: str) -> None:
    """Close the store and wait until the server has ended its session (closing is
    asynchronous on the server: the session's advisory locks go when its backend exits)."""
    from provisioning.testing.postgres import query

    backend = store._conn.info.backend_pid
    store.close()
    deadline = time.monotonic() + 60
    while query(url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)):
        assert time.monotonic() < deadline, "the server never ended the closed session"
        time.sleep(0.01)


def test_run_key_is_the_operation_and_the_set_of_names():
    assert run_key("up", ["b", "a"]) == run_key("up", ["a", "b"])
    assert run_key("up", ["a"]) != run_key("destroy", ["a"])
    assert run_key("up", ["a"]) != run_key("up", ["a", "b"])
    assert not supports_claims(open_store("memory:"))


def test_each_name_is_claimed_exactly_once_under_contention(postgres_url):
    names = [f"m-{i:03d}" for i in range(60)]
    claimed: list[tuple[int, str]] = []
    lock = threading.Lock()
    start, first_claims = threading.Barrier(6), threading.Barrier(6)

    def runner(index: int) -> None:
        store = open_store(postgres_url)
        try:
            start.wait()
            with WorkSplit(store, "up", names, ttl=30, holder=dict(HOLDER, pid=index)) as split:
                batch = split.claim(3)
                first_claims.wait()  # every runner holds a batch before anyone finishes one
                while batch:
                    with lock:
                        claimed.extend((index, name) for name in batch)
                    assert split.finish({name: None for name in batch}) == set(batch)
                    batch = split.claim(3)
        finally:
            store.close()
    threads = [threading.Thread(target=runner, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(n for _, n in claimed) == names  # each name once: no batch overlapped
    assert {i for i, _ in claimed} == set(range(6))  # each runner's first batch was its own
    with open_store(postgres_url) as store:
        progress = WorkSplit(store, "up", names, ttl=30).progress()
    # the run was finished: joining again opened a new generation with everything pending
    assert {p["state"] for p in progress.values()} == {"pending"}


def test_a_batch_is_the_next_pending_names_in_order(postgres_url):
    names = [f"n-{i}" for i in range(7)]
    with open_store(postgres_url) as store:
        split = WorkSplit(store, "up", names, ttl=30)
        try:
            assert split.claim(3) == ["n-0", "n-1", "n-2"]
            assert split.claim(10) == ["n-3", "n-4", "n-5", "n-6"]
            assert split.claim(10) == []
            assert split.open_count() == 7
            assert split.finish({"n-0": None, "n-1": "ProvisioningError: boom"}) == {"n-0", "n-1"}
            states = {n: p["state"] for n, p in split.progress().items()}
            assert states["n-0"] == "done" and states["n-1"] == "failed"
            assert split.open_count() == 5
        finally:
            split.close()


def test_what_is_left_after_a_claim_is_read_from_a_window_not_the_whole_run(postgres_url):
    """A runner asks what is left after each claim; with a window it reads that many open rows
    of the run (the server's count of index rows read says so), whatever the run's size, and
    its counts are exact below the window."""
    from provisioning.store.postgres_sql import execute

    def rows_read(store, action) -> int:
        def reads() -> int:
            execute(store._conn, "SELECT pg_stat_force_next_flush()")  # this backend's counts
            return int(execute(store._conn, "SELECT idx_tup_read FROM pg_stat_user_indexes "
                                            "WHERE indexrelname = 'provisioning_work_open'"
                               ).fetchone()[0])
        before = reads()
        action()
        return reads() - before

    names = [f"m-{i:04d}" for i in range(2000)]
    with open_store(postgres_url) as store:
        split = WorkSplit(store, "up", names, ttl=60, holder=HOLDER)
        other = WorkSplit(store, "up", names, ttl=60, holder=dict(HOLDER, pid=2))
        try:
            assert split.claim(10) == names[:10] and other.claim(5) == names[10:15]
            assert split.finish({n: None for n in names[:4]}) == set(names[:4])
            left: list = []
            # the window's 40 rows and the index entries the claims and finishes left behind
            # until a vacuum (19), not the run's 2,000
            assert rows_read(store, lambda: left.append(split.left(upto=40))) < 100
            assert left[0] == (29, 40, 2)  # 6 + 5 claimed by two runners, then 29 pending
            assert split.left(upto=12) == (1, 12, 2)  # at least: the window is full
            assert rows_read(store, lambda: left.append(split.left())) >= 1996
            assert left[1] == (1985, 1996, 2)
            assert split.left(upto=5000) == left[1]  # below the window: exact
        finally:
            split.close()
            other.close()


def test_a_stopping_runner_gives_back_what_it_did_not_start(postgres_url):
    names = ["a", "b", "c"]
    quitting, staying = open_store(postgres_url), open_store(postgres_url)
    try:
        leaving = WorkSplit(quitting, "up", names, ttl=60, holder=dict(HOLDER, pid=1))
        other = WorkSplit(staying, "up", names, ttl=60, holder=dict(HOLDER, pid=2))
        assert leaving.claim(3) == names
        assert other.claim(3) == []  # all claimed by a live runner
        assert leaving.finish({"a": None}) == {"a"}
        leaving.release(["b", "c"])  # it stops before starting them
        assert other.claim(3) == ["b", "c"]  # at once, without waiting for a lease
        assert other.finish({"b": None, "c": None}) == {"b", "c"}
        assert other.open_count() == 0
        leaving.close()
        other.close()
    finally:
        quitting.close()
        staying.close()


def test_claims_of_a_closed_session_come_back_at_once(postgres_url):
    names = ["a", "b"]
    dead, alive = open_store(postgres_url), open_store(postgres_url)
    try:
        gone = WorkSplit(dead, "up", names, ttl=60, holder=dict(HOLDER, host="gone"))
        assert gone.claim() == ["a"]
        mine = WorkSplit(alive, "up", names, ttl=60)
        assert mine.generation == gone.generation  # joined the open run
        assert mine.claim() == ["b"]
        assert mine.claim() == []  # "a" is claimed by a live runner
        assert alive.runs()[0]["claimed"]["a"]["host"] == "gone"
        gone.close()
        end_session(dead, postgres_url)  # its claim is free without waiting for the lease
        assert mine.claim() == ["a"]
        assert mine.finish({"a": None, "b": None}) == {"a", "b"}
        assert {p["state"] for p in mine.progress().values()} == {"done"}
        mine.close()
    finally:
        alive.close()


def test_an_unrenewed_claim_expires_after_its_lease(postgres_url):
    names = ["x"]
    silent, other = open_store(postgres_url), open_store(postgres_url)
    try:
        key = run_key("up", names)
        generation = silent.join_run(key, "up", names, fresh_within=30)
        assert silent.claim_work(key, generation, "tok-silent", HOLDER, 3600, 1) == ["x"]
        assert other.claim_work(key, generation, "tok-other", HOLDER, 30, 1) == []
        # its lease runs out (the session lives on, as with a lost network): a last renewal
        # with no time left stands for an hour without renewals, without waiting for it
        silent.renew_claims(key, generation, "tok-silent", 0.0)
        assert other.claim_work(key, generation, "tok-other", HOLDER, 30, 1) == ["x"]
        assert silent.finish_work(key, generation, "tok-silent", {"x": None}) == set()  # lost
        assert other.finish_work(key, generation, "tok-other", {"x": "boom"}) == {"x"}
        assert silent.run_progress(key, generation)["x"]["state"] == "failed"
    finally:
        silent.close()
        other.close()


def test_an_abandoned_run_is_not_joined(postgres_url):
    names = ["p", "q"]
    with open_store(postgres_url) as store:
        key = run_key("up", names)
        first = store.join_run(key, "up", names, fresh_within=3600)
        assert store.join_run(key, "up", names, fresh_within=3600) == first  # fresh: joined
        time.sleep(1.1)
        second = store.join_run(key, "up", names, fresh_within=1.0)  # stale: a new run
        assert second == first + 1
        assert [r["generation"] for r in store.runs()] == [second]


def test_a_runner_claims_the_next_batch_while_its_workers_are_busy(postgres_url):
    """Two workers held in their first machines: the runner holds their two claims and the
    next batch of two, claimed ahead, and no more; every machine is then done once."""
    names = [f"m-{i}" for i in range(10)]
    started, go_on = threading.Semaphore(0), threading.Event()
    done: list[str] = []

    def call(request):
        started.release()
        assert go_on.wait(60), "the test never let the workers go on"
        done.append(request[1])
        return request[1]
    with open_store(postgres_url) as store, open_store(postgres_url) as watcher:
        provisioner = Provisioner(store, parallel=2)
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(results=split_run(
            provisioner, "up", [(None, n, {}) for n in names], call)))
        runner.start()
        try:
            for _ in range(2):
                assert started.acquire(timeout=60), "the workers never started"
            deadline = time.monotonic() + 60
            while sum(r["counts"].get("claimed", 0) for r in watcher.runs()) < 4:
                assert time.monotonic() < deadline, "the next batch was never claimed ahead"
                time.sleep(0.01)
            [run] = watcher.runs()
            assert run["counts"] == {"claimed": 4, "pending": 6}  # 2 running + 2 ahead
        finally:
            go_on.set()
            runner.join(60)
    assert sorted(done) == names  # each machine once
    assert all(o.ok for o in outcome["results"].values())


def test_the_runner_that_does_the_last_machines_sees_the_end_when_it_writes_them_back(
        postgres_url):
    """No other runner announces anything and the next look is an hour away: the runner
    learns that the run is over from writing back its own last outcomes (it used to wait for
    its next look: the poll or an announcement)."""
    names = ["m-0", "m-1", "m-2"]
    with open_store(postgres_url) as store:
        provisioner = Provisioner(store, parallel=2)
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(results=split_run(
            provisioner, "up", [(None, n, {}) for n in names], lambda r: r[1], poll=3600)),
            daemon=True)
        runner.start()
        runner.join(120)  # a bound for a hang, not a timing
        assert not runner.is_alive(), "the runner waited for its next look"
    assert sorted(outcome["results"]) == names
    assert all(o.ok and o.value == n for n, o in outcome["results"].items())


def test_a_waiting_runner_is_woken_when_another_finishes_work(postgres_url):
    names = ["a", "b"]
    worker, waiter = open_store(postgres_url), open_store(postgres_url)
    wakes: list[threading.Event] = [threading.Event(), threading.Event()]
    stop = threading.Event()
    try:
        split = WorkSplit(worker, "up", names, ttl=30)

        def wake() -> None:
            (wakes[0] if not wakes[0].is_set() else wakes[1]).set()
        listener = threading.Thread(target=waiter.watch_run,
                                    args=(split.key, split.generation, wake, stop))
        listener.start()
        assert wakes[0].wait(60)  # listening: the first wake comes right after LISTEN
        assert split.claim(2) == names
        assert not wakes[1].is_set()  # claiming announces nothing
        assert split.finish({"a": None}) == {"a"}
        assert wakes[1].wait(60)  # finishing work is announced to the waiting runner
        stop.set()
        listener.join(60)
        assert not listener.is_alive()
        split.close()
    finally:
        stop.set()
        worker.close()
        waiter.close()


def test_a_runner_reports_the_others_outcomes_while_its_last_machine_runs(postgres_url):
    """Another runner did m-0 and failed m-1; this runner's one machine is held until the test
    has seen the others' outcomes reported (they used to wait for the end of the run), and
    each is reported once."""
    names = ["m-0", "m-1", "m-2"]
    seen, go_on = threading.Event(), threading.Event()

    def call(request):
        assert go_on.wait(60), "the test never let the worker go on"
        return request[1]

    def watch(event) -> None:
        if event.kind == "result" and event.machine == "m-0":
            seen.set()
    with open_store(postgres_url) as store, open_store(postgres_url) as other:
        elsewhere = WorkSplit(other, "up", names, ttl=30, holder=HOLDER)
        assert elsewhere.claim(2) == ["m-0", "m-1"]
        assert elsewhere.finish({"m-0": None, "m-1": "ProvisioningError: it broke"}) == \
            {"m-0", "m-1"}
        handler = RecordingActionHandler(listeners=[watch])
        provisioner = Provisioner(store, parallel=1, action_handler=handler)
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(results=split_run(
            provisioner, "up", [(None, n, {}) for n in names], call, poll=3600)), daemon=True)
        runner.start()
        try:
            assert seen.wait(60), "the others' outcomes were held back until the run was over"
        finally:
            go_on.set()
            runner.join(120)
            elsewhere.close()
    assert not runner.is_alive()
    results = outcome["results"]
    assert results["m-2"].ok and results["m-2"].value == "m-2"
    assert results["m-0"].ok
    assert "failed in another runner (h pid 1): it broke" in str(results["m-1"].error)
    others = [e.machine for e in handler.events if e.kind == "result"]
    assert others == ["m-0"]  # once (m-1 fails in the summary; the worker here reports none)


def round_trips(store, tmp_path, action) -> int:
    """How many times the store's connection waited for the server while ``action`` ran (the
    client's messages, read from libpq's protocol trace, up to each answer)."""
    import ctypes

    # the libpq psycopg2 loaded (its wheel bundles one): its trace, on the store's connection
    with open("/proc/self/maps") as maps:
        loaded = {line.split()[-1] for line in maps if "/libpq" in line}
    assert len(loaded) == 1, loaded
    libpq, libc = ctypes.CDLL(loaded.pop()), ctypes.CDLL(None)
    libc.fdopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libpq.PQtrace.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    libpq.PQsetTraceFlags.argtypes = [ctypes.c_void_p, ctypes.c_int]
    libpq.PQuntrace.argtypes = [ctypes.c_void_p]
    pgconn = ctypes.c_void_p(store._conn.pgconn_ptr)
    path = tmp_path / "trace"
    trace = libc.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), b"w")
    libpq.PQtrace(pgconn, trace)
    libpq.PQsetTraceFlags(pgconn, 1)  # PQTRACE_SUPPRESS_TIMESTAMPS
    try:
        action()
    finally:
        libpq.PQuntrace(pgconn)
        libc.fclose(trace)
    # a message's first line names its side (F: client, B: server); a query's text may go on
    sides = [line[0] for line in path.read_text().splitlines() if line[:2] in ("F\t", "B\t")]
    return sum(1 for i, side in enumerate(sides) if side == "B" and (i == 0 or sides[i - 1] == "F"))


def test_writing_back_a_batch_and_locking_one_take_one_round_trip_each(postgres_url, tmp_path):
    """A runner writes back each batch's outcomes (and the run's end, and its announcement) in
    one round trip, and locks a batch in one: they were 6 and 3 (a transaction's BEGIN and
    COMMIT, and a statement each)."""
    with open_store(postgres_url) as store:
        # leases of an hour: no heartbeat shares the connection while it is traced
        split = WorkSplit(store, "up", ["a", "b", "c"], ttl=3600, holder=HOLDER)
        try:
            assert split.claim(3) == ["a", "b", "c"]
            locked: dict = {}
            assert round_trips(store, tmp_path, lambda: locked.update(
                store.lock_many(["a", "b", "c"], 3600)[0])) == 1
            assert sorted(locked) == ["a", "b", "c"]
            for lock in locked.values():
                lock.release()
            kept: set = set()
            assert round_trips(store, tmp_path, lambda: kept.update(
                split.finish({"a": None, "b": "ProvisioningError: no", "c": None}))) == 1
            assert kept == {"a", "b", "c"}
            assert {n: p["state"] for n, p in split.progress().items()} == \
                {"a": "done", "b": "failed", "c": "done"}
            assert split.left().open == 0
            assert store.runs() == []  # the write-back also marked the run finished
        finally:
            split.close()


def test_a_large_runs_rows_refresh_the_planners_figures_for_the_work_table(postgres_url):
    """Planned with the figures of a near-empty table, each claim scanned every row of the run
    (a 10,000-machine ``up`` spent half its time there); a run of many machines refreshes them
    when its rows are made, a small one does not bother."""
    from provisioning.testing.postgres import query

    def planned_rows() -> float:
        return float(query(postgres_url, "SELECT reltuples FROM pg_class WHERE relname = "
                                         "'provisioning_work'")[0][0])

    store = open_store(postgres_url)
    try:
        store.join_run("small", "up", [f"s-{i}" for i in range(10)], 60.0)
        assert planned_rows() < 10  # -1: never counted (autovacuum aside: it waits a minute)
        store.join_run("large", "up", [f"m-{i:04d}" for i in range(1000)], 60.0)
        assert planned_rows() >= 1000
    finally:
        store.close()
