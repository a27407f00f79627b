"""Machines: what a driver hands back once a machine is ready.

Names load on first use, so ``provisioning.machine.result`` can be imported by transports
without pulling in the machines that use those transports.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Machine": "provisioning.machine.base",
    "UnixMachine": "provisioning.machine.unix",
    "WindowsMachine": "provisioning.machine.windows",
    "CommandResult": "provisioning.machine.result",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'provisioning.machine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
