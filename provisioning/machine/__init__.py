"""Machines: what a driver hands back once a machine is ready (a transport plus the operating
system's way of doing files, attributes and commands), and ``machine_for``, which builds one
from ``machine_options``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'provisioning.machine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
