"""Repairing the state by hand: ``converge state rm`` forgets machines (their resources are left
alone), ``converge state mv`` renames one or hands it to another cluster. Only this cluster's
entries (or unclaimed ones from before clusters had names) can be touched; each change happens
under the machine's lock, and under why-run is only described."""

from __future__ import annotations

from typing import TYPE_CHECKING

from provisioning.errors import ConfigError, MachineNotFound

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.runner import ClusterRunner
    from provisioning.spec import MachineSpec

__all__ = ["forget_machines", "move_machine"]


def _entry(runner: "ClusterRunner", name: str) -> "MachineSpec":
    entry = runner.store.get("machine", name)
    if entry is None:
        raise MachineNotFound(f"machine {name!r} is not in the state ({runner.store.url})",
                              machine=name)
    if entry.cluster is not None:
        runner.check_owner(entry)  # type: ignore[arg-type]
    return entry  # type: ignore[return-value]


def forget_machines(runner: "ClusterRunner", names: list[str]) -> list[str]:
    """Remove the entries (not the machines) of ``names``; returns what was (or would be) done."""
    entries = [_entry(runner, name) for name in names]  # every name checked before any change
    done = []
    for entry in entries:
        text = f"forget {entry.name} (its resource {entry.reference or '-'} is left as it is)"
        handler = runner.action_handler.for_machine(entry.name)

        def forget(name: str = entry.name) -> None:
            with runner.store.lock(name, runner.provisioner.lock_ttl):
                runner.store.delete("machine", name)
        handler.perform_action(text, forget)
        done.append(text)
    return done


def move_machine(runner: "ClusterRunner", name: str, new_name: str | None = None, *,
                 to_cluster: str | None = None) -> str:
    """Rename the entry ``name`` to ``new_name`` and/or hand it to cluster ``to_cluster``."""
    from provisioning.cluster.file import MAX_NAME, NAME_RE

    if not new_name and not to_cluster:
        raise ConfigError("say where to: a new name (state mv OLD NEW) or --to-cluster NAME",
                          key="state mv")
    for value, what in ((new_name, "machine name"), (to_cluster, "cluster name")):
        if value and (not NAME_RE.match(value) or len(value) > MAX_NAME):
            raise ConfigError(f"invalid {what} {value!r}: lower-case letters, digits and '-'",
                              key="state mv")
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
                    moved.cluster = cluster
                    moved.save()
                    runner.store.delete("machine", name)
            else:
                fresh.cluster = cluster
                fresh.save()
    runner.action_handler.for_machine(name).perform_action(text, move)
    return text
