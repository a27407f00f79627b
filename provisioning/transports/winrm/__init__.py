"""WinRM transport (pywinrm) for Windows machines.

- ``connection.py``: the WinRS shell and commands (``WinRMConnection``).
- ``transport.py``: files and directories on top (``WinRMTransport``).
- ``options.py``: building a transport from ``machine_options["transport"]``.
- ``errors.py``: the one table mapping pywinrm/requests/spnego exceptions to ``provisioning.errors``.
- ``wire.py``: loading pywinrm, certificate fingerprints, the requests adapter.

pywinrm is imported only when a transport connects, so importing this package stays cheap.
"""

from __future__ import annotations

from provisioning.transports.base import DEFAULT_COMMAND_TIMEOUT
from provisioning.transports.winrm.connection import AUTH_METHODS
from provisioning.transports.winrm.errors import translate_winrm_error
from provisioning.transports.winrm.options import OPTION_KEYS, winrm_transport_from_options
from provisioning.transports.winrm.transport import WinRMTransport
from provisioning.transports.winrm.wire import certificate_thumbprints

__all__ = ["WinRMTransport", "winrm_transport_from_options", "AUTH_METHODS",
           "certificate_thumbprints", "translate_winrm_error", "OPTION_KEYS",
           "DEFAULT_COMMAND_TIMEOUT"]
