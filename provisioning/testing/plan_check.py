"""Checking a plan against what applying it did: the conformance suite's "plan equals apply"
case and the property test of plan/apply use it.

Per machine, what ``apply`` performed must be what the plan said:

- ``nothing``: no action at all;
- ``converge``: exactly the planned steps, in order, same wording;
- ``create``, ``replace``: the planned first action (the driver's create, whose wording is
  known before the machine exists) comes first; the rest (a boot, the steps of a machine that
  did not exist yet) cannot be named exactly before the machine exists, so only their presence
  is required; a create-before-destroy replace creates before it destroys;
- deposed resources (of a replace that did not finish): at most that many destroys, last
  (then the rest is checked as above);
- ``start``: a driver action first (start or boot), then at most as many actions as steps
  were planned (they are "checked after start": some may already hold);
- ``destroy``: the machine is gone from the state (its resource may have been gone already);
- a machine the plan does not name: no action.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import Event
    from provisioning.cluster.plan import Plan

__all__ = ["performed_by_machine", "plan_mismatches"]


def performed_by_machine(events: Iterable["Event"]) -> dict[str, list[str]]:
    """machine -> the descriptions of the actions performed for it, in order."""
    out: dict[str, list[str]] = {}
    for event in events:
        if event.kind == "action" and event.performed and event.machine:
            out.setdefault(event.machine, []).append(event.description)
    return out


def plan_mismatches(plan: "Plan", performed: Mapping[str, Sequence[str]],
                    saved: Iterable[str] = ()) -> list[str]:
    """Where ``performed`` (``performed_by_machine``) departs from ``plan``; ``saved``: the
    machine names in the state after the apply. Empty when the apply did what was planned."""
    saved = set(saved)
    problems = []
    planned = {m.name: m for m in plan.machines}
    for name, done in performed.items():
        if name not in planned and done:
            problems.append(f"{name}: not in the plan, yet apply did {list(done)}")
    for name, item in planned.items():
        done = list(performed.get(name, ()))
        steps = [s.description for s in item.steps]
        wrong = None
        if item.create_before_destroy and item.action == "replace":
            wrong = _created_first(done)
        for _ in item.deposed:  # the deposed resources' destroys come last
            if done and done[-1].startswith("destroy ") and item.action != "replace":
                done.pop()
        if wrong:
            pass
        elif item.action == "nothing" and done:
            wrong = "planned nothing"
        elif item.action == "converge" and done != steps:
            wrong = f"planned {steps}"
        elif item.action in ("create", "replace", "adopt"):
            first = [s for s in steps if not s.startswith(("destroy the machine", "create it"))]
            if not done or (item.action != "replace" and first and done[0] != first[0]):
                wrong = f"planned {steps}"
            elif name not in saved:
                wrong = "planned to exist afterwards, but it is not in the state"
        elif item.action == "start" and (not done or len(done) > 1 + len(steps)):
            wrong = f"planned a start then at most {len(steps)} steps"
        elif item.action == "destroy" and name in saved:
            wrong = "planned destroy, but it is still in the state"
        if wrong:
            problems.append(f"{name}: {item.action} ({item.reason}): {wrong}, apply did "
                            f"{list(performed.get(name, ()))}")
    return problems


def _created_first(done: Sequence[str]) -> str | None:
    """A create-before-destroy replace: a create (or the adoption of the new resource a killed
    run made) before the old resource's destroy, if that was still there."""
    made = next((i for i, d in enumerate(done) if d.startswith(("create ", "adopt "))), None)
    if made is None:
        return "planned a new machine, none was made"
    gone = [i for i, d in enumerate(done) if d.startswith("destroy ")]
    if gone and gone[0] < made:
        return "planned create before destroy, but the old one was destroyed first"
    return None
