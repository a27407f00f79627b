"""Repairing the state by hand: ``converge state rm`` forgets machines (their resources are left
alone), ``converge state mv`` renames one or hands it to another cluster, ``converge import``
adopts a resource made outside the state. Only this cluster's entries (or unclaimed ones from
before clusters had names) can be touched; each change happens under the machine's lock, and
under why-run is only described."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from provisioning.cluster.file import MAX_NAME, NAME_RE
from provisioning.errors import ConfigError, DamagedEntry
from provisioning.inputs.schema import did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.model import MachineDefinition
    from provisioning.cluster.runner import ClusterRunner
    from provisioning.driver import Driver
    from provisioning.lifecycle import Provisioner
    from provisioning.spec import MachineSpec
    from provisioning.store.base import ManagedEntryStore

__all__ = ["forget_machines", "move_machine", "import_resource", "import_into_cluster",
           "check_import", "check_move"]

#: the longest resource id ``converge import`` takes (node ids, UUIDs, host:port all fit)
MAX_RESOURCE_ID = 255


def _entry(runner: "ClusterRunner", name: str) -> "MachineSpec":
    entry = runner.store.get("machine", name)
    if entry is None:  # a name the user typed: their input, exit 2, with the closest one
        recorded = [e.name for e in runner.store.list("machine")
                    if e.cluster in (None, runner.name)]
        raise ConfigError(f"machine {name!r} is not in the state ({runner.store.url})"
                          + did_you_mean(name, recorded), machine=name)
    if entry.cluster is not None:
        runner.check_owner(entry)  # type: ignore[arg-type]
    return entry  # type: ignore[return-value]


def forget_machines(runner: "ClusterRunner", names: list[str]) -> list[str]:
    """Remove the entries (not the machines) of ``names``; returns what was (or would be) done."""
    texts = {name: _forget_text(runner, name) for name in names}  # all checked before a change
    done = []
    for name, text in texts.items():
        handler = runner.action_handler.for_machine(name)

        def forget(name: str = name) -> None:
            with runner.store.lock(name, runner.provisioner.lock_ttl):
                runner.store.delete("machine", name)
        handler.perform_action(text, forget)
        done.append(text)
    return done


def _forget_text(runner: "ClusterRunner", name: str) -> str:
    """What forgetting ``name`` does; a damaged entry (``DamagedEntry``) can be forgotten
    too: that is the way out its error names."""
    try:
        entry = _entry(runner, name)
    except DamagedEntry as exc:
        return f"forget {name} (a damaged entry: {exc.why})"
    text = f"forget {entry.name} (its resource {entry.reference or '-'} is left as it is)"
    if entry.deposed:
        text += f", and its {len(entry.deposed)} deposed resource(s) {entry.deposed}"
    return text


def check_move(new_name: str | None, to_cluster: str | None) -> None:
    """What ``move_machine`` refuses of its arguments alone (checked before a store opens)."""
    if not new_name and not to_cluster:
        raise ConfigError("say where to: a new name (state mv OLD NEW) or --to-cluster NAME",
                          key="state mv")
    for value, what in ((new_name, "machine name"), (to_cluster, "cluster name")):
        if value and (not NAME_RE.match(value) or len(value) > MAX_NAME):
            raise ConfigError(f"invalid {what} {value!r}: lower-case letters, digits and '-'",
                              key="state mv")


def move_machine(runner: "ClusterRunner", name: str, new_name: str | None = None, *,
                 to_cluster: str | None = None) -> str:
    """Rename the entry ``name`` to ``new_name`` and/or hand it to cluster ``to_cluster``."""
    check_move(new_name, to_cluster)
    entry = _entry(runner, name)
    target = new_name or name
    if new_name and new_name != name and runner.store.get("machine", new_name) is not None:
        raise ConfigError(f"machine {new_name!r} is already in the state; pick another name or "
                          f"'converge state rm {new_name}' first", key="state mv")
    cluster = to_cluster or entry.cluster or runner.name
    text = f"move {name} (cluster {entry.cluster or 'none'}) to {target} (cluster {cluster})"

    def move() -> None:
        with runner.store.lock(name, runner.provisioner.lock_ttl):
            fresh = _entry(runner, name)
            if target != name:
                with runner.store.lock(target, runner.provisioner.lock_ttl):
                    moved = runner.provisioner.spec(target)
                    moved.reference, moved.last_action = fresh.reference, "state mv"
                    moved.last_error, moved.group = fresh.last_error, fresh.group
                    moved.generation, moved.deposed = fresh.generation, fresh.deposed
                    moved.cluster = cluster
                    runner.store.rename(moved, name)  # one transaction: never both
            else:
                fresh.cluster = cluster
                fresh.save()
    runner.action_handler.for_machine(name).perform_action(text, move)
    return text


# -- converge import ---------------------------------------------------------------------------
def _refuse_recorded(store: "ManagedEntryStore", driver: "Driver", resource_id: str | None,
                     name: str) -> None:
    """``ConfigError`` when the state records ``resource_id`` of this driver under another name
    (of any cluster): two entries for one resource would destroy it twice."""
    if not resource_id:
        return
    for entry in store.list("machine"):
        reference = entry.reference or {}
        if entry.name != name and reference.get("driver_url") == driver.driver_url and \
                driver.resource_id(reference) == resource_id:
            owner = getattr(entry, "cluster", None)
            raise ConfigError(f"{resource_id} is already in the state as machine {entry.name!r}"
                              + (f" of cluster {owner!r}" if owner else "")
                              + f"; 'converge state mv {entry.name} {name}' renames that entry "
                              "instead", key="import", machine=name)


def import_resource(provisioner: "Provisioner", driver: "Driver", name: str, resource_id: str,
                    options: Mapping[str, Any] = {}, *,
                    claim: Callable[["MachineSpec"], None] | None = None
                    ) -> "MachineSpec | None":
    """Adopt the existing resource ``resource_id`` into the state as machine ``name``
    through ``driver.import_machine``, under the machine's lock. Refused (``ConfigError``)
    when ``name`` is in the state already or the resource is recorded under another name;
    ``MachineNotFound`` when the driver finds no such resource. ``claim`` marks the entry
    before it is saved (the cluster sets its name and group). Returns the saved spec (None
    under why-run: only the action is reported)."""
    resource_id = _checked_id(resource_id, name)
    store = provisioner.store
    if store.get("machine", name) is not None:
        raise ConfigError(f"machine {name!r} is already in the state ({store.url}); import "
                          f"under another name, or 'converge state rm {name}' first",
                          key="import", machine=name)
    _refuse_recorded(store, driver, driver.resolve_resource_id(resource_id, name), name)

    def call(d: "Driver", handler: Any, spec: "MachineSpec", opts: Mapping[str, Any]) -> Any:
        if spec.exists:  # another run saved it since the check
            raise ConfigError(f"machine {name!r} was saved in the state meanwhile",
                              key="import", machine=name)
        driver.import_machine(handler, spec, opts, resource_id)
        if not spec.exists:
            return None  # why-run: reported, not done
        try:
            _refuse_recorded(store, driver, driver.resource_id(spec.reference), name)
        except ConfigError:
            spec.reference = {}  # nothing is saved
            raise
        if claim is not None:
            claim(spec)
        return spec
    result: "MachineSpec | None" = provisioner.run_locked("import", driver, name, options,
                                                          call)
    return result


def _checked_id(resource_id: str, name: str) -> str:
    resource_id = str(resource_id).strip()
    if not resource_id:
        raise ConfigError("say which resource to import: converge import NAME RESOURCE_ID",
                          key="import")
    if len(resource_id) > MAX_RESOURCE_ID or not resource_id.isprintable():
        shown = repr(resource_id[:40]) + ("..." if len(resource_id) > 40 else "")
        raise ConfigError(f"{shown} is not a resource id (at most "
                          f"{MAX_RESOURCE_ID} printable characters): give the id 'converge "
                          "drivers describe' or the provider shows", key="import",
                          machine=name)
    return resource_id


def check_import(runner: "ClusterRunner", name: str, resource_id: str) -> None:
    """What ``import_into_cluster`` refuses before it writes: ``name`` is not one machine of
    the file, the id is malformed, or the driver finds no such resource (``MachineNotFound``).
    Reads only, so the CLI asks it before the state file is opened for writing."""
    definition = _importable(runner, name)
    runner.driver(definition.driver_url).resolve_resource_id(_checked_id(resource_id, name),
                                                              name)


def _importable(runner: "ClusterRunner", name: str) -> "MachineDefinition":
    cluster = runner.cluster
    if name not in cluster.machines:
        chosen = cluster.select([name])  # ConfigError with a did-you-mean for unknown names
        raise ConfigError(f"{name!r} is a group of {len(chosen)} machines; import one machine "
                          f"at a time ({', '.join(d.name for d in chosen[:3])}...)",
                          file=cluster.path, key="import", machine=name)
    return cluster.machines[name]


def import_into_cluster(runner: "ClusterRunner", name: str, resource_id: str
                        ) -> "MachineSpec | None":
    """``converge import NAME RESOURCE_ID``: ``name`` is a machine of the cluster file (its
    driver and machine options are used); the entry is saved as this cluster's."""
    definition = _importable(runner, name)

    def claim(spec: "MachineSpec") -> None:
        spec.cluster, spec.group = runner.name, definition.group
    return import_resource(runner.provisioner, runner.driver(definition.driver_url), name,
                           resource_id, definition.machine_options, claim=claim)
