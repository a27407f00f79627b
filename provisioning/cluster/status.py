"""``converge status``: each machine of one cluster as the state and its driver see it, with
``refresh`` a drift report (missing, stopped, options changed versus the wish), and the
inventory of every cluster in a store (``--all-clusters``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.spec import MachineSpec
    from provisioning.store.base import ManagedEntryStore

__all__ = ["cluster_status", "all_clusters_status", "drift"]

#: machine options a driver may record in a reference as what the machine really is
OBSERVED_OPTIONS = ("size", "image")


def drift(state: str, spec: "MachineSpec | None", options: dict[str, Any] | None) -> list[str]:
    """What differs between the wish, the record and the warehouse, in words ([] when none)."""
    deposed = [f"{len(spec.deposed)} deposed resource(s) of an unfinished replace: the "
               "next up destroys them"] if spec is not None and spec.deposed else []
    if spec is None or not spec.exists:
        return (["not created"] if options is not None else []) + deposed
    found = deposed
    if state == "missing":
        found.append("missing: its resource is gone at the provider")
    elif state == "stopped":
        found.append("stopped")
    if options is None:
        found.append("not in the cluster file any more")
        return found
    for key in OBSERVED_OPTIONS:
        recorded, wished = spec.reference.get(key), options.get(key)
        if recorded is not None and wished is not None and recorded != wished:
            found.append(f"{key} is {recorded}, the file wishes {wished}")
    return found


def cluster_status(runner: Any, *, refresh: bool = False) -> list[dict[str, Any]]:
    """One row per machine of ``runner``'s cluster (a ``ClusterRunner``: typed loosely, as the
    runner imports this module), in the file or saved as this cluster's: name, driver URL,
    state, address, last action, last error, whether it is in the file, who holds its lock
    (and with ``refresh``, ``drift``). Machines of other clusters never appear. One store read
    for the machines, one for the locks, one ``machine_states`` call per driver."""
    cluster = runner.cluster
    every = {e.name: e for e in runner.store.list("machine")}
    saved = {n: e for n, e in every.items() if runner.owns(e)}
    names = list(cluster.machines) + [n for n in saved if n not in cluster.machines]
    locks = runner.store.locks()
    states = runner.states([spec for spec in saved.values() if spec.exists])
    rows = []
    for name in names:
        definition = cluster.machines.get(name)
        spec = saved.get(name)
        url = (spec.driver_url if spec is not None and spec.driver_url else
               runner.canonical_url(definition.driver_url) if definition is not None else None)
        foreign = every.get(name) if spec is None else None
        state = (f"belongs to cluster {foreign.cluster}" if foreign is not None
                 else states.get(name, "not created"))
        row = {"name": name, "driver_url": url, "state": state,
               "address": spec.reference.get("address") if spec is not None else None,
               "last_action": spec.last_action if spec is not None else None,
               "last_error": spec.last_error if spec is not None else None,
               "in_cluster_file": definition is not None, "locked_by": locks.get(name),
               "cluster": runner.name,
               "deposed": len(spec.deposed) if spec is not None else 0}
        if refresh:
            row["drift"] = drift(state, spec, dict(definition.machine_options)
                                 if definition is not None else None)
        rows.append(row)
    return rows


def all_clusters_status(store: "ManagedEntryStore") -> list[dict[str, Any]]:
    """Every machine in the store with its cluster (None: saved before clusters had names),
    from the state alone (no driver is asked)."""
    rows = []
    for entry in store.list("machine"):
        rows.append({"cluster": entry.cluster, "name": entry.name, "group": entry.group,
                     "driver_url": entry.driver_url,
                     "address": entry.reference.get("address"),
                     "last_action": entry.last_action, "last_error": entry.last_error})
    rows.sort(key=lambda r: (r["cluster"] or "", r["name"]))
    return rows
