"""test-kitchen's lifecycle over a cluster: create, converge, verify, destroy, test, list.

Each step works on the machines chosen by name or regular expression (``Cluster.choose``) and
records per *instance* (a matrix ``SUITE-PLATFORM``, or a plain file's machine) the last action
and the last verify result with its time, as state entries of kind ``instance``; they outlive
the machines, so ``converge list`` still shows how a destroyed instance last verified.

- ``create``: allocate and ready (no convergence).
- ``converge``: create if needed, converge, healthcheck (``up``), honouring ``after``.
- ``verify``: converge the instances that do not exist yet, then run every verify entry.
- ``test``: converge, verify, then destroy per policy (the passing ones by default: a failing
  instance is kept to debug, ``converge login INSTANCE`` opens it).
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Sequence

from provisioning.inputs.records import record
from provisioning.parallel import BatchResult, Outcome
from provisioning.spec import ManagedEntry

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.file import MachineDefinition
    from provisioning.cluster.runner import ClusterRunner
    from provisioning.machine.base import Machine
    from provisioning.store.base import ManagedEntryStore

__all__ = ["Kitchen", "TestRun", "INSTANCE_KIND", "instance_records", "DESTROY_POLICIES"]

INSTANCE_KIND = "instance"
DESTROY_POLICIES = ("passing", "always", "never")


def instance_records(store: "ManagedEntryStore") -> dict[str, dict[str, Any]]:
    """instance name -> what was recorded about it (last_action, last_action_at, verify)."""
    return {entry.name: dict(entry.reference) for entry in store.list(INSTANCE_KIND)}


@record
class TestRun:
    """What ``Kitchen.test`` did: per machine outcome, and which machines it destroyed/kept."""

    results: BatchResult
    destroyed: list[str]
    kept: list[str]


class Kitchen:
    """The lifecycle commands on one runner (its store, drivers, action handler)."""

    def __init__(self, runner: "ClusterRunner") -> None:
        self.runner = runner
        self.cluster = runner.cluster

    # -- recording -------------------------------------------------------------------------
    def _record(self, definitions: Sequence["MachineDefinition"], results: BatchResult,
                action: str, verify: bool = False) -> None:
        """Save per instance: the action and, for verify, whether every machine passed."""
        if self.runner.why_run:
            return
        store = self.runner.store
        instances = self._by_instance(definitions)
        saved = store.get_many(INSTANCE_KIND, list(instances))  # few queries for a fleet
        changed = []
        for instance, members in instances.items():
            outcomes = [results[d.name] for d in members if d.name in results]
            if not outcomes:
                continue
            failed = [o for o in outcomes if not o.ok]
            entry = saved.get(instance) or ManagedEntry(instance, kind=INSTANCE_KIND)
            entry.store = store
            now = time.time()
            data = dict(entry.reference)
            data.update(driver_url=members[0].driver_url, last_action=action,
                        last_action_at=now, last_action_ok=not failed)
            if verify:
                data["verify"] = {"ok": not failed, "at": now, "summary": (
                    f"{failed[0].name}: {failed[0].error}"[:1000] if failed else
                    f"{len(outcomes)} machine{'s' if len(outcomes) != 1 else ''} passed")}
            entry.reference = data
            changed.append(entry)
        store.save_many(changed)

    def _by_instance(self, definitions: Sequence["MachineDefinition"]
                     ) -> dict[str, list["MachineDefinition"]]:
        out: dict[str, list[MachineDefinition]] = {}
        for definition in definitions:
            out.setdefault(self.cluster.instance_of(definition), []).append(definition)
        return out

    # -- the steps ---------------------------------------------------------------------------
    def create(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        """Allocate and ready each machine; value: its Machine (None under why-run)."""
        results = self.runner.create(definitions)
        self._record(definitions, results, "create")
        return results

    def converge(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        results = self.runner.up(definitions)
        self._record(definitions, results, "converge")
        return results

    def verify(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        """Verify existing machines; those not created yet are converged first."""
        self.runner.provisioner.split_run = None  # verify what this run brought up
        existing = [d for d in definitions if self.runner.provisioner.spec(d.name).exists]
        missing = [d for d in definitions if d not in existing]
        machines: dict[str, Machine] = {}
        results = BatchResult()
        if missing:
            brought = self.runner.up(missing)
            for name, outcome in brought.items():
                if outcome.ok and outcome.value is not None:
                    machines[name] = outcome.value
                elif not outcome.ok:
                    results[name] = outcome
        connected = self.runner.provisioner.parallelizer.run(
            (d.name, functools.partial(self.runner.connect, d.name)) for d in existing)
        for name, outcome in connected.items():
            if not outcome.ok:
                results[name] = outcome
            elif outcome.value is not None:  # connect returns a machine or raises
                machines[name] = outcome.value
        results.update(self._verify_machines(definitions, machines))
        ordered = BatchResult((d.name, results[d.name]) for d in definitions if d.name in results)
        self._record(definitions, ordered, "verify", verify=True)
        for machine in machines.values():
            machine.disconnect()
        return ordered

    def _verify_machines(self, definitions: Sequence["MachineDefinition"],
                         machines: dict[str, "Machine"]) -> BatchResult:
        by_name = {d.name: d for d in definitions}
        verified = self.runner.provisioner.parallelizer.run(
            (name, functools.partial(self.runner.verify, by_name[name], machine))
            for name, machine in machines.items())
        for name, outcome in verified.items():
            handler = self.runner.action_handler.for_machine(name)
            if outcome.ok:
                handler.report_result("verify passed")
            else:
                handler.report_error(outcome.error)  # type: ignore[arg-type]
        return verified

    def destroy(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        results = self.runner.destroy_names([d.name for d in definitions])
        self._record(definitions, results, "destroy")
        return results

    def test(self, definitions: Sequence["MachineDefinition"], destroy: str = "passing"
             ) -> TestRun:
        """Converge, verify, then destroy (per ``destroy``: passing, always, never). An
        instance passes when every one of its machines came up and verified."""
        self.runner.provisioner.split_run = None  # verify and destroy what this run brought up
        created = self.runner.up(definitions)
        ready = {n: o.value for n, o in created.items() if o.ok and o.value is not None}
        verified = self._verify_machines(definitions, ready)
        results = BatchResult()
        for name, outcome in created.items():
            result: Outcome = Outcome(name)
            result.error = outcome.error or (verified[name].error if name in verified else None)
            results[name] = result
        self._record(definitions, results, "verify", verify=True)
        for machine in ready.values():
            machine.disconnect()
        passed = {instance for instance, members in self._by_instance(definitions).items()
                  if all(results[d.name].ok for d in members)}
        doomed = [d.name for d in definitions if destroy == "always" or destroy == "passing"
                  and self.cluster.instance_of(d) in passed]
        kept = [d.name for d in definitions if d.name not in doomed]
        if doomed:
            chosen = [d for d in definitions if d.name in doomed]
            destroyed = self.runner.destroy_names(doomed)
            self._record(chosen, destroyed, "destroy")
            for name, outcome in destroyed.items():
                if not outcome.ok and results[name].ok:
                    results[name].error = outcome.error
        for name in kept:
            self.runner.action_handler.for_machine(name).report_progress(
                f"kept (--destroy {destroy}); 'converge login {name}' opens it, "
                f"'converge destroy {name}' removes it")
        return TestRun(results, doomed, kept)

    # -- listing ---------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """One row per instance: driver, state of its machines, last action (and whether it
        went well), last verify result and when, as recorded in the state."""
        records = instance_records(self.runner.store)
        status = {row["name"]: row for row in self.runner.status()}
        rows = []
        for instance, members in self._by_instance(list(self.cluster.machines.values())).items():
            record = records.get(instance, {})
            states = sorted({str(status.get(d.name, {}).get("state")) for d in members})
            verify = record.get("verify") or {}
            rows.append({
                "instance": instance, "machines": [d.name for d in members],
                "driver_url": members[0].driver_url, "state": ", ".join(states),
                "last_action": record.get("last_action"),
                "last_action_ok": record.get("last_action_ok"),
                "last_action_at": record.get("last_action_at"),
                "verify": verify.get("ok"), "verified_at": verify.get("at"),
                "verify_summary": verify.get("summary")})
        return rows
