"""Snapshots, synced folders and forwarded ports: what local machines offer beyond the lifecycle.

One API for every local driver (nspawn, docker, libvirt), in the spirit of Vagrant:

- **Snapshots**: ``Driver.save_snapshot/restore_snapshot/list_snapshots/delete_snapshot``
  (``converge snapshot save|restore|list|delete MACHINE [NAME]``). The driver keeps them in its
  warehouse, beside the machine, and destroying the machine removes them.
- **Synced folders**: ``sync: [{from: ./app, to: /srv/app, mode: auto|mount|rsync}]`` on a machine
  or group of the cluster file; ``machine_options["sync"]`` on the Python API. ``mount`` shares the
  host directory live (bind mount, virtiofs, 9p: the driver's choice); ``rsync`` copies changed
  files over the machine's own transport (no rsync binary needed on either side) at every ``up``
  and ``converge sync``; ``auto`` mounts where the driver can, else copies.
- **Forwarded ports**: ``ports: ["127.0.0.1:8080:80"]`` (``[ADDRESS:]HOST_PORT:GUEST_PORT[/tcp]``);
  the host side binds to loopback unless another address is written.

The cluster loader turns ``sync`` and ``ports`` into ``machine_options["sync"]`` and
``machine_options["ports"]`` (plain data, source paths made absolute); drivers read them back
with ``synced_folders()`` and ``forwarded_ports()``. A driver says what it can do through its
``Capabilities`` (``snapshots``, ``mounts_folders``, ``forwards_ports``).
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
import shlex
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from provisioning.driver.options import LOCAL_OPTION_KEYS
from provisioning.errors import ConfigError, ConfigProblem, UnsupportedOperation
from provisioning.inputs.records import record
from provisioning.inputs.schema import Problems, describe_type, did_you_mean
from provisioning.transports.base import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.machine.base import Machine

__all__ = ["SyncedFolder", "ForwardedPort", "Snapshot", "LOCAL_OPTION_KEYS", "SYNC_MODES",
           "parse_synced_folders", "parse_forwarded_ports", "synced_folders", "forwarded_ports",
           "check_local_options", "copy_folder", "snapshot_name", "unsupported"]

#: machine_options keys the base class validates for every driver (not driver option fields)
SYNC_MODES = ("auto", "mount", "rsync")
SNAPSHOT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_PORT_RE = re.compile(r"^(?:(?P<address>\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost):)?"
                      r"(?P<host>\d{1,5}):(?P<guest>\d{1,5})(?:/(?P<protocol>tcp|udp))?$")


@record(frozen=True)
class SyncedFolder:
    """A host directory (absolute ``source``) kept on the machine at ``target``."""

    source: str
    target: str
    mode: str = "auto"

    def to_data(self) -> dict[str, str]:
        return {"from": self.source, "to": self.target, "mode": self.mode}

    def mounted_by(self, mounts: bool) -> bool:
        """Whether a driver that can (``mounts``) or cannot mount shares this one live."""
        return mounts and self.mode in ("auto", "mount")


@record(frozen=True)
class ForwardedPort:
    """``host_address:host_port`` on the host reaches ``guest_port`` on the machine."""

    host_port: int
    guest_port: int
    host_address: str = "127.0.0.1"
    protocol: str = "tcp"

    def __str__(self) -> str:
        address = f"[{self.host_address}]" if ":" in self.host_address else self.host_address
        return f"{address}:{self.host_port}:{self.guest_port}/{self.protocol}"


@record(frozen=True)
class Snapshot:
    """One saved state of a machine's files (and, where the driver can, its memory)."""

    name: str
    created_at: float
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- parsing (cluster file and Python API) ------------------------------------------------------
def parse_synced_folders(value: Any, key: str, problems: Problems,
                         base_dir: str | None) -> list[SyncedFolder]:
    """``sync:``: a list of ``{from, to, mode}``. Relative ``from`` is relative to ``base_dir``
    (the cluster file's directory); ``to`` must be absolute."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(key, f"expected a list of {{from: DIR, to: /PATH}}, got {describe_type(value)}")
        return []
    out: list[SyncedFolder] = []
    targets: set[str] = set()
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(item, Mapping):
            problems.add(where, f"expected {{from: DIR, to: /PATH}}, got {describe_type(item)}")
            continue
        for extra in [k for k in item if k not in ("from", "to", "mode")]:
            problems.add(f"{where}.{extra}", f"unknown key {extra!r}"
                                             f"{did_you_mean(str(extra), ['from', 'to', 'mode'])}")
        source, target, mode = item.get("from"), item.get("to"), item.get("mode", "auto")
        if not isinstance(source, str) or not source:
            problems.add(f"{where}.from", "required: the host directory to share (relative to "
                                          "the cluster file)")
            continue
        path = os.path.expanduser(source)
        if not os.path.isabs(path):
            if base_dir is None:
                problems.add(f"{where}.from", f"{source!r} is relative; give an absolute path")
                continue
            path = os.path.join(base_dir, path)
        path = os.path.normpath(path)
        if not os.path.isdir(path):
            problems.add(f"{where}.from", f"{path} is not a directory on this host; create it "
                                          "or fix the path")
        if not isinstance(target, str) or not target.startswith("/"):
            problems.add(f"{where}.to", f"expected an absolute path on the machine, got "
                                        f"{describe_type(target)}")
            continue
        target = posixpath.normpath(target)
        if target == "/":
            problems.add(f"{where}.to", "cannot sync onto the machine's root directory")
            continue
        if target in targets:
            problems.add(f"{where}.to", f"{target} is already the target of another folder")
        targets.add(target)
        if mode not in SYNC_MODES:
            problems.add(f"{where}.mode", f"unknown mode {mode!r}"
                                          f"{did_you_mean(str(mode), SYNC_MODES)}")
            continue
        out.append(SyncedFolder(path, target, mode))
    return out


def parse_forwarded_ports(value: Any, key: str, problems: Problems) -> list[ForwardedPort]:
    """``ports:``: a list of ``"[ADDRESS:]HOST_PORT:GUEST_PORT[/tcp]"`` strings."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(key, f"expected a list like [\"127.0.0.1:8080:80\"], got {describe_type(value)}")
        return []
    out: list[ForwardedPort] = []
    seen: set[tuple[str, int]] = set()
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        match = _PORT_RE.match(item) if isinstance(item, str) else None
        if match is None:
            problems.add(where, f"expected \"[ADDRESS:]HOST_PORT:GUEST_PORT\" such as "
                                f"\"127.0.0.1:8080:80\", got {describe_type(item)} (quote it in "
                                "YAML)")
            continue
        address = (match.group("address") or "127.0.0.1").strip("[]")
        if address == "localhost":
            address = "127.0.0.1"
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problems.add(where, f"{address!r} is not an IP address to bind on the host")
            continue
        host, guest = int(match.group("host")), int(match.group("guest"))
        if not (1 <= host <= 65535 and 1 <= guest <= 65535):
            problems.add(where, "ports must be from 1 to 65535")
            continue
        protocol = match.group("protocol") or "tcp"
        if protocol != "tcp":
            problems.add(where, "only tcp ports can be forwarded")
            continue
        if (address, host) in seen:
            problems.add(where, f"host port {address}:{host} is forwarded twice")
        seen.add((address, host))
        out.append(ForwardedPort(host, guest, address, protocol))
    return out


