"""Removing resources through the warehouse hooks: one machine's (``destroy_machine``), or many
in one request (``destroy_together``, for a driver that overrides ``delete_resources``).

A removal has two halves: ``delete_resource`` (or ``delete_resources`` for many) takes the
resource out of the warehouse, ``finish_delete`` removes what it left (files moved aside,
snapshots). The fault point ``during_destroy`` falls between them, and what a destroy killed
there left (``unfinished_delete``) is finished by the next destroy: a removal is idempotent.
A mixin of ``ResourceContract``, which joins it to the other hooks.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from provisioning.faults import checkpoint
from provisioning.parallel import BatchResult, Outcome, Parallelizer

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.spec import MachineSpec

__all__ = ["DeleteContract"]


class DeleteContract:
    """The destroy half of ``ResourceContract``."""

    resource_state: Any  # ResourceContract's
    resource_label: Any  # ResourceContract's
    _no_hook: Any  # ResourceContract's

    def destroy_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                        machine_options: Mapping[str, Any]) -> None:
        """``delete_resource``, the fault point ``during_destroy``, then ``finish_delete``, in
        one action; a resource already gone is reported (idempotent), and what a destroy killed
        between the two halves left (``unfinished_delete``) is finished."""
        if self._settled(action_handler, machine_spec):
            return

        def delete() -> None:
            self.delete_resource(action_handler, machine_spec)
            checkpoint("during_destroy", machine=machine_spec.name)
            self.finish_delete(action_handler, machine_spec)
        action_handler.perform_action(self.describe_delete(machine_spec), delete)

    def destroy_together(self, action_handler: "ActionHandler",
                         specs_and_options: Sequence[tuple["MachineSpec", Mapping[str, Any]]],
                         parallelizer: "Parallelizer | None" = None) -> BatchResult:
        """``destroy_machines`` of a driver whose ``delete_resources`` removes many resources
        in one request: each machine not allocated or already gone is settled as
        ``destroy_machine`` settles it; the others are removed by one ``delete_resources``,
        then the fault point ``during_destroy``, then each machine's ``finish_delete`` inside
        its own destroy action (``describe_delete``, as when destroyed alone), in parallel
        on ``parallelizer`` when given. Under why-run only the actions are reported. One
        outcome per machine: a failure hides no other's."""
        results = BatchResult((spec.name, Outcome(spec.name)) for spec, _ in specs_and_options)
        doomed: list[MachineSpec] = []
        for spec, _ in specs_and_options:
            try:
                if not self._settled(action_handler.for_machine(spec.name), spec):
                    doomed.append(spec)
            except Exception as exc:  # this machine's outcome; the others go on
                results[spec.name].error = exc
        if doomed and not action_handler.why_run:
            try:
                self.delete_resources(action_handler, doomed)
                checkpoint("during_destroy", machine=doomed[0].name if len(doomed) == 1 else None)
            except Exception as exc:  # the request failed: each machine in it did
                for spec in doomed:
                    results[spec.name].error = exc
                return results
        finished = (parallelizer or Parallelizer(1)).run(
            (spec.name, functools.partial(self._finish_in_action,
                                          action_handler.for_machine(spec.name), spec))
            for spec in doomed)
        for name, outcome in finished.items():
            results[name].error = outcome.error
        return results

    def _finish_in_action(self, action_handler: "ActionHandler",
                          machine_spec: "MachineSpec") -> None:
        action_handler.perform_action(
            self.describe_delete(machine_spec),
            functools.partial(self.finish_delete, action_handler, machine_spec))

    def _settled(self, action_handler: "ActionHandler", machine_spec: "MachineSpec") -> bool:
        """True when the machine needs no removal: never allocated, or its resource is gone
        (reported, and what a killed destroy left of it finished)."""
        if not machine_spec.reference:
            action_handler.report_progress("not allocated: nothing to destroy")
            return True
        if self.resource_state(machine_spec) != "missing":
            return False
        left = self.unfinished_delete(machine_spec)
        label = self.resource_label(machine_spec.reference)
        if left is None:
            action_handler.report_progress(f"{label} is already gone")
        else:
            action_handler.perform_action(
                f"finish destroying {label}: remove {left}",
                lambda: self.finish_delete(action_handler, machine_spec))
        return True

    # -- the hooks ---------------------------------------------------------------------------
    def delete_resource(self, action_handler: "ActionHandler", machine_spec: "MachineSpec") -> None:
        """Remove the resource and whatever belongs to it. Called only in a real run, only
        when ``resource_state`` is not 'missing'."""
        raise self._no_hook("delete_resource", "destroy_machine")

    def delete_resources(self, action_handler: "ActionHandler",
                         machine_specs: Sequence["MachineSpec"]) -> None:
        """Optional: the first half of removing many resources, in one request (the
        warehouse's bulk delete). Called only in a real run, only for resources
        ``resource_state`` does not call 'missing'; ``finish_delete`` of each follows. Raise
        when the request failed (every machine in it then failed; a re-run finishes what it
        did). Default: ``delete_resource`` of each; override it and ``destroy_machines``
        hands each chunk of machines to ``destroy_together``."""
        for spec in machine_specs:
            self.delete_resource(action_handler.for_machine(spec.name), spec)

    def finish_delete(self, action_handler: "ActionHandler", machine_spec: "MachineSpec") -> None:
        """Optional: the second half of a removal ``delete_resource`` began (delete the files
        moved aside, the snapshots, wait until it is gone). Idempotent: it also runs in a later
        destroy when a killed one left it undone (``unfinished_delete``). The fault point
        ``during_destroy`` falls between the halves. Default: nothing."""

    def unfinished_delete(self, machine_spec: "MachineSpec") -> str | None:
        """Optional: what a destroy killed between ``delete_resource`` and ``finish_delete``
        left of a resource ``resource_state`` calls 'missing' ("2 snapshots"), or None. Changes
        nothing. Default: None (the first half removes everything)."""
        return None

    def describe_delete(self, machine_spec: "MachineSpec") -> str:
        """The destroy action's description (``[web-1] destroy server srv-1a2b``)."""
        return f"destroy {self.resource_label(machine_spec.reference)}"
