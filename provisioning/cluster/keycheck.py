"""Every private key a cluster file names, checked before anything is written.

A key listed under ``private_keys`` and every ``transport.key_name`` of a driver that connects
with an existing key (one that declares ``transport.key_name``) must resolve to a readable,
regular, owner-only file that parses, with its passphrase at hand. Without this, a missing,
directory, world-readable or encrypted key was found only after the machine was registered.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol

from provisioning.errors import ConfigError, ConfigProblem
from provisioning.keys import find_private_key


class Cluster(Protocol):
    """What the check reads of a loaded cluster file (``ClusterFile``, which calls it)."""

    @property
    def path(self) -> str: ...

    @property
    def private_keys(self) -> Mapping[str, Any]: ...

    @property
    def machines(self) -> Mapping[str, Any]: ...

    def config(self) -> Any: ...

__all__ = ["key_problems"]


def _named_keys(cluster: "Cluster", driver_fields: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(key name, the key path that names it), each name once."""
    for name in cluster.private_keys:
        yield name, f"private_keys.{name}"
    for definition in cluster.machines.values():
        names = driver_fields.get(definition.driver_url) or set()
        if "transport.key_name" not in names:
            continue
        transport = definition.machine_options.get("transport")
        if not isinstance(transport, Mapping):
            continue
        where = f"{definition.key}.machine_options.transport"
        if isinstance(transport.get("key_name"), str):
            yield transport["key_name"], f"{where}.key_name"
        gateway = transport.get("gateway")
        if isinstance(gateway, Mapping) and isinstance(gateway.get("key_name"), str):
            yield gateway["key_name"], f"{where}.gateway.key_name"


def key_problems(cluster: "Cluster", driver_classes: Mapping[str, Any]) -> list[ConfigProblem]:
    """One problem per key that cannot be used (``driver_classes``: driver URL -> class)."""
    fields = {url: {f.name for f in cls.machine_option_fields}
              for url, cls in driver_classes.items() if cls is not None}
    wanted = dict(_named_keys(cluster, fields))
    if not wanted:
        return []
    try:
        config = cluster.config()
    except ConfigError as exc:
        return list(exc.problems)
    problems = []
    for name, where in wanted.items():
        try:
            find_private_key(config, name)
        except ConfigError as exc:
            message = "; ".join(p.message for p in exc.problems)
            problems.append(ConfigProblem(message, file=cluster.path, key=where))
    return problems
