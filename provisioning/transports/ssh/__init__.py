"""SSH transport (paramiko): one connection per machine, host keys pinned, typed errors.

- ``connection.py``: connecting, host-key checks, commands (``SSHConnection``).
- ``transport.py``: files, directories and forwarding on top (``SSHTransport``).
- ``session.py``: one persistent remote shell for many commands.
- ``options.py``: building a transport (and gateways) from ``machine_options["transport"]``.
- ``errors.py``: the one table mapping paramiko/socket exceptions to ``provisioning.errors``.
- ``wire.py``: socket and paramiko plumbing.

paramiko is imported only when a connection is made, so importing this package stays cheap.
"""

from __future__ import annotations

from provisioning.transports.ssh.errors import host_key_line, map_ssh_errors, translate_ssh_error
from provisioning.transports.ssh.options import check_transport_options, ssh_transport_from_options
from provisioning.transports.ssh.transport import SSHTransport
from provisioning.transports.wait import wait_until_connectable

__all__ = ["SSHTransport", "map_ssh_errors", "translate_ssh_error", "host_key_line",
           "ssh_transport_from_options", "check_transport_options", "wait_until_connectable"]
