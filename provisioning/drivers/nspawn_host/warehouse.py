"""The warehouse directory: a lock, machine records, address slots and host-wide names.

Layout of ``DIR`` (``nspawn:DIR``)::

    .lock                      flock held while machines are created or removed
    keys/                      machine keys generated here when the config has none
    images/                    the image cache (unless the driver option image_cache moves it)
    machines/ID/machine.json   the record: the machine's name and store id (the tag a re-run
                               adopts by), its slot, address, namespace and image
    machines/ID/upper, work    the overlay's writable layer (kept across stop/start)
    machines/ID/merged         where the overlay is mounted, privately, while it runs
    machines/ID/console.log    systemd-nspawn's output
    machines/.creating-ID      a machine directory being made (renamed to ID with its record;
                               one a killed run left is removed by the next create)
    machines/.removing-ID-*    a machine directory being deleted (finished by the next destroy)

Host-wide names (namespaces, veths, cgroups) carry a hash of the warehouse path, so two
warehouses on one host never collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator

from provisioning.errors import ConfigError, ProviderError
from provisioning.faults import checkpoint

__all__ = ["Warehouse", "MachineRecord", "DEFAULT_SUBNET", "hostname_for"]

#: the name a machine directory has while ``new_record`` builds it
CREATING_PREFIX = ".creating-"
#: a /24 inside 198.18.0.0/15 (RFC 2544, reserved for benchmarking: no real network uses it)
DEFAULT_SUBNET = "198.18.77.0/24"
_RESERVED = ipaddress.ip_network("198.18.0.0/15")

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def hostname_for(name: str) -> str:
    """A valid hostname (RFC 1123 label) from a machine name."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "machine"


@dataclass
class MachineRecord:
    """What the warehouse keeps about one machine, beside its directories."""

    id: str
    name: str
    store_id: str | None
    slot: int
    address: str
    prefix: int
    gateway: str
    hostname: str
    netns: str
    veth: str
    cgroup: str
    image: str
    lower: str
    key_name: str
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


