"""provisioning: create, ready, converge, stop and destroy machines through drivers named by URL.

    import provisioning
    driver = provisioning.driver_for_url("nspawn:")

Names are imported lazily on first use, so ``import provisioning`` stays fast. Modules that
moved into layer packages still import from their old names, with a ``DeprecationWarning``
(``_MOVED`` below; see docs/architecture.md for the layers).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType

from provisioning.lazy import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it alike)

__version__ = "0.1.0"

_EXPORTS = {
    "driver_for_url": "provisioning.registry",
    "register_driver": "provisioning.registry",
    "known_schemes": "provisioning.registry",
    "connect_to_machine": "provisioning.lifecycle",
    "Provisioner": "provisioning.lifecycle",
    "Driver": "provisioning.driver.base",
    "Capabilities": "provisioning.driver.base",
    "MachineSpec": "provisioning.spec",
    "ImageSpec": "provisioning.spec",
    "ActionHandler": "provisioning.actions",
    "PrefixedActionHandler": "provisioning.actions",
    "RecordingActionHandler": "provisioning.actions",
    "Event": "provisioning.actions",
    "Machine": "provisioning.machine.base",
    "UnixMachine": "provisioning.machine.unix",
    "WindowsMachine": "provisioning.machine.windows",
    "machine_for": "provisioning.machine.factory",
    "CommandResult": "provisioning.errors",
    "Config": "provisioning.config",
    "Parallelizer": "provisioning.parallel",
    "open_store": "provisioning.store",
    "OptionField": "provisioning.driver.options",
    "ProvisioningError": "provisioning.errors",
    "ConfigError": "provisioning.errors",
    "InvalidDriverURL": "provisioning.errors",
    "DriverNotFound": "provisioning.errors",
    "MissingExtra": "provisioning.errors",
    "ClusterConflict": "provisioning.errors",
    "DamagedEntry": "provisioning.errors",
    "Cluster": "provisioning.cluster",
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
    "Snapshot": "provisioning.driver.local_features",
    "SyncedFolder": "provisioning.driver.local_features",
    "ForwardedPort": "provisioning.driver.local_features",
}

__all__ = sorted(_EXPORTS) + ["__version__", "errors"]
_EXPORTS["errors"] = "provisioning.errors"  # the module itself


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__, dir_all=False)


#: old module name -> where it lives now (imports of the old name warn, then get the new module)
_MOVED = {
    "provisioning.options": "provisioning.driver.options",
    "provisioning.schema": "provisioning.inputs.schema",
    "provisioning.files": "provisioning.keys",
    "provisioning.statefile": "provisioning.store.statefile",
    "provisioning.wizard": "provisioning.scaffold.wizard",
    "provisioning.machine.result": "provisioning.errors",
    "provisioning.transports.factory": "provisioning.machine.factory",
    "provisioning.transports.ssh_options": "provisioning.transports.ssh.options",
    "provisioning.transports.shell_session": "provisioning.transports.ssh.session",
    "provisioning.transports.winrm_options": "provisioning.transports.winrm.options",
    "provisioning.yamlfile": "provisioning.inputs.yamlfile",
    "provisioning.userfiles": "provisioning.inputs.userfiles",
    "provisioning.templating": "provisioning.inputs.templating",
    "provisioning.keycheck": "provisioning.cluster.keycheck",
    "provisioning.requestcheck": "provisioning.driver.requestcheck",
    "provisioning.local_features": "provisioning.driver.local_features",
    "provisioning.access": "provisioning.machine.access",
    "provisioning.chunks": "provisioning.store.chunks",
    "provisioning.url": "provisioning.inputs.url",
}


class _MovedModules:
    """Import hook answering only for the names in ``_MOVED``: the old name becomes an alias
    of the new module (one object, so ``isinstance`` and monkeypatching keep working)."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name not in _MOVED:
            return None
        return ModuleSpec(name, _MovedModules, origin=_MOVED[name])  # type: ignore[arg-type]

    @staticmethod
    def create_module(spec: ModuleSpec) -> ModuleType:
        new = _MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there (or from "
                      "provisioning.driver, the driver author's one import)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    @staticmethod
    def exec_module(module: ModuleType) -> None:
        """Nothing to run: the new module is already loaded."""


if not any(isinstance(f, type) and f.__name__ == "_MovedModules" for f in sys.meta_path):
    sys.meta_path.append(_MovedModules)


if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from provisioning.actions import ActionHandler, Event, PrefixedActionHandler, RecordingActionHandler
    from provisioning.cluster import Cluster
    from provisioning.config import Config
    from provisioning.driver.base import Capabilities, Driver
    from provisioning.driver.local_features import ForwardedPort, Snapshot, SyncedFolder
    from provisioning.driver.options import OptionField
    from provisioning.errors import *  # noqa: F401,F403
    from provisioning.errors import CommandResult
    from provisioning.lifecycle import Provisioner, connect_to_machine
    from provisioning.machine.base import Machine
    from provisioning.machine.factory import machine_for
    from provisioning.machine.unix import UnixMachine
    from provisioning.machine.windows import WindowsMachine
    from provisioning.parallel import Parallelizer
    from provisioning.registry import driver_for_url, known_schemes, register_driver
    from provisioning.spec import ImageSpec, MachineSpec
    from provisioning.store import open_store
