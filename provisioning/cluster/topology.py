"""Machines that know each other: ``after`` ordering, the ``machines`` template variable, outputs.

- ``after: [db]`` on a group: its machines are brought up once every ``db`` machine is up (in a
  matrix instance, the ``db`` of the same instance). Groups form waves: each wave runs in
  parallel, the next starts when it is done; a machine whose dependency failed fails without
  being touched. A cycle is a ``ConfigError`` naming it.
- ``machines`` in templates and step arguments: group -> list of ``{name, group, index, address,
  facts}`` for the machines of the same scope (the whole file, or the matrix instance), read
  from the state when the step runs, so ``{{ machines.db[0].address }}`` is db's real address.
- ``facts``: recorded per machine after it is readied (``os``, ``version``, ``arch``,
  ``hostname``), kept in the state as entries of kind ``facts``.
- ``outputs``: templated strings over the same variables (``machines`` by group name, across
  the whole file), printed by ``converge output``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from provisioning.cluster.model import ClusterFile, MachineDefinition
from provisioning.convergence.steps import render_string
from provisioning.inputs.digest import sha256_hex
from provisioning.inputs.schema import Problems, did_you_mean
from provisioning.spec import ManagedEntry

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.machine.base import Machine
    from provisioning.store.base import ManagedEntryStore

__all__ = ["check_order", "waves", "machines_view", "record_facts", "render_outputs",
           "FACTS_KIND"]

FACTS_KIND = "facts"


def _scopes(cluster: ClusterFile) -> dict[str | None, dict[str, list[MachineDefinition]]]:
    """scope (instance, or None for a plain file) -> role -> its machines, in file order."""
    out: dict[str | None, dict[str, list[MachineDefinition]]] = {}
    for definition in cluster.machines.values():
        role = definition.role or definition.group
        out.setdefault(definition.instance, {}).setdefault(role, []).append(definition)
    return out


def _levels(roles: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Wave number per role (0: after nothing); assumes no cycle."""
    levels: dict[str, int] = {}

    def level(role: str, trail: tuple[str, ...] = ()) -> int:
        if role not in levels:
            deps = [d for d in roles.get(role, ()) if d in roles and d not in trail]
            levels[role] = 1 + max((level(d, trail + (role,)) for d in deps), default=-1)
        return levels[role]

    for role in roles:
        level(role)
    return levels


def check_order(cluster: ClusterFile, problems: Problems) -> None:
    """Every ``after`` names a group of the same scope, and no group waits on itself."""
    for scope, roles in _scopes(cluster).items():
        after = {role: members[0].after for role, members in roles.items()}
        for role, deps in after.items():
            key = roles[role][0].key
            for index, dep in enumerate(deps):
                if dep not in roles:
                    where = f" in instance {scope}" if scope else ""
                    problems.add(f"{key}.after[{index}]", f"no group {dep!r}{where}"
                                                          f"{did_you_mean(dep, roles)}")
        cycle = _find_cycle(after)
        if cycle:
            problems.add(f"{roles[cycle[0]][0].key}.after",
                         f"'after' makes a cycle: {' -> '.join(cycle + [cycle[0]])}; a group "
                         "cannot wait for itself")


def _find_cycle(after: dict[str, tuple[str, ...]]) -> list[str]:
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(role: str) -> list[str]:
        state[role] = 1
        path.append(role)
        for dep in after.get(role, ()):
            if dep not in after:
                continue
            if state.get(dep) == 1:
                return path[path.index(dep):]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[role] = 2
        return []

    for role in after:
        if role not in state:
            found = visit(role)
            if found:
                return list(found)
    return []


