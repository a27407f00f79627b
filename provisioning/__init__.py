"""provisioning: create, ready, converge, stop and destroy machines through drivers named by URL.

    import provisioning
    driver = provisioning.driver_for_url("nspawn:")

Names are imported lazily on first use, so ``import provisioning`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "driver_for_url": "provisioning.registry",
    "register_driver": "provisioning.registry",
    "known_schemes": "provisioning.registry",
    "connect_to_machine": "provisioning.lifecycle",
    "Provisioner": "provisioning.lifecycle",
    "Driver": "provisioning.driver",
    "Capabilities": "provisioning.driver",
    "MachineSpec": "provisioning.spec",
    "ImageSpec": "provisioning.spec",
    "ActionHandler": "provisioning.actions",
    "PrefixedActionHandler": "provisioning.actions",
    "RecordingActionHandler": "provisioning.actions",
    "Event": "provisioning.actions",
    "Machine": "provisioning.machine.base",
    "UnixMachine": "provisioning.machine.unix",
    "CommandResult": "provisioning.machine.result",
    "Config": "provisioning.config",
    "Parallelizer": "provisioning.parallel",
    "open_store": "provisioning.store",
    "OptionField": "provisioning.options",
    "ProvisioningError": "provisioning.errors",
    "ConfigError": "provisioning.errors",
    "InvalidDriverURL": "provisioning.errors",
    "DriverNotFound": "provisioning.errors",
    "MissingExtra": "provisioning.errors",
    "ClusterConflict": "provisioning.errors",
    "StalePlan": "provisioning.errors",
    "MachineNotFound": "provisioning.errors",
    "StateError": "provisioning.errors",
    "StateLocked": "provisioning.errors",
    "StateConflict": "provisioning.errors",
    "TransportError": "provisioning.errors",
    "ConnectError": "provisioning.errors",
    "AuthenticationError": "provisioning.errors",
    "HostKeyMismatch": "provisioning.errors",
    "CommandTimeout": "provisioning.errors",
    "TransferError": "provisioning.errors",
    "CommandFailed": "provisioning.errors",
    "ConvergenceFailed": "provisioning.errors",
    "VerifyFailed": "provisioning.errors",
    "ConvergenceStrategy": "provisioning.convergence.base",
    "ConvergenceContext": "provisioning.convergence.base",
    "register_strategy": "provisioning.convergence.registry",
    "Kitchen": "provisioning.cluster.kitchen",
    "ProviderError": "provisioning.errors",
    "UnsupportedOperation": "provisioning.errors",
    "Snapshot": "provisioning.local_features",
    "SyncedFolder": "provisioning.local_features",
    "ForwardedPort": "provisioning.local_features",
}

__all__ = sorted(_EXPORTS) + ["__version__", "errors"]


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("provisioning.errors")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'provisioning' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler, Event, PrefixedActionHandler, RecordingActionHandler
    from provisioning.config import Config
    from provisioning.driver import Capabilities, Driver
    from provisioning.errors import *  # noqa: F401,F403
    from provisioning.lifecycle import Provisioner, connect_to_machine
    from provisioning.local_features import ForwardedPort, Snapshot, SyncedFolder
    from provisioning.machine.base import Machine
    from provisioning.machine.result import CommandResult
    from provisioning.machine.unix import UnixMachine
    from provisioning.options import OptionField
    from provisioning.parallel import Parallelizer
    from provisioning.registry import driver_for_url, known_schemes, register_driver
    from provisioning.spec import ImageSpec, MachineSpec
    from provisioning.store import open_store
