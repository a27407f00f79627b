"""``converge import NAME DOMAIN`` for the ``libvirt:`` driver (a mixin of ``LibvirtDriver``).

``DOMAIN`` is a domain's name (``prov-TAG-ID``, what ``virsh list`` shows) or UUID, or the
machine id of this driver's directory (``DIR/machines/ID``), or the machine name it was made for
when one machine has it; ``resource_id`` records the domain name. Only a machine of this
driver's directory can be imported: the driver boots a domain from the overlay, seed disk and
kernel it made, and defines it again at each start. A domain it did not make (no provisioning
metadata) or made with another ``directory`` is refused, with the way out.

The host key pinned is the one this driver generated into the machine's directory before its
first boot (the seed disk's): never one learnt over the network. Read back from libvirt: whether
the domain runs, its memory, CPUs, accelerator, SSH port and forwarded ports. The machine's
record and the domain's metadata are retagged for the new machine and store.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from typing import Any, Callable, Mapping

from provisioning.drivers.libvirt_host.conn import libvirt_module, mapped
from provisioning.drivers.libvirt_host.domain import METADATA_NS, METADATA_PREFIX
from provisioning.drivers.libvirt_host.host import PROVIDER
from provisioning.drivers.libvirt_host.snapshots import live_ssh_port
from provisioning.drivers.libvirt_host.warehouse import MachineRecord, Warehouse
from provisioning.errors import ConfigError, MachineNotFound, ProviderError

__all__ = ["LibvirtImports"]

_FORWARD = re.compile(r"hostfwd=tcp:([^:,]*):(\d+)-:(\d+)")
_UUID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
SSH_PORT = 22


class LibvirtImports:
    """import_machine and resource_id for ``LibvirtDriver`` (warehouse, connection...)."""

    warehouse: Warehouse
    directory: str
    uri: str
    driver_url: str
    # the driver's own methods these use
    _options: Callable[[Mapping[str, Any], str], Any]
    _domain: Callable[..., Any]
    connection: Callable[[], Any]
    find_machines: Callable[[str], list[MachineRecord]]
    base_reference: Callable[..., dict[str, Any]]

    def resource_id(self, reference: Mapping[str, Any]) -> str | None:
        return reference.get("domain")

    def resolve_resource_id(self, resource_id: str, machine: str) -> str:
        return self._importable(resource_id, machine).domain  # a UUID, id or name: the domain

    def import_machine(self, action_handler, machine_spec, machine_options, resource_id):
        """Adopt the machine ``resource_id`` names: checked before the one change (the
        retag), so why-run reports a refusal too; a running domain keeps running."""
        name = machine_spec.name
        opts = self._options(machine_options, name)
        record = self._importable(resource_id, name)
        host_key = _written_host_key(self.warehouse, record)
        if host_key is None or not os.path.exists(self.warehouse.path(record.id, "disk.qcow2")):
            raise ProviderError(f"machine {record.id} ({record.domain}) never finished being "
                                "made (no host key or disk in its directory); destroy it rather "
                                "than import it", provider=PROVIDER, machine=name)
        domain = self._domain(record, name)
        running = domain is not None and domain.isActive()
        fields = dict(machine_id=record.id, domain=record.domain, directory=self.directory,
                      image=record.image, hostname=record.hostname, key_name=record.key_name,
                      host_key=host_key, address="127.0.0.1", ssh_port=None, accel=None,
                      memory=opts.memory, cpus=opts.cpus,
                      state="running" if running else "stopped")
        if domain is not None:
            fields.update(_read_back(domain, running))

        def adopt() -> None:
            with self.warehouse.locked():
                fresh = self.warehouse.retag(record, machine_spec.resource_name,
                                             machine_spec.store_id)
            if domain is not None:
                self._retag_domain(domain, fresh, running)
            machine_spec.reference = self.base_reference(**fields)
        action_handler.perform_action(
            f"import domain {record.domain} ({record.image}, {fields['memory']} MiB, "
            f"{'running' if running else 'stopped'})", adopt)

    def _importable(self, resource_id: str, machine: str) -> MachineRecord:
        """The record ``resource_id`` names (see the module's docstring), or the typed error."""
        record = self.warehouse.record(resource_id)
        if record is not None:
            return record
        domain = self._lookup(resource_id, machine)
        if domain is not None:
            tags = _tags(domain)
            if tags is None:
                raise ConfigError(
                    f"domain {domain.name()} on {self.uri} was not made by the libvirt: driver "
                    "(it has no provisioning metadata), and this driver only boots domains it "
                    "defines; reach the VM over SSH instead: an ssh: machine, then converge "
                    "import NAME HOST:PORT", key="import", machine=machine)
            if tags.get("directory") != self.directory:
                raise ConfigError(
                    f"domain {domain.name()} was made by the libvirt: driver with directory "
                    f"{tags.get('directory')}, not {self.directory}; import it with the driver "
                    f"option directory: {tags.get('directory')}", key="import", machine=machine)
            found = self.warehouse.record(tags.get("id"))
            if found is None:
                raise ProviderError(
                    f"domain {domain.name()} has no machine directory left in {self.directory} "
                    f"(half destroyed?); remove it (virsh undefine {domain.name()})",
                    provider=PROVIDER, machine=machine)
            return found
        named = self.find_machines(resource_id)
        if len(named) == 1:
            return named[0]
        known = ", ".join(f"{r.domain} ({r.name})" for r in self.warehouse.records()[:5])
        raise MachineNotFound(f"no domain, UUID or machine {resource_id!r} in {self.directory} "
                              f"on {self.uri} (machines: {known or 'none'})", machine=machine)

    def _lookup(self, resource_id: str, machine: str) -> Any:
        """The domain named ``resource_id``, or with that UUID; None when there is none."""
        libvirt = libvirt_module()
        conn = self.connection()
        by_uuid = _UUID.fullmatch(resource_id) is not None
        lookup = conn.lookupByUUIDString if by_uuid else conn.lookupByName
        try:
            return lookup(resource_id)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                with mapped(f"looking up domain {resource_id}", machine=machine):
                    raise
        return None

    def _retag_domain(self, domain: Any, record: MachineRecord, running: bool) -> None:
        """The domain's metadata names the new machine and store (the next start defines it
        again from the record anyway)."""
        libvirt = libvirt_module()
        tags = {"name": record.name, "store": record.store_id or "", "id": record.id,
                "directory": self.directory}
        element = ET.Element("machine", tags)
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if running
                                                    else 0)
        with mapped(f"retagging domain {record.domain}", machine=record.name):
            domain.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                               ET.tostring(element, encoding="unicode"), METADATA_PREFIX,
                               METADATA_NS, flags)