def waves(cluster: ClusterFile, definitions: Sequence[MachineDefinition]
          ) -> list[list[MachineDefinition]]:
    """The machines in the order ``after`` asks for: a list of waves, each run in parallel."""
    level_of: dict[str, int] = {}
    for roles in _scopes(cluster).values():
        levels = _levels({role: members[0].after for role, members in roles.items()})
        for role, members in roles.items():
            for member in members:
                level_of[member.name] = levels[role]
    out: dict[int, list[MachineDefinition]] = {}
    for definition in definitions:
        out.setdefault(level_of.get(definition.name, 0), []).append(definition)
    return [out[level] for level in sorted(out)]


def dependencies(cluster: ClusterFile, definition: MachineDefinition) -> list[str]:
    """Names of the machines this one waits for (its ``after`` groups in its scope)."""
    if not definition.after:  # most machines: no scan of the whole file for each one
        return []
    roles = _scopes(cluster).get(definition.instance, {})
    return [m.name for dep in definition.after for m in roles.get(dep, [])]


def _entry(store: "ManagedEntryStore", kind: str, name: str) -> dict[str, Any]:
    entry = store.get(kind, name)
    return dict(entry.reference) if entry is not None else {}


def machines_view(cluster: ClusterFile, store: "ManagedEntryStore",
                  definition: MachineDefinition | None = None) -> dict[str, list[dict]]:
    """group -> [{name, group, index, address, facts}] of the machines in ``definition``'s scope
    (every machine, by full group name, without one), as the state knows them now."""
    saved = {entry.name: entry for entry in store.list("machine")}
    facts = {entry.name: entry.reference.get("facts", {}) for entry in store.list(FACTS_KIND)}
    out: dict[str, list[dict]] = {}
    for member in cluster.machines.values():
        if definition is not None and member.instance != definition.instance:
            continue
        group = (member.role or member.group) if definition is not None else member.group
        spec = saved.get(member.name)
        out.setdefault(group, []).append({
            "name": member.name, "group": group, "index": member.index,
            "instance": member.instance,
            "address": spec.reference.get("address") if spec is not None else None,
            "facts": dict(facts.get(member.name) or {})})
    return out


def record_facts(store: "ManagedEntryStore", machine: "Machine", driver_url: str,
                 reference: dict[str, Any] | None = None, *, along: "ManagedEntry",
                 known: "ManagedEntry | None" = None) -> dict:
    """Ask a ready machine what it is and keep it in the state for templates and outputs.
    With the machine's ``reference``, facts already recorded for that same machine are kept
    without asking again (a no-change ``up`` of many machines runs no command for them).
    ``along``: the machine's entry, held under its lock: the facts are written with its next
    save (one write, not two, for each machine readied), over whichever version the store
    holds (a destroy that finished late may have forgotten the facts read under the lock).
    ``known``: its facts entry, already read with others (else it is read here)."""
    import json

    of = sha256_hex(json.dumps(reference, sort_keys=True, default=str).encode()
                    )[:16] if reference else None
    if known is None:
        known = store.get(FACTS_KIND, machine.name)
    if of and known is not None and known.reference.get("of") == of:
        return dict(known.reference.get("facts") or {})
    facts: dict[str, Any] = {**machine.facts(), "address": machine.address}
    entry = known or ManagedEntry(machine.name, kind=FACTS_KIND, store=store)
    entry.reference = {"driver_url": driver_url, "facts": facts, **({"of": of} if of else {})}
    along.save_with(entry)
    return facts


def forget(store: "ManagedEntryStore", names: Iterable[str], kinds: Iterable[str]) -> None:
    """Drop what was recorded about destroyed machines."""
    names = list(names)
    for kind in kinds:
        store.delete_many(kind, names)


def render_outputs(cluster: ClusterFile, store: "ManagedEntryStore") -> dict[str, str]:
    """Every output rendered with ``machines`` (by group) and ``cluster``."""
    variables = {"machines": machines_view(cluster, store),
                 "cluster": {"machines": list(cluster.machines), "groups": cluster.groups,
                             "instances": cluster.instances, "file": cluster.path}}
    return {name: render_string(text, variables, file=cluster.path, key=f"outputs.{name}")
            for name, text in cluster.outputs.items()}
