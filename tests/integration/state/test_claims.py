"""Work claims on PostgreSQL: each name claimed once under contention, claims of dead or silent
runners come back, runs are joined while fresh and restarted when finished or abandoned."""

from __future__ import annotations

import threading
import time

import pytest

from provisioning.cluster.claims import WorkSplit, run_key, supports_claims
from provisioning.store import open_store

pytestmark = pytest.mark.postgres

HOLDER = {"host": "h", "pid": 1, "command": "test", "since": "T0"}


def test_run_key_is_the_operation_and_the_set_of_names():
    assert run_key("up", ["b", "a"]) == run_key("up", ["a", "b"])
    assert run_key("up", ["a"]) != run_key("destroy", ["a"])
    assert run_key("up", ["a"]) != run_key("up", ["a", "b"])
    assert not supports_claims(open_store("memory:"))


def test_each_name_is_claimed_exactly_once_under_contention(postgres_url):
    names = [f"m-{i:03d}" for i in range(60)]
    claimed: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def runner(index: int) -> None:
        store = open_store(postgres_url)
        try:
            start.wait()
            with WorkSplit(store, "up", names, ttl=30, holder=dict(HOLDER, pid=index)) as split:
                while (name := split.claim()) is not None:
                    with lock:
                        claimed.append((index, name))
                    assert split.finish(name)
        finally:
            store.close()
    threads = [threading.Thread(target=runner, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(n for _, n in claimed) == names
    assert len({i for i, _ in claimed}) > 1  # the work was shared
    with open_store(postgres_url) as store:
        progress = WorkSplit(store, "up", names, ttl=30).progress()
    # the run was finished: joining again opened a new generation with everything pending
    assert {p["state"] for p in progress.values()} == {"pending"}


def test_claims_of_a_closed_session_come_back_at_once(postgres_url):
    names = ["a", "b"]
    dead, alive = open_store(postgres_url), open_store(postgres_url)
    try:
        gone = WorkSplit(dead, "up", names, ttl=60, holder=dict(HOLDER, host="gone"))
        assert gone.claim() == "a"
        mine = WorkSplit(alive, "up", names, ttl=60)
        assert mine.generation == gone.generation  # joined the open run
        assert mine.claim() == "b"
        assert mine.claim() is None  # "a" is claimed by a live runner
        assert alive.runs()[0]["claimed"]["a"]["host"] == "gone"
        gone.close()
        dead.close()  # its session ends: its claim is free without waiting for the lease
        assert mine.claim() == "a"
        assert mine.finish("a") and mine.finish("b")
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
        assert silent.claim_next(key, generation, "tok-silent", HOLDER, 1.0) == "x"
        assert other.claim_next(key, generation, "tok-other", HOLDER, 30) is None
        time.sleep(1.3)  # the session lives on (a lost network), but nobody renewed the claim
        assert other.claim_next(key, generation, "tok-other", HOLDER, 30) == "x"
        assert not silent.finish_claim(key, generation, "x", "tok-silent")  # it lost the claim
        assert other.finish_claim(key, generation, "x", "tok-other", error="boom")
        assert silent.run_progress(key, generation)["x"]["state"] == "failed"
    finally:
        silent.close()
        other.close()


def test_an_abandoned_run_is_not_joined(postgres_url):
    names = ["p", "q"]
    with open_store(postgres_url) as store:
        key = run_key("up", names)
        first = store.join_run(key, "up", names, fresh_within=30)
        assert store.join_run(key, "up", names, fresh_within=30) == first  # fresh: joined
        time.sleep(1.1)
        second = store.join_run(key, "up", names, fresh_within=1.0)  # stale: a new run
        assert second == first + 1
        assert [r["generation"] for r in store.runs()] == [second]
