"""Machines: what a driver hands back once a machine is ready (a transport plus the operating
system's way of doing files, attributes and commands), and ``machine_for``, which builds one
from ``machine_options``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from provisioning.lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.errors import CommandResult
    from provisioning.machine.base import Machine
    from provisioning.machine.factory import machine_for, pin_on_first_use
    from provisioning.machine.unix import UnixMachine
    from provisioning.machine.windows import WindowsMachine

__all__ = ["Machine", "UnixMachine", "WindowsMachine", "CommandResult", "machine_for",
           "pin_on_first_use"]

#: name -> its module, imported on first use (a Unix machine never loads the WinRM transport)
_EXPORTS = {"Machine": "provisioning.machine.base", "UnixMachine": "provisioning.machine.unix",
            "WindowsMachine": "provisioning.machine.windows",
            "CommandResult": "provisioning.errors", "machine_for": "provisioning.machine.factory",
            "pin_on_first_use": "provisioning.machine.factory"}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
