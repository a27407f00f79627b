"""A warehouse of machine directories on this host, shared by ``nspawn:`` and ``libvirt:``.

``DIR/machines/ID/machine.json`` is a machine's record (its name and store id: what a re-run
adopts by); ``DIR/.lock`` is held, across processes and this process's threads, while machines
are created or removed; ``DIR/keys/`` holds keys generated for machines. Each driver's
warehouse adds its own record fields and what else lives in a machine's directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
from dataclasses import asdict, replace
from typing import Any, ClassVar, Generic, Iterator, Protocol, TypeVar

__all__ = ["MachineDirs", "hostname_for"]

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def hostname_for(name: str) -> str:
    """A valid hostname (RFC 1123 label) from a machine name."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "machine"


class _Record(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]
    id: str
    name: str
    store_id: str | None


R = TypeVar("R", bound=_Record)


class MachineDirs(Generic[R]):
    """Paths, the lock and the records of one warehouse directory."""

    #: the dataclass a ``machine.json`` holds
    record_type: ClassVar[type[Any]]

    def __init__(self, directory: str) -> None:
        self.directory = directory
        #: a hash of the directory: host-wide names made from it never collide between warehouses
        self.tag = hashlib.sha256(directory.encode()).hexdigest()[:8]

    @property
    def machines_dir(self) -> str:
        return os.path.join(self.directory, "machines")

    @property
    def keys_dir(self) -> str:
        return os.path.join(self.directory, "keys")

    def machine_dir(self, machine_id: str) -> str:
        return os.path.join(self.machines_dir, machine_id)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes (flock) and across this process's threads."""
        with _thread_locks_guard:
            thread_lock = _thread_locks.setdefault(self.directory, threading.Lock())
        with thread_lock:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            with open(os.path.join(self.directory, ".lock"), "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def records(self) -> list[R]:
        """Every machine's record (directories starting with '.' are being removed)."""
        try:
            ids = sorted(os.listdir(self.machines_dir))
        except FileNotFoundError:
            return []
        found = (self.record(i) for i in ids if not i.startswith("."))
        return [r for r in found if r is not None]

    def record(self, machine_id: str | None) -> R | None:
        if not machine_id or "/" in machine_id:
            return None
        try:
            with open(os.path.join(self.machine_dir(machine_id), "machine.json"),
                      encoding="utf-8") as handle:
                data: dict[str, Any] = json.load(handle)
            record: R = self.record_type(**data)
            return record
        except (OSError, ValueError, TypeError):
            return None

    def tagged(self, name: str, store_id: str | None) -> list[R]:
        """Records created for machine ``name`` of store ``store_id`` (what a re-run adopts)."""
        return [r for r in self.records() if r.name == name and r.store_id == store_id]

    def retag(self, record: R, name: str, store_id: str | None) -> R:
        """Mark the machine as ``name``'s of store ``store_id`` (what ``tagged`` finds): an
        import takes it over. Call under ``locked``."""
        record = replace(record, name=name, store_id=store_id)
        self.write_record(record)
        return record

    def new_id(self) -> str:
        """An id no machine directory has. Call under ``locked``."""
        machine_id = secrets.token_hex(4)
        while os.path.exists(self.machine_dir(machine_id)):
            machine_id = secrets.token_hex(4)
        return machine_id

    def write_record(self, record: R, directory: str | None = None) -> None:
        """Replace ``machine.json`` of the machine's directory (or of ``directory``, where a
        machine is being built), atomically."""
        path = os.path.join(directory or self.machine_dir(record.id), "machine.json")
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(asdict(record), handle, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)


class MachineDirsHooks:
    """Warehouse hooks ``nspawn:`` and ``libvirt:`` share (mixed in before ``Driver``): an
    existing machine keeps its image, and a record an earlier run made for this machine is
    adopted, and finished if half-made, inside ``create_resource`` under the warehouse lock."""

    warehouse: MachineDirs[Any]
    #: how reports name one machine of this driver ("an nspawn machine")
    machine_noun: ClassVar[str]

    def wished_image(self, machine_spec: Any, machine_options: Any) -> str:
        """The image ``machine_options`` ask for (options validated on the way)."""
        raise NotImplementedError

    def describe_new(self, machine_spec: Any, machine_options: Any) -> str:
        """The description of creating a new machine."""
        raise NotImplementedError

    def compare_with_wish(self, action_handler: Any, machine_spec: Any,
                          machine_options: Any) -> None:
        record = self.warehouse.record(machine_spec.reference.get("machine_id"))
        image = self.wished_image(machine_spec, machine_options)
        if record is not None and record.image != image:
            action_handler.report_progress(
                f"machine {record.id} runs image {record.image}, wished {image}: "
                f"{self.machine_noun} cannot change its image; destroy and re-create it")

    def describe_create(self, machine_spec: Any, machine_options: Any) -> str:
        tagged = self.warehouse.tagged(machine_spec.resource_name, machine_spec.store_id)
        if tagged:
            return f"adopt machine {tagged[0].id} created for this machine by an earlier run"
        return self.describe_new(machine_spec, machine_options)
