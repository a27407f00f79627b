"""MachineSpec: the saved record of one machine (chef-provisioning's ManagedEntry).

The ``reference`` is plain JSON owned by the driver: how to find the machine again (provider id,
PID, namespace, pinned host key...). ``driver_url`` in it is required once the machine exists.
The core owns the rest: when it was last acted on, how that went, and the store's version used for
optimistic concurrency (a save over a newer version raises ``StateConflict``).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import field
from typing import Any, Protocol, Sequence

from provisioning.errors import ConfigError, DamagedEntry
from provisioning.inputs.records import record

__all__ = ["ManagedEntry", "MachineSpec", "ImageSpec", "EntryStore", "GENERATION_MARK",
           "machine_of_resource"]

#: between a machine's name and its generation in ``resource_name`` (``web-1~2``)
GENERATION_MARK = "~"

#: keys that must never be saved in a reference (secrets belong in config, not in state)
SECRET_KEYS = frozenset({"password", "passphrase", "secret", "secret_key", "access_key_secret",
                         "token", "private_key_pem"})


class EntryStore(Protocol):
    """What an entry needs of the store it came from (``provisioning.store``'s
    ``ManagedEntryStore``, a layer above, implements it)."""

    @property
    def store_id(self) -> str: ...

    def save(self, entry: "ManagedEntry", *, release: Any = None) -> None: ...

    def save_many(self, entries: Sequence["ManagedEntry"]) -> None: ...

    def delete(self, kind: str, name: str) -> None: ...

    def list(self, kind: str = "machine") -> Sequence["ManagedEntry"]: ...


@record
class ManagedEntry:
    """One entry in the state store, of a kind (``machine`` now; ``image`` later)."""

    name: str
    reference: dict[str, Any] = field(default_factory=dict)
    kind: str = "machine"
    last_action: str | None = None
    last_error: str | None = None
    updated_at: float | None = None
    version: int = 0
    store: EntryStore | None = field(default=None, repr=False, compare=False)
    #: the cluster (``name:`` of its cluster file) this entry belongs to; None: saved before
    #: clusters had names, claimed by the first cluster file that names the machine
    cluster: str | None = None
    #: the machine group of the cluster file (``web`` for ``web-3``): scale-down reads it
    group: str | None = None
    #: how many times ``create_before_destroy`` replaced the machine: drivers tag its resource
    #: with ``resource_name``, so the new resource is never the old one adopted by its tag
    generation: int = 0
    #: references of resources a create-before-destroy replace moved aside ("deposed"): still
    #: this machine's, destroyed once the new resource is up (by a re-run after a crash)
    deposed: list[dict[str, Any]] = field(default_factory=list)
    #: the data as the store gave it (``data_json`` text), to tell an unchanged entry
    _read_data: str | None = field(default=None, init=False, repr=False, compare=False)
    #: entries to write with this one's next save (``save_with``)
    _along: list["ManagedEntry"] = field(default_factory=list, init=False, repr=False,
                                         compare=False)

    @property
    def driver_url(self) -> str | None:
        return self.reference.get("driver_url")

    @property
    def store_id(self) -> str | None:
        """The store's identity: drivers tag provider resources with it (with the name), so a
        re-run finds what a crashed run created."""
        return self.store.store_id if self.store is not None else None

    @property
    def resource_name(self) -> str:
        """The name drivers tag the machine's resource with: the machine's name, with
        ``~GENERATION`` once a create-before-destroy replace made a second resource beside the
        first (machine names cannot hold ``~``, so it names no other machine)."""
        return f"{self.name}{GENERATION_MARK}{self.generation}" if self.generation else self.name

    @property
    def exists(self) -> bool:
        """True once a driver has recorded a reference."""
        return bool(self.reference)

    def save(self, action_handler: Any = None, *, release: Any = None) -> None:
        """Persist now (drivers call this right after creating a resource, before waiting).
        ``release``: a held lock on this entry, released with the save (in one transaction
        where the store can), and released even when the save fails."""
        try:
            if self.store is None:
                return
            self._check_saveable()
            self.updated_at = time.time()
            if release is None:
                self.store.save(self)
            else:
                self.store.save(self, release=release)
        finally:
            if release is not None:
                release.release()  # nothing left to do once the store released it

    def save_with(self, entry: "ManagedEntry") -> None:
        """Write ``entry`` with this entry's next save, in its transaction (one round trip for
        both where the store can), over whichever version the store holds: it records what
        this entry's work found (a machine's facts) under this entry's lock, so the copy in
        hand is the newest."""
        self._along.append(entry)

    def unchanged(self) -> bool:
        """True when saving would write what the store holds already (the same data as read;
        only ``updated_at`` would move, nothing waits in ``save_with``): a no-change run
        writes nothing for it."""
        return bool(self.version) and not self._along and self._read_data is not None and \
            self._read_data == self.data_json()

    def _check_saveable(self) -> None:
        if self.reference and not self.reference.get("driver_url"):
            raise ConfigError(f"reference of {self.kind} {self.name!r} has no driver_url; "
                              "a driver must record its canonical URL", key="reference.driver_url")
        _reject_secrets(self.reference, f"{self.kind} {self.name!r}")
        _reject_secrets(self.deposed, f"{self.kind} {self.name!r}", "deposed")

    def delete(self) -> None:
        """Forget this entry in the store (after destroy)."""
        self.reference = {}
        if self.store is not None:
            self.store.delete(self.kind, self.name)
            self.version = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "reference": copy.deepcopy(self.reference),
            "last_action": self.last_action,
            "last_error": self.last_error,
            "updated_at": self.updated_at,
            "version": self.version,
            "cluster": self.cluster,
            "group": self.group,
            "generation": self.generation,
            "deposed": copy.deepcopy(self.deposed),
        }

    def data_json(self) -> str:
        """What a store writes: everything but name, kind and version (those are columns)."""
        body: dict[str, Any] = {"reference": self.reference, "last_action": self.last_action,
                                "last_error": self.last_error, "updated_at": self.updated_at}
        if self.cluster is not None:
            body.update(cluster=self.cluster, group=self.group)
        if self.generation:
            body["generation"] = self.generation
        if self.deposed:
            body["deposed"] = self.deposed
        return json.dumps(body, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_row(cls, kind: str, name: str, data: str, version: int,
                 store: EntryStore | None = None) -> "ManagedEntry":
        body = _decoded(kind, name, data, store)
        entry_cls = _ENTRY_CLASSES.get(kind, ManagedEntry)
        entry = entry_cls(name=name, reference=body.get("reference") or {}, kind=kind,
                          last_action=body.get("last_action"), last_error=body.get("last_error"),
                          updated_at=body.get("updated_at"), version=version, store=store,
                          cluster=body.get("cluster"), group=body.get("group"),
                          generation=int(body.get("generation") or 0),
                          deposed=list(body.get("deposed") or []))
        entry._read_data = data
        return entry


@record
class MachineSpec(ManagedEntry):
    """The saved record of one machine."""

    kind: str = "machine"


@record
class ImageSpec(ManagedEntry):
    """The saved record of one machine image: the driver's ``reference`` (``image_id``...) and
    the core's ``key`` (a digest of the image's whole definition) in it."""

    kind: str = "image"


#: the entry fields that, when present and not None, must be of these types
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "reference": (dict,), "cluster": (str,), "group": (str,), "generation": (int,),
    "deposed": (list,), "last_action": (str,), "last_error": (str,), "updated_at": (int, float)}


def _decoded(kind: str, name: str, data: str, store: Any) -> dict[str, Any]:
    """An entry's saved body, or ``DamagedEntry`` saying what is wrong with it."""
    try:
        body = json.loads(data)
    except ValueError:
        body, why = None, "it is not JSON"
    else:
        why = f"expected a JSON object, got {type(body).__name__}"
    if isinstance(body, dict):
        wrong = entry_field_problems(body)
        if not wrong:
            return body
        why = ", ".join(wrong)
    raise DamagedEntry(kind, name, why, state=getattr(store, "url", None))


def entry_field_problems(body: dict[str, Any]) -> list[str]:
    """The fields of an entry's saved body that are not of their type ("reference is str")."""
    return [f"{key} is {type(body[key]).__name__}" for key, types in _FIELD_TYPES.items()
            if body.get(key) is not None and (not isinstance(body[key], types)
                                              or isinstance(body[key], bool))]


def machine_of_resource(resource_name: str) -> str:
    """The machine a ``resource_name`` belongs to (``web-1~2`` -> ``web-1``)."""
    return resource_name.split(GENERATION_MARK, 1)[0]


_ENTRY_CLASSES: dict[str, type[ManagedEntry]] = {"machine": MachineSpec, "image": ImageSpec}


def _reject_secrets(value: Any, where: str, path: str = "reference") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() in SECRET_KEYS and item:
                raise ConfigError(f"{where}: refusing to save a secret ({path}.{key}) in state; "
                                  "keep secrets in config or the environment", key=f"{path}.{key}")
            _reject_secrets(item, where, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_secrets(item, where, f"{path}[{index}]")
