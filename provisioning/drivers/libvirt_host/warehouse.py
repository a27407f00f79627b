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

import os
import secrets
import shutil
import time
from dataclasses import field

from provisioning.drivers.machine_dirs import MachineDirs, hostname_for
from provisioning.inputs.records import record

__all__ = ["Warehouse", "MachineRecord", "hostname_for"]


@record
class MachineRecord:
    id: str
    name: str
    store_id: str | None
    domain: str
    hostname: str
    image: str
    key_name: str
    created_at: float = field(default_factory=time.time)


class Warehouse(MachineDirs[MachineRecord]):
    record_type = MachineRecord

    def path(self, machine_id: str, name: str) -> str:
        return os.path.join(self.machines_dir, machine_id, name)

    def domain_name(self, machine_id: str) -> str:
        return f"prov-{self.tag}-{machine_id}"

    def new_record(self, *, name: str, store_id: str | None, hostname: str, image: str,
                   key_name: str) -> MachineRecord:
        """Reserve an id and write its record. Call under ``locked``."""
        machine_id = self.new_id()
        record = MachineRecord(id=machine_id, name=name, store_id=store_id,
                               domain=self.domain_name(machine_id), hostname=hostname,
                               image=image, key_name=key_name)
        os.makedirs(self.machine_dir(machine_id), mode=0o700)
        self.write_record(record)
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