class Warehouse:
    """One ``nspawn:DIR``: paths, the lock, records and slots."""

    def __init__(self, directory: str, subnet: str = DEFAULT_SUBNET) -> None:
        self.directory = directory
        self.tag = hashlib.sha256(directory.encode()).hexdigest()[:8]
        try:
            self.subnet = ipaddress.ip_network(subnet, strict=True)
        except ValueError as exc:
            raise ConfigError(f"subnet {subnet!r} is not an IPv4 network in CIDR form "
                              f"(for example {DEFAULT_SUBNET}): {exc}",
                              key="driver_options.subnet") from exc
        if self.subnet.version != 4 or self.subnet.num_addresses < 8:
            raise ConfigError(f"subnet {subnet!r} must be an IPv4 network of at least /29",
                              key="driver_options.subnet")
        self.gateway = str(next(self.subnet.hosts()))

    # -- paths and names -----------------------------------------------------------------------
    @property
    def machines_dir(self) -> str:
        return os.path.join(self.directory, "machines")

    @property
    def keys_dir(self) -> str:
        return os.path.join(self.directory, "keys")

    @property
    def hub_netns(self) -> str:
        return f"prov-{self.tag}-hub"

    def machine_dir(self, machine_id: str) -> str:
        return os.path.join(self.machines_dir, machine_id)

    def netns_name(self, machine_id: str) -> str:
        return f"prov-{self.tag}-{machine_id}"

    def cgroup_name(self, machine_id: str) -> str:
        return f"provisioning/{self.tag}-{machine_id}"

    # -- the lock --------------------------------------------------------------------------------
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

    # -- records -------------------------------------------------------------------------------
    def records(self) -> list[MachineRecord]:
        out = []
        try:
            ids = sorted(os.listdir(self.machines_dir))
        except FileNotFoundError:
            return out
        for machine_id in ids:
            if machine_id.startswith("."):
                continue  # being removed
            record = self.record(machine_id)
            if record is not None:
                out.append(record)
        return out

    def record(self, machine_id: str | None) -> MachineRecord | None:
        if not machine_id or "/" in machine_id:
            return None
        try:
            with open(os.path.join(self.machine_dir(machine_id), "machine.json"),
                      encoding="utf-8") as handle:
                data: dict[str, Any] = json.load(handle)
            return MachineRecord(**data)
        except (OSError, ValueError, TypeError):
            return None

    def tagged(self, name: str, store_id: str | None) -> list[MachineRecord]:
        """Records created for machine ``name`` of store ``store_id`` (what a re-run adopts)."""
        return [r for r in self.records() if r.name == name and r.store_id == store_id]

    def new_record(self, *, name: str, store_id: str | None, hostname: str, image: str,
                   lower: str, key_name: str) -> MachineRecord:
        """Reserve an id and the lowest free address; write the record. Call under ``locked``."""
        used = {r.slot for r in self.records()}
        hosts = self.subnet.num_addresses - 3  # network, gateway, broadcast
        slot = next((i for i in range(hosts) if i not in used), None)
        if slot is None:
            raise ProviderError(f"subnet {self.subnet} is full ({hosts} machines); destroy some "
                                "or set the driver option 'subnet' to a larger network inside "
                                "198.18.0.0/15", provider="nspawn", machine=name)
        machine_id = secrets.token_hex(4)
        while os.path.exists(self.machine_dir(machine_id)):
            machine_id = secrets.token_hex(4)
        record = MachineRecord(
            id=machine_id, name=name, store_id=store_id, slot=slot,
            address=str(self.subnet.network_address + 2 + slot), prefix=self.subnet.prefixlen,
            gateway=self.gateway, hostname=hostname, netns=self.netns_name(machine_id),
            veth=f"v{machine_id}", cgroup=self.cgroup_name(machine_id), image=image,
            lower=lower, key_name=key_name)
        # built under a tagged name and renamed into place with its record: a run killed
        # midway leaves only a ``.creating-*`` directory, which the next create removes
        self.reclaim_unfinished()
        building = os.path.join(self.machines_dir, f"{CREATING_PREFIX}{machine_id}")
        os.makedirs(self.machines_dir, exist_ok=True)
        os.mkdir(building, 0o700)
        for part in ("upper", "work", "merged"):
            os.mkdir(os.path.join(building, part), 0o755)
        with open(os.path.join(building, "machine.json"), "w", encoding="utf-8") as handle:
            handle.write(record.to_json())
        checkpoint("during_create", machine=name)
        os.rename(building, self.machine_dir(machine_id))
        return record

    def reclaim_unfinished(self) -> list[str]:
        """Remove machine directories a killed create left half-made (``.creating-*``: only
        ``new_record`` makes them, under the lock, so holding the lock means their creator is
        dead). Call under ``locked``; returns what was removed."""
        removed = []
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.listdir(self.machines_dir)):
                if entry.startswith(CREATING_PREFIX):
                    path = os.path.join(self.machines_dir, entry)
                    shutil.rmtree(path)
                    removed.append(path)
        return removed

    def retag(self, record: MachineRecord, name: str, store_id: str | None) -> MachineRecord:
        """Mark the machine as ``name``'s of store ``store_id`` (what ``tagged`` finds): an
        import takes it over. Call under ``locked``."""
        record = replace(record, name=name, store_id=store_id)
        directory = self.machine_dir(record.id)
        tmp = os.path.join(directory, "machine.json.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(record.to_json())
        os.replace(tmp, os.path.join(directory, "machine.json"))
        return record

    def retire_dir(self, machine_id: str) -> str | None:
        """Take a machine's directory out of the warehouse at once (a rename, under the lock);
        returns where it went, for ``purge`` to delete outside the lock."""
        directory = self.machine_dir(machine_id)
        if not os.path.isdir(directory):
            return None
        trash = os.path.join(self.machines_dir, f".removing-{machine_id}-{secrets.token_hex(3)}")
        os.rename(directory, trash)
        return trash

    @staticmethod
    def purge(path: str | None) -> None:
        if path and os.path.isdir(path):
            shutil.rmtree(path)

    def check_subnet_unchanged(self) -> None:
        """Machines keep their addresses: refuse a new subnet while any machine exists."""
        for record in self.records():
            if f"{record.gateway}/{record.prefix}" != f"{self.gateway}/{self.subnet.prefixlen}":
                raise ConfigError(
                    f"this warehouse's machines use subnet of gateway {record.gateway}/"
                    f"{record.prefix}, but the driver option subnet is {self.subnet}; destroy "
                    "its machines first or keep the old subnet", key="driver_options.subnet")


def warn_outside_reserved(subnet: ipaddress.IPv4Network) -> str | None:
    if not subnet.subnet_of(_RESERVED):  # type: ignore[arg-type]
        return (f"subnet {subnet} is outside 198.18.0.0/15; it only exists inside this "
                "warehouse's namespaces, but machines cannot reach real hosts in it")
    return None
