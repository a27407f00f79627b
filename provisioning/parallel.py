"""Parallelizer: run one job per machine on a bounded thread pool, results per machine.

A failing machine never hides the others: every outcome comes back. Policy ``continue`` runs all
jobs; ``fail-fast`` starts no new job after the first failure (those report as cancelled).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Generic, Iterable, TypeVar

from provisioning.errors import ProvisioningError
from provisioning.inputs.records import record

T = TypeVar("T")

__all__ = ["Parallelizer", "Outcome", "BatchResult", "Cancelled", "POLICIES"]

POLICIES = ("continue", "fail-fast")


class Cancelled(ProvisioningError):
    """A job that never ran because an earlier one failed under ``fail-fast``."""


@record
class Outcome(Generic[T]):
    """One job's result: its value, or the error it raised."""

    name: str
    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BatchResult(dict[str, "Outcome[Any]"]):
    """name -> Outcome, in submission order."""

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.values())

    @property
    def failures(self) -> dict[str, BaseException]:
        return {n: o.error for n, o in self.items() if o.error is not None}

    def values_by_name(self) -> dict[str, Any]:
        return {n: o.value for n, o in self.items() if o.ok}

    def raise_first(self) -> None:
        """Raise the first real failure (cancellations only when nothing else failed)."""
        errors = [e for e in self.failures.values() if not isinstance(e, Cancelled)]
        errors = errors or list(self.failures.values())
        if errors:
            raise errors[0]


class Parallelizer:
    """Runs jobs on at most ``max_workers`` threads that pull from one shared queue.

    Each worker writes its outcome straight into the result, so collecting costs the caller one
    join per worker thread, whatever the number of jobs (no re-waiting on every pending job each
    time one finishes: that made a thousand machines cost half a million waiter installs).
    """

    def __init__(self, max_workers: int = 10, policy: str = "continue") -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.policy = policy

    def run(self, jobs: Iterable[tuple[str, Callable[[], T]]]) -> BatchResult:
        jobs = list(jobs)
        results = BatchResult((name, Outcome(name)) for name, _ in jobs)
        if not jobs:
            return results
        if len(jobs) == 1 or self.max_workers == 1:
            return self._run_serial(jobs, results)
        queue = collections.deque(jobs)
        stop = threading.Event()
        fail_fast = self.policy == "fail-fast"

        def worker() -> None:
            while True:
                try:
                    name, fn = queue.popleft()  # atomic: each job goes to exactly one worker
                except IndexError:
                    return
                outcome = results[name]
                if stop.is_set():
                    outcome.error = Cancelled("not started: another machine failed first "
                                              "(fail-fast)", machine=name)
                    continue
                try:
                    outcome.value = fn()
                except BaseException as exc:  # every outcome is reported, none raised here
                    outcome.error = exc
                    if fail_fast:
                        stop.set()

        threads = [threading.Thread(target=worker, name=f"provisioning-{i}")
                   for i in range(min(self.max_workers, len(jobs)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def _run_serial(self, jobs: Iterable[tuple[str, Callable[[], Any]]],
                    results: BatchResult) -> BatchResult:
        failed = False
        for name, fn in jobs:
            if failed and self.policy == "fail-fast":
                results[name].error = Cancelled("not started: another machine failed first "
                                                "(fail-fast)", machine=name)
                continue
            try:
                results[name].value = fn()
            except Exception as exc:  # every outcome is reported, none raised here
                results[name].error = exc
                failed = True
        return results
