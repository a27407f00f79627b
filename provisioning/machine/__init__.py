"""Machines: what a driver hands back once a machine is ready (a transport plus the operating
system's way of doing files, attributes and commands), and ``machine_for``, which builds one
from ``machine_options``."""

from __future__ import annotations

from provisioning.errors import CommandResult
from provisioning.machine.base import Machine
from provisioning.machine.factory import machine_for, pin_on_first_use
from provisioning.machine.unix import UnixMachine
from provisioning.machine.windows import WindowsMachine

__all__ = ["Machine", "UnixMachine", "WindowsMachine", "CommandResult", "machine_for",
           "pin_on_first_use"]
