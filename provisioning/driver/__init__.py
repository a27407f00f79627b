"""The driver author's one import: everything a driver needs, from one module.

    from provisioning.driver import Driver, MachineSpec, OptionField, machine_for, ...

- ``base.py``: the ``Driver`` base class (the batch methods, ``describe``, local features).
- ``resources.py``: the contract's five methods, made from the warehouse hooks a driver
  implements (adopt-or-create, why-run, fault points and the reference save in one place);
  ``creating.py`` makes resources (one, or many in one request; pending references),
  ``deleting.py`` removes them (one, or many in one request).
- ``image_contract.py``: the machine-image methods, made from the image hooks a driver with
  ``Capabilities.images`` implements (why-run and the save of the image entry in one place).
- ``capabilities.py``: ``Capabilities``, what a driver declares it can do.
- ``options.py``: ``OptionField``, typed option declarations, and their validation.
- ``faults.py``: named fault points for crash-safety tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provisioning.lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.config import Config
    from provisioning.driver.base import Driver, SpecsAndOptions
    from provisioning.driver.capabilities import Capabilities
    from provisioning.driver.image_contract import ImageCapture
    from provisioning.driver.options import DriverDescription, OptionField
    from provisioning.driver.resources import Creation
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

#: name -> the module it comes from, imported on first use: a driver importing ``Driver`` does
#: not pay for the SSH and WinRM transports it may never use
_EXPORTS = {
    "ActionHandler": "provisioning.actions", "Config": "provisioning.config",
    "Capabilities": "provisioning.driver.capabilities", "Driver": "provisioning.driver.base",
    "Creation": "provisioning.driver.resources",
    "ImageCapture": "provisioning.driver.image_contract",
    "SpecsAndOptions": "provisioning.driver.base",
    "DriverDescription": "provisioning.driver.options",
    "OptionField": "provisioning.driver.options",
    "CommandResult": "provisioning.errors", "ConfigError": "provisioning.errors",
    "MachineNotFound": "provisioning.errors", "ProviderError": "provisioning.errors",
    "UnsupportedOperation": "provisioning.errors", "checkpoint": "provisioning.faults",
    "PrivateKey": "provisioning.keys", "find_private_key": "provisioning.keys",
    "Machine": "provisioning.machine.base", "UnixMachine": "provisioning.machine.unix",
    "WindowsMachine": "provisioning.machine.windows",
    "machine_for": "provisioning.machine.factory",
    "BatchResult": "provisioning.parallel", "Parallelizer": "provisioning.parallel",
    "MachineSpec": "provisioning.spec", "Transport": "provisioning.transports.base",
    "LocalTransport": "provisioning.transports.local",
    "wait_until_connectable": "provisioning.transports.wait",
}

__all__ = [
    "ActionHandler", "BatchResult", "Capabilities", "CommandResult", "Config", "ConfigError",
    "Creation", "Driver", "DriverDescription", "ImageCapture", "LocalTransport", "Machine", "MachineNotFound",
    "MachineSpec", "OptionField", "Parallelizer", "PrivateKey", "ProviderError",
    "SpecsAndOptions", "Transport", "UnixMachine", "UnsupportedOperation", "WindowsMachine",
    "checkpoint", "find_private_key", "machine_for", "wait_until_connectable",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
