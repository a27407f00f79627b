"""ConvergenceStrategy: the seam between a ready machine and the configuration it should have.

``Machine.setup_convergence``, ``Machine.converge`` and ``Machine.cleanup_convergence`` call
these three methods in that order. Every change goes through the machine's action handler, so
under why-run a strategy reports what it would do and changes nothing.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.machine.base import Machine

__all__ = ["ConvergenceStrategy"]


class ConvergenceStrategy(abc.ABC):
    """Brings one machine to its wished state, idempotently."""

    #: short name used in events and ``status``
    name: str = "?"

    def setup(self, machine: "Machine") -> None:
        """Prepare the machine (install an agent, upload files); default: nothing to prepare."""

    @abc.abstractmethod
    def converge(self, machine: "Machine") -> bool:
        """Apply the configuration; True when something changed (or would, under why-run)."""

    def cleanup(self, machine: "Machine") -> None:
        """Remove what ``setup`` left behind; default: nothing."""