def check_local_options(machine_options: Mapping[str, Any], capabilities: Any, *, where: str,
                        file: str | None = None, driver_url: str = "") -> list[ConfigProblem]:
    """Problems with ``sync``/``ports`` in one machine's options, for this driver's
    capabilities (a port the driver cannot forward, a folder it cannot mount)."""
    problems = Problems(file)
    folders = parse_synced_folders(machine_options.get("sync"), f"{where}.sync", problems, None)
    ports = parse_forwarded_ports(machine_options.get("ports"), f"{where}.ports", problems)
    if ports and not capabilities.forwards_ports:
        problems.add(f"{where}.ports", f"the driver {driver_url!r} cannot forward ports; remove "
                                       "'ports' or use a local driver (nspawn:, docker:)")
    for index, folder in enumerate(folders):
        if folder.mode == "mount" and not capabilities.mounts_folders:
            problems.add(f"{where}.sync[{index}].mode",
                         f"the driver {driver_url!r} cannot mount host folders; use mode: rsync "
                         "(or auto)")
    return problems.items


def synced_folders(machine_options: Mapping[str, Any]) -> list[SyncedFolder]:
    """The machine's folders, from ``machine_options["sync"]`` (absolute paths by then)."""
    problems = Problems(None)
    folders = parse_synced_folders(machine_options.get("sync"), "machine_options.sync",
                                   problems, None)
    problems.raise_if_any()
    return folders


