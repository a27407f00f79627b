"""Run generations on PostgreSQL: a runner's report is always about the run it joined, even when
another runner opens the next run while it is still reading the results of its own; a failure
seen in another runner keeps its type. Ordered by events, never by sleeps."""

from __future__ import annotations

import threading

import pytest

from provisioning.cluster.claims import WorkSplit, run_key, split_run
from provisioning.errors import StateLocked
from provisioning.lifecycle import Provisioner
from provisioning.parallel import Cancelled
from provisioning.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

NAMES = ["m1", "m2", "m3"]
OTHER = {"host": "elsewhere", "pid": 7, "command": "converge up", "since": "T0"}


class HeldStore(PostgresStore):
    """A real store that, when its runner first reads a run's final results, says so and waits
    until the test lets it go on: the moment another runner may open the next run."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reading, self.go_on = threading.Event(), threading.Event()

    def run_progress(self, run_key: str, generation: int):
        if not self.reading.is_set():
            self.reading.set()
            assert self.go_on.wait(60), "the test never let the runner go on"
        return super().run_progress(run_key, generation)


def test_a_new_run_opened_meanwhile_does_not_erase_the_results_being_reported(postgres_url):
    other = PostgresStore(postgres_url)
    held = HeldStore(postgres_url)
    late = PostgresStore(postgres_url)
    try:
        # another runner joined first: it holds m1, failed m2 (a lock conflict) and did m3
        elsewhere = WorkSplit(other, "up", NAMES, ttl=30, holder=OTHER)
        assert elsewhere.claim(3) == ["m1", "m2", "m3"]
        assert elsewhere.finish({"m2": f"StateLocked: {StateLocked('m2', {'host': 'h3'})}",
                                 "m3": None}) == {"m2", "m3"}

        provisioner = Provisioner(held, parallel=2)
        outcome: dict = {}

        def this_runner() -> None:
            outcome["results"] = split_run(provisioner, "up", [(None, n, {}) for n in NAMES],
                                           lambda request: request[1], poll=0.01)
        thread = threading.Thread(target=this_runner)
        thread.start()
        # the other runner gives m1 back (its claim lapses as if it had died): this runner
        # takes and finishes it, the run is complete, and this runner starts reading results
        elsewhere.close()
        other.close()
        assert held.reading.wait(60)
        # a runner started just now finds the run finished and opens the next one
        newcomer = WorkSplit(late, "up", NAMES, ttl=30)
        assert newcomer.generation > elsewhere.generation
        newcomer.close()
        held.go_on.set()
        thread.join(60)
        results = outcome["results"]
        assert results["m1"].ok and results["m1"].value == "m1"  # done here
        assert results["m3"].ok  # done by the other runner: not "not started"
        assert isinstance(results["m2"].error, StateLocked)  # the type survives the trip
        assert "failed in another runner (elsewhere pid 7)" in str(results["m2"].error)
        assert not any(isinstance(o.error, Cancelled) for o in results.values())
        # the finished run is still readable; the new one has everything pending
        assert {p["state"] for p in late.run_progress(run_key("up", NAMES),
                                                     newcomer.generation).values()} == {"pending"}
    finally:
        held.go_on.set()
        for store in (held, late):
            store.close()
