"""``converge new-driver``: write a pip-installable driver package from the templates here.

The package passes the conformance suite the moment it is written; its author then replaces the
example warehouse with a real provider. See ``generator.new_driver``.
"""

from __future__ import annotations

from provisioning.scaffold.generator import DriverNames, Scaffold, driver_names, new_driver

__all__ = ["DriverNames", "Scaffold", "driver_names", "new_driver"]
