"""SSH transport (paramiko): one connection per machine, host keys pinned, typed errors.

- ``connection.py``: connecting, host-key checks, commands (``SSHConnection``).
- ``transport.py``: files, directories and forwarding on top (``SSHTransport``).
- ``session.py``: one persistent remote shell for many commands.
- ``options.py``: building a transport (and gateways) from ``machine_options["transport"]``.
- ``errors.py``: the one table mapping paramiko/socket exceptions to ``provisioning.errors``.
- ``wire.py``: socket and paramiko plumbing.
- ``option_keys.py``: the transport option keys and their check (what the cluster loader needs).

paramiko is imported only when a connection is made, and the names below only when first used
(PEP 562, ``provisioning.lazy``): checking a cluster file's transport options loads
``option_keys`` alone, not the connection code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provisioning.lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.transports.ssh.errors import host_key_line, map_ssh_errors, translate_ssh_error
    from provisioning.transports.ssh.option_keys import check_transport_options
    from provisioning.transports.ssh.options import ssh_transport_from_options
    from provisioning.transports.ssh.transport import SSHTransport
    from provisioning.transports.wait import wait_until_connectable

__all__ = ["SSHTransport", "map_ssh_errors", "translate_ssh_error", "host_key_line",
           "ssh_transport_from_options", "check_transport_options", "wait_until_connectable"]

_EXPORTS = {"SSHTransport": "provisioning.transports.ssh.transport",
            "map_ssh_errors": "provisioning.transports.ssh.errors",
            "translate_ssh_error": "provisioning.transports.ssh.errors",
            "host_key_line": "provisioning.transports.ssh.errors",
            "ssh_transport_from_options": "provisioning.transports.ssh.options",
            "check_transport_options": "provisioning.transports.ssh.option_keys",
            "wait_until_connectable": "provisioning.transports.wait"}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
