"""A seeded random walk over a cluster for the property test of plan/apply: edit ``count``,
delete a resource behind our back, stop a machine, change a step, ask for a machine's
``--replace`` (create-before-destroy when the walk's group sets it), and every so often ``plan
--out`` then ``apply`` the saved plan. After every apply it checks that the actions performed
are those planned (``plan_check``), that the state equals reality (every machine of the file is
in the state once, running, with exactly one resource at the driver, and no other machine is)
and that planning again finds nothing to do.

The walk is a plain ``random.Random(seed)``: a failing sequence is replayed from its seed and
printed step by step (``PlanWalk.log``). Drivers plug in through three callables: how many
resources the warehouse holds per machine name, and how to delete one behind our back.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from typing import Any, Callable, Mapping

from provisioning.actions import RecordingActionHandler
from provisioning.cluster import Cluster
from provisioning.cluster.plan import Plan
from provisioning.spec import machine_of_resource
from provisioning.testing.plan_check import performed_by_machine, plan_mismatches

__all__ = ["PlanWalk", "OPERATIONS", "WITH_REPLACE"]

OPERATIONS = ("count", "delete", "stop", "step", "apply")
#: with ``replace``: the next apply's plan replaces a machine (``plan --replace NAME``)
WITH_REPLACE = OPERATIONS + ("replace",)


class PlanWalk:
    """One cluster file (group ``web``, one file step) in ``directory``, driven at random."""

    def __init__(self, directory: str, driver_url: str, *, seed: int, max_count: int,
                 step_path: str, resources: Callable[[], Counter],
                 delete: Callable[[Cluster, str], None],
                 top: Mapping[str, Any] | None = None,
                 machine_options: Mapping[str, Any] | None = None,
                 operations: tuple[str, ...] = OPERATIONS,
                 create_before_destroy: bool = False) -> None:
        self.directory = directory
        self.driver_url = driver_url
        self.rng = random.Random(seed)
        self.max_count = max_count
        self.step_path = step_path
        self.resources = resources
        self.delete = delete
        self.top = dict(top or {})
        self.machine_options = dict(machine_options or {})
        self.operations = operations
        self.create_before_destroy = create_before_destroy
        #: the machines the next apply's plan replaces
        self.replacing: set[str] = set()
        self.count = 1
        self.content = "v0"
        self.file = os.path.join(directory, "cluster.yml")
        self.state = os.path.join(directory, "state.db")
        self.log: list[str] = [f"seed {seed}"]
        self.applies = 0
        self.write()

    # -- the cluster file --------------------------------------------------------------------
    def write(self) -> None:
        group = {"count": self.count, "machine_options": self.machine_options,
                 "converge": [{"file": {"path": self.step_path, "content": self.content + "\n",
                                        "mode": "0644"}}]}
        if self.create_before_destroy:
            group["create_before_destroy"] = True
        data = {"name": "walk", "driver": self.driver_url, **self.top,
                "machines": {"web": group}}
        with open(self.file, "w", encoding="utf-8") as handle:
            json.dump(data, handle)

    def cluster(self, handler: RecordingActionHandler | None = None) -> Cluster:
        return Cluster.load(self.file, state=self.state,
                            listeners=[handler.emit] if handler is not None else [])

    # -- the walk ------------------------------------------------------------------------------
    def run(self, steps: int, *, apply_every: int = 2) -> None:
        """``steps`` random operations; an apply at least every ``apply_every`` and at the end."""
        since = 0
        for _ in range(steps):
            operation = self.rng.choice(self.operations)
            since = 0 if operation == "apply" else since + 1
            if since >= apply_every:
                self.step(operation)
                operation, since = "apply", 0
            self.step(operation)
        if since:
            self.step("apply")

    def step(self, operation: str) -> None:
        if operation == "count":
            self.count = self.rng.randint(1, self.max_count)
            self.write()
            self.log.append(f"count -> {self.count}")
        elif operation == "step":
            self.content = f"v{self.rng.randint(1, 10**6)}"
            self.write()
            self.log.append(f"step content -> {self.content}")
        elif operation in ("delete", "stop", "replace"):
            with self.cluster() as cluster:
                names = sorted(n for n, e in cluster.runner.entries().items()
                               if e.exists and n in cluster.file.machines)
                if not names:
                    self.log.append(f"{operation}: no machine yet")
                    return
                name = self.rng.choice(names)
                self.log.append(f"{operation} {name}")
                if operation == "replace":
                    self.replacing.add(name)
                elif operation == "delete":
                    self.delete(cluster, name)
                else:
                    assert cluster.stop([name]).ok
        else:
            self.apply()

    def apply(self) -> None:
        """plan --out, then apply the saved plan; then check it all."""
        self.applies += 1
        with self.cluster() as cluster:
            plan = cluster.plan(replace=sorted(n for n in self.replacing
                                               if n in cluster.file.machines))
        self.replacing.clear()
        out = os.path.join(self.directory, "plan.json")
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(plan.dumps())
        saved = Plan.load(out)
        self.log.append(f"apply: {saved.summary()} "
                        f"{ {m.name: m.action for m in saved.machines} }")
        recorder = RecordingActionHandler()
        with self.cluster(recorder) as cluster:
            results = cluster.apply(saved, source=out)
            for outcome in results.values():
                if outcome.ok and outcome.value is not None:
                    outcome.value.disconnect()
            assert results.ok, self.explain(f"apply failed: {results.failures}")
            names = [e.name for e in cluster.store.list("machine")]
            mismatches = plan_mismatches(saved, performed_by_machine(recorder.events), names)
            assert mismatches == [], self.explain(f"apply departed from the plan: {mismatches}")
            self.check_reality(cluster)
            again = cluster.plan()
            assert {m.action for m in again.machines} == {"nothing"}, \
                self.explain(f"planning again after apply: {again.summary()}")

    def check_reality(self, cluster: Cluster) -> None:
        entries = cluster.runner.entries()
        wished = sorted(cluster.file.machines)
        assert sorted(entries) == wished, self.explain(f"state {sorted(entries)} != file {wished}")
        states = cluster.runner.states(list(entries.values()))
        assert set(states.values()) == {"running"}, self.explain(f"driver says {states}")
        held: Counter = Counter()
        for resource, count in self.resources().items():  # ``web-1~2`` is web-1's
            held[machine_of_resource(resource)] += count
        assert all(not e.deposed for e in entries.values()), \
            self.explain("a deposed resource is left in the state")
        assert dict(held) == {n: 1 for n in wished}, \
            self.explain(f"warehouse holds {dict(held)} for state {wished}")

    def explain(self, problem: str) -> str:
        return problem + "\nthe walk so far:\n  " + "\n  ".join(self.log)
