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
import ipaddress
import os
import secrets
import shutil
import time
from dataclasses import field

from provisioning.drivers.machine_dirs import MachineDirs, hostname_for
from provisioning.errors import ConfigError, ProviderError
from provisioning.faults import checkpoint
from provisioning.inputs.records import record

__all__ = ["Warehouse", "MachineRecord", "DEFAULT_SUBNET", "hostname_for"]

#: the name a machine directory has while ``new_record`` builds it
CREATING_PREFIX = ".creating-"
#: a /24 inside 198.18.0.0/15 (RFC 2544, reserved for benchmarking: no real network uses it)
DEFAULT_SUBNET = "198.18.77.0/24"
_RESERVED = ipaddress.ip_network("198.18.0.0/15")


@record
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


class Warehouse(MachineDirs[MachineRecord]):
    """One ``nspawn:DIR``: paths, the lock, records and slots."""

    record_type = MachineRecord

    def __init__(self, directory: str, subnet: str = DEFAULT_SUBNET) -> None:
        super().__init__(directory)
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

    # -- host-wide names -------------------------------------------------------------------------
    @property
    def hub_netns(self) -> str:
        return f"prov-{self.tag}-hub"

    def netns_name(self, machine_id: str) -> str:
        return f"prov-{self.tag}-{machine_id}"

    def cgroup_name(self, machine_id: str) -> str:
        return f"provisioning/{self.tag}-{machine_id}"

    # -- records -------------------------------------------------------------------------------
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
        machine_id = self.new_id()
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
        self.write_record(record, building)
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
        for existing in self.records():
            if f"{existing.gateway}/{existing.prefix}" != f"{self.gateway}/{self.subnet.prefixlen}":
                raise ConfigError(
                    f"this warehouse's machines use subnet of gateway {existing.gateway}/"
                    f"{existing.prefix}, but the driver option subnet is {self.subnet}; destroy "
                    "its machines first or keep the old subnet", key="driver_options.subnet")


def warn_outside_reserved(subnet: ipaddress.IPv4Network) -> str | None:
    if not subnet.subnet_of(_RESERVED):  # type: ignore[arg-type]
        return (f"subnet {subnet} is outside 198.18.0.0/15; it only exists inside this "
                "warehouse's namespaces, but machines cannot reach real hosts in it")
    return None