def forwarded_ports(machine_options: Mapping[str, Any]) -> list[ForwardedPort]:
    problems = Problems(None)
    ports = parse_forwarded_ports(machine_options.get("ports"), "machine_options.ports", problems)
    problems.raise_if_any()
    return ports


def snapshot_name(name: str | None) -> str:
    """A valid snapshot name: the one given, checked, or a new one from the UTC time."""
    if name is None:
        return time.strftime("snap-%Y%m%d-%H%M%S", time.gmtime())
    if not SNAPSHOT_NAME_RE.match(name):
        raise ConfigError(f"invalid snapshot name {name!r}: use letters, digits, '.', '_' and "
                          "'-' (at most 63, starting with a letter or digit)", key="snapshot")
    return name


def unsupported(driver: Any, what: str) -> UnsupportedOperation:
    return UnsupportedOperation(f"the {driver.scheme}: driver ({driver.driver_url}) cannot "
                                f"{what}; see docs/cluster-file.md (local machines)")


# -- rsync mode: copy changed files over the machine's transport -------------------------------
def _local_files(source: str) -> Iterator[tuple[str, str]]:
    """(relative posix path, absolute path) of every regular file under ``source``."""
    for root, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                yield os.path.relpath(path, source).replace(os.sep, "/"), path


def copy_folder(machine: "Machine", folder: SyncedFolder,
                action_handler: "ActionHandler | None" = None) -> int:
    """Bring ``folder.target`` up to date with ``folder.source``: one listing of the remote
    checksums, then an upload of each file that is new or different (through
    ``Machine.upload_file``, so why-run reports and changes nothing). Files only on the machine
    are kept, as rsync does without ``--delete``. Returns how many files were (or would be) sent."""
    target = shlex.quote(folder.target)
    listing = machine.execute_always(
        f"if [ -d {target} ]; then cd {target} && find . -type f -exec sha256sum {{}} +; fi",
        check=True)
    remote: dict[str, str] = {}
    for line in listing.stdout.splitlines():
        digest, _, path = line.partition("  ")
        remote[path[2:] if path.startswith("./") else path] = digest
    sent = 0
    made: set[str] = set()
    for relative, path in _local_files(folder.source):
        if remote.get(relative) == sha256_file(path):
            continue
        mode = oct(os.stat(path).st_mode & 0o777)[2:].zfill(4)
        destination = posixpath.join(folder.target, relative)
        parent = posixpath.dirname(destination)
        if parent not in made:
            machine.create_dir(parent)
            made.add(parent)
        if machine.upload_file(path, destination, mode=mode):  # False: it was the same
            sent += 1
    if action_handler is not None:
        action_handler.report_progress(f"sync {folder.source} -> {folder.target}: "
                                       f"{sent} file{'s' if sent != 1 else ''} "
                                       f"{'to send' if action_handler.why_run else 'sent'}")
    return sent
