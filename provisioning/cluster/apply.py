"""Applying a plan: each machine's planned action and nothing else, under its lock.

``exact`` (``converge apply plan.json``): a machine whose state version moved since the plan is
refused with ``StalePlan`` (checked once before any change, again under each machine's lock),
and a machine planned ``nothing`` is not touched. ``up`` applies a fresh plan with ``exact``
off: every machine it keeps goes through the whole pipeline, so unchanged machines are still
healthchecked and another runner's work on the same machine is not an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from provisioning.errors import StalePlan

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.cluster.plan import MachinePlan, Plan
    from provisioning.cluster.runner import ClusterRunner
    from provisioning.driver import Driver
    from provisioning.parallel import BatchResult

__all__ = ["apply_plan"]


def apply_plan(runner: "ClusterRunner", plan: "Plan", *, exact: bool = True,
               source: str = "plan") -> "BatchResult":
    """Perform ``plan``; every machine's outcome comes back (value: its Machine, or None)."""
    from provisioning.cluster.plan import check_fresh

    if exact:
        check_fresh(plan, runner, source)
    cluster = runner.cluster
    from provisioning.images.builder import boot_from_images

    todo = [m for m in plan.machines if m.action != "nothing" or not exact]
    by_name = {m.name: m for m in todo}
    kept = [cluster.machines[m.name] for m in todo if m.action != "destroy"]
    definitions = {d.name: d for d in boot_from_images(kept, runner.images)}  # built first
    requests = []
    for item in todo:
        definition = definitions.get(item.name) or cluster.machines.get(item.name)
        driver = runner.driver(definition.driver_url) if definition is not None else None
        requests.append((driver, item.name, definition.machine_options if definition else {}))

    def act(request: Any) -> Any:
        driver, name, options = request
        item = by_name[name]

        def call(d: "Driver", handler: "ActionHandler", spec, o) -> Any:
            if exact and spec.version != item.state_version:
                raise StalePlan(source, [f"machine {name!r} changed in the state while the "
                                         f"plan was applied (version {item.state_version} "
                                         f"planned, {spec.version} now)"])
            return _perform(runner, item, definitions.get(name), d, handler, spec, o)
        operation = "destroy" if item.action == "destroy" else "allocate"
        return runner.provisioner.run_locked(operation, driver, name, options, call)

    results = runner.provisioner.run_many("apply" if exact else "up", requests, act)
    for item in plan.machines:
        if item.name not in by_name:
            from provisioning.parallel import Outcome

            results[item.name] = Outcome(item.name)
            runner.action_handler.for_machine(item.name).report_result(
                "planned nothing: not touched")
    return results


def _perform(runner: "ClusterRunner", item: "MachinePlan", definition: Any, driver: "Driver",
             handler: "ActionHandler", spec, options) -> Any:
    if item.action == "destroy":
        return runner.destroy_one(driver, handler, spec, options)
    if item.action == "replace" and spec.exists:
        runner.check_owner(spec)
        spec.last_action = "destroy"
        driver.destroy_machine(handler, spec, options)
        spec.reference = {}
        if not runner.why_run:
            spec.save()
        spec.last_action = "allocate"
    return runner.up_one(definition, driver, handler, spec, options)
