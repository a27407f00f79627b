"""ActionHandler (why-run, events, prefixes) and the Parallelizer."""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.errors import ProviderError
from provisioning.parallel import Cancelled, Parallelizer


def test_why_run_records_but_does_not_run():
    calls = []
    handler = RecordingActionHandler(why_run=True)
    assert handler.for_machine("web-1").perform_action("create server", lambda: calls.append(1)) is None
    assert calls == []
    (event,) = handler.events
    assert str(event) == "[web-1] would create server" and not event.performed


def test_real_run_returns_result_and_emits_json_events():
    handler = RecordingActionHandler()
    assert handler.for_machine("db").perform_action("make", lambda: 42) == 42
    handler.for_machine("db").report_progress("waiting")
    lines = [json.dumps(e.to_dict()) for e in handler.events]
    assert [json.loads(l)["event"] for l in lines] == ["action", "progress"]
    assert json.loads(lines[0])["machine"] == "db" and json.loads(lines[0])["performed"]


def test_failing_action_emits_nothing_and_raises():
    handler = RecordingActionHandler()
    with pytest.raises(ZeroDivisionError):
        handler.perform_action("divide", lambda: 1 / 0)
    assert handler.events == []


def test_parallel_results_per_machine_failure_hides_nothing():
    def job(i):
        if i == 2:
            raise ProviderError("boom", machine=f"m{i}")
        return i * 10
    result = Parallelizer(4).run((f"m{i}", (lambda i=i: job(i))) for i in range(5))
    assert not result.ok and list(result.failures) == ["m2"]
    assert result.values_by_name() == {"m0": 0, "m1": 10, "m3": 30, "m4": 40}
    with pytest.raises(ProviderError):
        result.raise_first()


def test_parallel_bound_is_respected():
    """Jobs meet three at a time at a barrier: a bound under 3 would never fill it (the
    barrier's timeout breaks it), one over 3 would show in the peak."""
    running, peak, lock = [0], [0], threading.Lock()
    together = threading.Barrier(3)

    def job():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        together.wait(timeout=60)
        with lock:
            running[0] -= 1
    result = Parallelizer(3).run((f"m{i}", job) for i in range(12))
    assert result.ok, [o.error for o in result.values() if o.error]
    assert peak[0] == 3


def test_fail_fast_cancels_jobs_not_started():
    started = []

    def job(i):
        started.append(i)
        if i == 0:
            raise ProviderError("first fails")
        time.sleep(0.01)
    result = Parallelizer(1, policy="fail-fast").run((f"m{i}", (lambda i=i: job(i))) for i in range(4))
    assert started == [0]
    assert all(isinstance(result[f"m{i}"].error, Cancelled) for i in range(1, 4))


def _calls_while_collecting(jobs: int) -> int:
    """Function calls the caller's thread makes while running ``jobs`` jobs that finish one
    after the other (each waits for the one before it: the worst case for a collector that
    wakes up on every completion)."""
    calls = [0]
    finished = [threading.Event() for _ in range(jobs)]

    def job(i: int) -> int:
        if i:
            finished[i - 1].wait()
        finished[i].set()
        return i

    def count(frame, event, arg):
        if event in ("call", "c_call"):
            calls[0] += 1
    sys.setprofile(count)
    try:
        result = Parallelizer(8).run((f"m{i}", (lambda i=i: job(i))) for i in range(jobs))
    finally:
        sys.setprofile(None)
    assert result.ok and result[f"m{jobs - 1}"].value == jobs - 1
    return calls[0]


def test_parallel_collection_is_linear_in_jobs():
    """Collecting 1,000 results costs the caller about ten times what 100 cost (re-waiting on
    every pending job after each completion made it a hundred times)."""
    small, large = _calls_while_collecting(100), _calls_while_collecting(1000)
    assert large <= 12 * small, (small, large)
    assert large <= 20 * 1000, large  # a small constant per job
