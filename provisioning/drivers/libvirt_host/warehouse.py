"""The driver's directory: a lock, machine records, and each machine's files.

Layout of the ``directory`` driver option (default ``/var/lib/provisioning/libvirt``)::

    .lock                       flock held while machines are created or removed
    keys/                       machine keys generated here when the config has none
    images/                     base disks (unless the image_cache option moves them)
    machines/ID/machine.json    the record: machine name and store id (what a re-run adopts by)
    machines/ID/disk.qcow2      the machine's overlay on its base disk
    machines/ID/seed.img        its seed disk (host key, authorized key, hostname), 0600
    machines/ID/host_key        the private host key the seed was made from, 0600
    machines/ID/console.log     the serial console

Domains are named ``prov-TAG-ID`` where TAG hashes the directory, so two warehouses sharing one
libvirtd never collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

__all__ = ["Warehouse", "MachineRecord", "hostname_for"]

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def hostname_for(name: str) -> str:
    """A valid hostname (RFC 1123 label) from a machine name."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "machine"


@dataclass
class MachineRecord:
    id: str
    name: str
    store_id: str | None
    domain: str
    hostname: str
    image: str
    key_name: str
    created_at: float = field(default_factory=time.time)


class Warehouse:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.tag = hashlib.sha256(directory.encode()).hexdigest()[:8]

    @property
    def machines_dir(self) -> str:
        return os.path.join(self.directory, "machines")

    @property
    def keys_dir(self) -> str:
        return os.path.join(self.directory, "keys")

    def machine_dir(self, machine_id: str) -> str:
        return os.path.join(self.machines_dir, machine_id)

    def path(self, machine_id: str, name: str) -> str:
        return os.path.join(self.machines_dir, machine_id, name)

    def domain_name(self, machine_id: str) -> str:
        return f"prov-{self.tag}-{machine_id}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes (flock) and this process's threads."""
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

    def records(self) -> list[MachineRecord]:
        try:
            ids = sorted(os.listdir(self.machines_dir))
        except FileNotFoundError:
            return []
        found = (self.record(i) for i in ids if not i.startswith("."))
        return [r for r in found if r is not None]

    def record(self, machine_id: str | None) -> MachineRecord | None:
        if not machine_id or "/" in machine_id:
            return None
        try:
            with open(self.path(machine_id, "machine.json"), encoding="utf-8") as handle:
                data: dict[str, Any] = json.load(handle)
            return MachineRecord(**data)
        except (OSError, ValueError, TypeError):
            return None

    def tagged(self, name: str, store_id: str | None) -> list[MachineRecord]:
        return [r for r in self.records() if r.name == name and r.store_id == store_id]

    def new_record(self, *, name: str, store_id: str | None, hostname: str, image: str,
                   key_name: str) -> MachineRecord:
        """Reserve an id and write its record. Call under ``locked``."""
        machine_id = secrets.token_hex(4)
        while os.path.exists(self.machine_dir(machine_id)):
            machine_id = secrets.token_hex(4)
        record = MachineRecord(id=machine_id, name=name, store_id=store_id,
                               domain=self.domain_name(machine_id), hostname=hostname,
                               image=image, key_name=key_name)
        directory = self.machine_dir(machine_id)
        os.makedirs(directory, mode=0o700)
        tmp = os.path.join(directory, "machine.json.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(asdict(record), handle, indent=1, sort_keys=True)
        os.replace(tmp, os.path.join(directory, "machine.json"))
        return record

    def console_tail(self, machine_id: str, size: int = 2000) -> str:
        """The end of a machine's serial console, for error messages."""
        path = self.path(machine_id, "console.log")
        try:
            with open(path, "rb") as handle:
                handle.seek(max(0, os.path.getsize(path) - size))
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return "(no console output)"

    def retire(self, machine_id: str) -> None:
        """Remove a machine's directory: renamed away under the lock, deleted after."""
        directory = self.machine_dir(machine_id)
        trash = os.path.join(self.machines_dir, f".removing-{machine_id}-{secrets.token_hex(3)}")
        with self.locked():
            if not os.path.isdir(directory):
                return
            os.rename(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)
