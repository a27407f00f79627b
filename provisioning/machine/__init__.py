"""Machines: what a driver hands back once a machine is ready."""

from provisioning.machine.base import Machine
from provisioning.machine.result import CommandResult
from provisioning.machine.unix import UnixMachine
from provisioning.machine.windows import WindowsMachine

__all__ = ["Machine", "UnixMachine", "WindowsMachine", "CommandResult"]
