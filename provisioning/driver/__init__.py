"""The driver author's one import: everything a driver needs, from one module.

    from provisioning.driver import Driver, MachineSpec, OptionField, machine_for, ...

- ``base.py``: the ``Driver`` base class (the contract, the batch methods, ``describe``).
- ``options.py``: ``OptionField``, typed option declarations, and their validation.
- ``faults.py``: named fault points for crash-safety tests.
"""

from __future__ import annotations

from provisioning.actions import ActionHandler
from provisioning.config import Config
from provisioning.driver.base import Capabilities, Driver, SpecsAndOptions
from provisioning.driver.options import DriverDescription, OptionField
from provisioning.errors import (
                                 CommandResult,
                                 ConfigError,
                                 MachineNotFound,
                                 ProviderError,
                                 UnsupportedOperation,
)
from provisioning.faults import checkpoint
from provisioning.keys import PrivateKey, find_private_key
from provisioning.machine import Machine, UnixMachine, WindowsMachine, machine_for
from provisioning.parallel import BatchResult, Parallelizer
from provisioning.spec import MachineSpec
from provisioning.transports.base import Transport
from provisioning.transports.local import LocalTransport
from provisioning.transports.wait import wait_until_connectable

__all__ = [
    "ActionHandler", "BatchResult", "Capabilities", "CommandResult", "Config", "ConfigError",
    "Driver", "DriverDescription", "LocalTransport", "Machine", "MachineNotFound", "MachineSpec",
    "OptionField", "Parallelizer", "PrivateKey", "ProviderError", "SpecsAndOptions", "Transport",
    "UnixMachine", "UnsupportedOperation", "WindowsMachine", "checkpoint", "find_private_key",
    "machine_for", "wait_until_connectable",
]
