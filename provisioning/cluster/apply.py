"""Applying a plan: each machine's planned action and nothing else.

``apply_plan`` (``converge apply plan.json``): a machine whose state version moved since the
plan is refused with ``StalePlan`` (checked once before any change, again under each machine's
lock), a machine planned ``nothing`` is not touched, and the machines are acted on in the order
``after:`` asks for. ``up_plan`` (``converge up``) applies a fresh plan through the runner's
``up`` (batched allocation, waves, images), so unchanged machines are still healthchecked and
another runner's work on the same machine is not an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from provisioning.cluster.plan import check_fresh
from provisioning.cluster.replace import depose_names, destroy_deposed_names, replace_one
from provisioning.cluster.topology import waves
from provisioning.errors import StalePlan
from provisioning.images.builder import boot_from_images
from provisioning.parallel import BatchResult, Outcome

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.cluster.plan import MachinePlan, Plan
    from provisioning.cluster.runner import ClusterRunner
    from provisioning.driver import Driver

__all__ = ["apply_plan", "up_plan"]


def up_plan(runner: "ClusterRunner", plan: "Plan") -> BatchResult:
    """``up``: replaced machines destroyed first (or, create-before-destroy, moved aside),
    every kept machine brought up by the runner, then the deposed resources of the machines
    that came up, then the machines the plan destroys (a lower count, a removed group)."""
    cluster = runner.cluster
    results = BatchResult()
    replaced = plan.by_action("replace")
    first = [m.name for m in replaced if not m.create_before_destroy]
    if first:
        results.update(runner.destroy_names(first))
    aside = [m.name for m in replaced if m.create_before_destroy]
    if aside:
        results.update(depose_names(runner, aside))
    kept = [cluster.machines[m.name] for m in plan.machines
            if m.action != "destroy" and (m.name not in results or results[m.name].ok)]
    results.update(runner.up(kept))
    deposed = [m.name for m in plan.machines if m.action != "destroy" and results[m.name].ok
               and (m.deposed or m.create_before_destroy)]
    if deposed:
        for name, outcome in destroy_deposed_names(runner, deposed).items():
            if not outcome.ok:  # the machine is up, its old resource is still there
                results[name] = outcome
    doomed = [m.name for m in plan.by_action("destroy")]
    if doomed:
        results.update(runner.destroy_names(doomed))
    return BatchResult((m.name, results[m.name]) for m in plan.machines)


def apply_plan(runner: "ClusterRunner", plan: "Plan", *, source: str = "plan") -> BatchResult:
    """Perform exactly ``plan``; every machine's outcome comes back (value: its Machine, or
    None)."""
    check_fresh(plan, runner, source)
    cluster = runner.cluster
    by_name = {m.name: m for m in plan.machines}
    kept = [cluster.machines[m.name] for m in plan.machines
            if m.action not in ("destroy", "nothing") or (m.action == "nothing" and m.deposed)]
    definitions = {d.name: d for d in boot_from_images(kept, runner.images)}  # built first

    def act(request: Any) -> Any:
        driver, name, options = request
        item = by_name[name]

        def call(d: "Driver", handler: "ActionHandler", spec, o) -> Any:
            if spec.version != item.state_version:
                raise StalePlan(source, [f"machine {name!r} changed in the state while the "
                                         f"plan was applied (version {item.state_version} "
                                         f"planned, {spec.version} now)"])
            return _perform(runner, item, definitions.get(name), d, handler, spec, o)
        operation = "destroy" if item.action == "destroy" else "allocate"
        return runner.provisioner.run_locked(operation, driver, name, options, call)

    results = BatchResult()
    for wave in waves(cluster, list(definitions.values())):
        requests = [(runner.driver(d.driver_url), d.name, d.machine_options) for d in wave]
        results.update(runner.provisioner.run_many("apply", requests, act))
    doomed = [m for m in plan.by_action("destroy")]
    if doomed:
        unbound: list[Any] = [(None, m.name, {}) for m in doomed]  # act finds each driver
        results.update(runner.provisioner.run_many("apply-destroy", unbound, act))
    for item in plan.by_action("nothing"):
        if item.deposed:
            continue  # its deposed resources were destroyed above
        results[item.name] = Outcome(item.name)
        runner.action_handler.for_machine(item.name).report_result("planned nothing: not touched")
    return BatchResult((m.name, results[m.name]) for m in plan.machines)


def _perform(runner: "ClusterRunner", item: "MachinePlan", definition: Any, driver: "Driver",
             handler: "ActionHandler", spec, options) -> Any:
    if item.action == "destroy":
        return runner.destroy_one(driver, handler, spec, options)
    if item.action == "replace":
        return replace_one(runner, definition, driver, handler, spec, options,
                           create_before_destroy=item.create_before_destroy)
    runner.check_owner(spec)
    machine = None
    if item.action != "nothing":  # planned nothing but its deposed resources
        machine = runner.up_one(definition, driver, handler, spec, options)
    if item.deposed:
        spec.last_action = "destroy deposed"
        runner.provisioner.destroy_deposed(handler, spec, options)
        spec.last_action = "up"
    return machine
