"""Many processes opening one brand-new SQLite state file at once all succeed: SQLite answers
"database is locked" at once (without waiting) to all but one of those switching the new file
to WAL mode together, so the store retries within its busy timeout."""

from __future__ import annotations

import multiprocessing
import os

PROCESSES = 16
ROUNDS = 8


def _open_after(path: str, barrier, results) -> None:
    from provisioning.store.sqlite import SQLiteStore

    barrier.wait()  # every process starts opening at the same moment
    try:
        store = SQLiteStore(path)
        store.store_id  # noqa: B018 - one write after the open, as every command does
        store.close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


def test_many_processes_open_one_new_state_file(tmp_path):
    context = multiprocessing.get_context("fork")
    failures, ids = [], set()
    for round_ in range(ROUNDS):
        path = os.path.join(tmp_path, f"round-{round_}", "state.db")
        barrier, results = context.Barrier(PROCESSES), context.Queue()
        processes = [context.Process(target=_open_after, args=(path, barrier, results))
                     for _ in range(PROCESSES)]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        failures += [o for o in outcomes if o != "ok"]
        from provisioning.store.sqlite import SQLiteStore

        with SQLiteStore(path) as store:
            ids.add(store.store_id)
    assert failures == []
    assert len(ids) == ROUNDS  # one store id per file, agreed on by every opener
