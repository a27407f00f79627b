"""Reaching machines with other tools (OpenSSH, ansible, testinfra) as safely as we do.

Every way out keeps host-key checking on: the machine's pinned host key goes into a private
``known_hosts`` under a per-machine alias (``HostKeyAlias``), with ``StrictHostKeyChecking=yes``,
so a machine presenting another key is refused, never learned. The private key and the
known_hosts file are written 0600 into a 0700 directory the caller owns (a temporary one for
``converge ssh`` and verify runs, ``.provisioning/access`` for ``converge inventory``). For
machines in a network namespace (nspawn) the driver's ProxyCommand is used.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from provisioning.errors import UnsupportedOperation
from provisioning.inputs.records import record
from provisioning.keys import write_private_file

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.machine.base import Machine


__all__ = ["SSHAccess", "AccessFiles", "ssh_access", "write_access", "ssh_options", "ssh_argv",
           "ssh_config", "ansible_inventory", "inventory_json"]


@record(frozen=True)
class SSHAccess:
    """How OpenSSH reaches one machine: address, port, user, key, pinned host key, proxy."""

    name: str
    host: str
    port: int
    username: str
    key: Any = field(repr=False)
    host_key: str = ""
    proxy: str | None = None

    @property
    def alias(self) -> str:
        """The name the host key is pinned under (independent of the address)."""
        return f"converge-{self.name}"


@record(frozen=True)
class AccessFiles:
    """Where ``write_access`` put the keys (per machine) and the shared known_hosts."""

    directory: str
    known_hosts: str
    keys: Mapping[str, str]


def ssh_access(machine: "Machine") -> SSHAccess:
    """The SSH parameters of a connected machine, from its transport's ``ssh_login()`` and its
    reference (the pinned host key; ``proxy_command`` for machines in a network namespace);
    ``UnsupportedOperation`` when it is not reached over SSH with a key or has no pinned host
    key yet."""
    spec = machine.spec
    reference = spec.reference if spec is not None else {}
    login = machine.transport.ssh_login()
    if login is None or login.private_key is None:
        raise UnsupportedOperation(f"machine {machine.name!r} is not reached over SSH with a key "
                                   f"({type(machine.transport).__name__}); use 'converge exec' "
                                   "instead", machine=machine.name)
    host_key = login.host_key or reference.get("host_key")
    if not host_key:
        raise UnsupportedOperation(f"machine {machine.name!r} has no pinned host key yet; run "
                                   "'converge up' once so it is recorded", machine=machine.name)
    proxy = reference.get("proxy_command")
    if proxy is not None and not isinstance(proxy, str):
        proxy = shlex.join(proxy)
    return SSHAccess(name=machine.name, host=login.host, port=login.port,
                     username=login.username, key=login.private_key,
                     host_key=" ".join(str(host_key).split()[:2]), proxy=proxy)


def write_access(accesses: Iterable[SSHAccess], directory: str) -> AccessFiles:
    """Write each machine's private key (``keys/NAME``) and one known_hosts holding every pinned
    host key under its alias; the directory is made private (0700)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    keys: dict[str, str] = {}
    lines = []
    for access in accesses:
        path = os.path.join(directory, "keys", access.name)
        write_private_file(path, access.key.private_openssh())
        keys[access.name] = path
        lines.append(f"{access.alias} {access.host_key}\n")
    known_hosts = os.path.join(directory, "known_hosts")
    write_private_file(known_hosts, "".join(lines).encode("ascii"))
    return AccessFiles(directory=directory, known_hosts=known_hosts, keys=keys)


def ssh_options(access: SSHAccess, files: AccessFiles) -> list[str]:
    """``-o`` options that pin the host key and use only the machine's key."""
    options = [f"IdentityFile={files.keys[access.name]}", "IdentitiesOnly=yes",
               "IdentityAgent=none", f"UserKnownHostsFile={files.known_hosts}",
               "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes",
               f"HostKeyAlias={access.alias}", "UpdateHostKeys=no", "LogLevel=ERROR"]
    if access.proxy:
        options.append(f"ProxyCommand={access.proxy}")
    out: list[str] = []
    for option in options:
        out += ["-o", option]
    return out


def ssh_argv(access: SSHAccess, files: AccessFiles, command: list[str]) -> list[str]:
    """An ``ssh`` command line for one machine (an interactive session without ``command``)."""
    argv = ["ssh", *ssh_options(access, files), "-p", str(access.port), "-l", access.username,
            access.host]
    return argv + (["--", *command] if command else [])


def ssh_config(accesses: Iterable[SSHAccess], files: AccessFiles) -> str:
    """An OpenSSH client config with one ``Host NAME`` block per machine (``ssh -F FILE NAME``)."""
    blocks = []
    for access in accesses:
        lines = [f"Host {access.name}", f"  HostName {access.host}", f"  Port {access.port}",
                 f"  User {access.username}"]
        options = ssh_options(access, files)
        for option in options[1::2]:
            name, _, value = option.partition("=")
            lines.append(f"  {name} {value}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def ansible_args(access: SSHAccess, files: AccessFiles) -> str:
    """``ansible_ssh_common_args`` for one machine: host key pinned, checking on."""
    keep = [o for o in ssh_options(access, files)[1::2]
            if not o.startswith(("IdentityFile=", "LogLevel="))]
    return " ".join(shlex.quote(f"-o{option}") for option in keep)


def ansible_inventory(accesses: Iterable[SSHAccess], files: AccessFiles,
                      groups: Mapping[str, Iterable[str]] | None = None,
                      host_vars: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """An ansible YAML inventory (as data): ``all.hosts`` with connection variables, and one
    child group per cluster group."""
    hosts: dict[str, Any] = {}
    for access in accesses:
        hosts[access.name] = {
            "ansible_host": access.host, "ansible_port": access.port,
            "ansible_user": access.username,
            "ansible_ssh_private_key_file": files.keys[access.name],
            "ansible_ssh_common_args": ansible_args(access, files),
            "ansible_host_key_checking": True,
            **dict((host_vars or {}).get(access.name) or {})}
    children = {group: {"hosts": {name: None for name in names if name in hosts}}
                for group, names in (groups or {}).items()}
    children = {g: body for g, body in children.items() if body["hosts"] and g not in hosts}
    inventory: dict[str, Any] = {"all": {"hosts": hosts}}
    if children:
        inventory["all"]["children"] = children
    return inventory


def inventory_json(accesses: Iterable[SSHAccess], files: AccessFiles,
                   groups: Mapping[str, Iterable[str]] | None = None) -> dict[str, Any]:
    """Every machine's connection facts as plain data (no secrets: keys are file paths)."""
    group_of: dict[str, list[str]] = {}
    for group, names in (groups or {}).items():
        for name in names:
            group_of.setdefault(name, []).append(group)
    return {"known_hosts": files.known_hosts, "machines": [
        {"name": a.name, "host": a.host, "port": a.port, "user": a.username,
         "key_file": files.keys[a.name], "host_key": a.host_key, "host_key_alias": a.alias,
         "proxy_command": a.proxy, "groups": group_of.get(a.name, [])} for a in accesses]}