def _tags(domain: Any) -> dict[str, str] | None:
    """The provisioning metadata of a domain (None: it has none)."""
    libvirt = libvirt_module()
    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
    except libvirt.libvirtError:
        return None
    try:
        return dict(ET.fromstring(text).attrib)
    except ET.ParseError:
        return None


def _written_host_key(warehouse: Warehouse, record: MachineRecord) -> str | None:
    """The public host key this driver generated for the machine before its first boot."""
    try:
        with open(warehouse.path(record.id, "host_key.pub"), encoding="ascii") as handle:
            parts = handle.read().split()
    except OSError:
        return None
    return " ".join(parts[:2]) if len(parts) >= 2 else None


def _read_back(domain: Any, running: bool) -> dict[str, Any]:
    """Memory, CPUs, accelerator and (running) SSH and forwarded ports from the domain."""
    xml = domain.XMLDesc(0)
    root = ET.fromstring(xml)
    _, max_kib, _, cpus, _ = domain.info()
    ports = [f"{bind}:{host}:{guest}" for bind, host, guest in _FORWARD.findall(xml)
             if int(guest) != SSH_PORT]
    read: dict[str, Any] = {"memory": int(max_kib) // 1024, "cpus": int(cpus),
            "accel": "kvm" if root.get("type") == "kvm" else "tcg"}
    if running:
        read.update(ssh_port=live_ssh_port(domain), ports=ports)
    return read
