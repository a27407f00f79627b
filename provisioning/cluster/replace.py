"""Replacing a machine: destroy then create, or, for a group with ``create_before_destroy:
true``, create the new machine first and destroy the old one once the new one is up.

Create-before-destroy moves the old resource aside in the machine's own state entry, in one
save: its reference goes to ``spec.deposed`` and ``spec.generation`` goes up, so the driver
tags the new resource with another ``resource_name`` (``web-1~1``) and adoption by tag never
takes the old resource for the new one. The deposed resource stays this cluster's: ``status``
and ``plan`` show it, and ``Provisioner.destroy_deposed`` destroys it after the new one is up,
or on the next run when one died in between. Only drivers that declare
``Capabilities.create_before_destroy`` can be asked for it (``check_drivers``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from provisioning.errors import ConfigError, ConfigProblem
from provisioning.inputs.url import parse_driver_url
from provisioning.registry import driver_class

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.cluster.file import MachineDefinition
    from provisioning.cluster.model import ClusterFile
    from provisioning.cluster.runner import ClusterRunner
    from provisioning.driver import Driver
    from provisioning.machine.base import Machine
    from provisioning.parallel import BatchResult
    from provisioning.spec import MachineSpec

__all__ = ["check_drivers", "depose", "replace_one", "depose_names", "destroy_deposed_names"]


def check_drivers(cluster: "ClusterFile",
                  definitions: "Sequence[MachineDefinition] | None" = None) -> None:
    """``ConfigError`` (before any change) naming each group (of ``definitions``, default all)
    that sets ``create_before_destroy: true`` while its driver class does not declare it can.
    Reads classes only: no driver is built, nothing is written."""
    problems, seen = [], set()
    for definition in cluster.machines.values() if definitions is None else definitions:
        group = definition.group
        if group not in cluster.create_before_destroy or group in seen:
            continue
        seen.add(group)
        scheme = parse_driver_url(definition.driver_url).scheme
        if not driver_class(scheme).capabilities.create_before_destroy:
            problems.append(ConfigProblem(
                f"group {group!r} sets create_before_destroy: true, but the {scheme}: driver "
                f"({definition.driver_url}) cannot hold a new machine beside the old one (its "
                "capabilities say create_before_destroy=False); remove the key to replace by "
                "destroying first", file=cluster.path,
                key=f"machines.{group}.create_before_destroy"))
    if problems:
        raise ConfigError(problems=problems)


def depose(spec: "MachineSpec", handler: "ActionHandler") -> None:
    """Move the machine's resource aside and start its next generation, in one save (under
    the machine's lock): the next allocate creates a new resource, never adopting this one."""
    if not spec.exists:
        return
    handler.report_progress("moving the current resource aside (deposed) until the new one "
                            "is up")
    if handler.why_run:
        return
    spec.deposed = [*spec.deposed, dict(spec.reference)]
    spec.reference = {}
    spec.generation += 1
    spec.save()


def replace_one(runner: "ClusterRunner", definition: "MachineDefinition", driver: "Driver",
                handler: "ActionHandler", spec: "MachineSpec", options: Mapping[str, Any], *,
                create_before_destroy: bool | None = None) -> "Machine | None":
    """Replace one machine under its lock, then bring the new one up (``runner.up_one``).
    ``create_before_destroy``: as planned (default: as its group says)."""
    runner.check_owner(spec)
    if create_before_destroy is None:
        create_before_destroy = definition.group in runner.cluster.create_before_destroy
    if create_before_destroy:
        depose(spec, handler)
        spec.last_action = "allocate"
        machine = runner.up_one(definition, driver, handler, spec, options)
        spec.last_action = "destroy deposed"
        runner.provisioner.destroy_deposed(handler, spec, options)
        spec.last_action = "up"
        return machine
    if spec.exists:
        spec.last_action = "destroy"
        driver.destroy_machine(handler, spec, options)
        spec.reference = {}
        spec.save()
    spec.last_action = "allocate"
    return runner.up_one(definition, driver, handler, spec, options)


def _locked(runner: "ClusterRunner", operation: str, names: Sequence[str], call: Any
            ) -> "BatchResult":
    machines = runner.cluster.machines
    requests = [(runner.driver(machines[n].driver_url), n, machines[n].machine_options)
                for n in names]
    return runner.provisioner.run_many_locked(operation, requests, call)


def depose_names(runner: "ClusterRunner", names: Sequence[str]) -> "BatchResult":
    """``up``'s first half of a create-before-destroy replace: each machine's resource moved
    aside under its lock (``depose``)."""
    def call(driver: "Driver", handler: "ActionHandler", spec: "MachineSpec", options) -> None:
        runner.check_owner(spec)
        depose(spec, handler)
    return _locked(runner, "depose", names, call)


def destroy_deposed_names(runner: "ClusterRunner", names: Sequence[str]) -> "BatchResult":
    """``up``'s last half, for machines it brought up: each machine's deposed resources
    destroyed under its lock."""
    def call(driver: "Driver", handler: "ActionHandler", spec: "MachineSpec", options) -> None:
        runner.check_owner(spec)
        runner.provisioner.destroy_deposed(handler, spec, options)
        spec.last_action = "up"
    return _locked(runner, "destroy deposed", names, call)
