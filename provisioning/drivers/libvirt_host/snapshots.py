"""Snapshots through libvirt's snapshot API: internal qcow2 snapshots of the machine's overlay.

A running machine's snapshot holds its disk and memory (a restore resumes it where it was); a
stopped machine's holds its disk. The seed disk is excluded (``snapshot='no'``: it never
changes). Snapshots live inside the overlay, so destroying the machine removes them; libvirt's
metadata goes with ``undefine``. After a restore the domain's definition is the snapshot's,
so the SSH port is read back from the running domain (``live_ssh_port``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape

from provisioning.drivers.libvirt_host.conn import libvirt_module, mapped

__all__ = ["create", "find", "listed", "revert", "live_ssh_port"]

_SSH_FORWARD = re.compile(r"hostfwd=tcp:[^:,]*:(\d+)-:22(?:,|')")


def find(domain: Any, name: str) -> Any | None:
    libvirt = libvirt_module()
    try:
        return domain.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        with mapped(f"looking up snapshot {name}"):
            raise


def create(domain: Any, name: str, *, machine: str) -> None:
    """Save snapshot ``name``, replacing one of that name."""
    old = find(domain, name)
    with mapped(f"saving snapshot {name} of domain {domain.name()}", machine=machine):
        if old is not None:
            old.delete(0)
        domain.snapshotCreateXML(f"<domainsnapshot><name>{escape(name)}</name><description>"
                                 "saved by provisioning</description></domainsnapshot>", 0)


def listed(domain: Any) -> list[tuple[str, float, str]]:
    """(name, creation time, state) of every snapshot, oldest first."""
    out = []
    with mapped(f"listing snapshots of domain {domain.name()}"):
        for snap in domain.listAllSnapshots(0):
            root = ET.fromstring(snap.getXMLDesc(0))
            out.append((root.findtext("name") or snap.getName(),
                        float(root.findtext("creationTime") or 0), root.findtext("state") or ""))
    return sorted(out, key=lambda item: (item[1], item[0]))


def revert(domain: Any, snap: Any, *, machine: str) -> None:
    """Return the domain to ``snap``; forced when libvirt asks for it (the definition changed
    since, for example the SSH port chosen at a later start)."""
    libvirt = libvirt_module()
    with mapped(f"restoring snapshot {snap.getName()} of domain {domain.name()}",
                machine=machine):
        try:
            domain.revertToSnapshot(snap, 0)
        except libvirt.libvirtError as exc:
            if "force" not in (exc.get_error_message() or ""):
                raise
            domain.revertToSnapshot(snap, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)


def live_ssh_port(domain: Any) -> int | None:
    """The host port forwarded to the guest's SSH in the domain's current definition."""
    match = _SSH_FORWARD.search(domain.XMLDesc(0))
    return int(match.group(1)) if match else None
