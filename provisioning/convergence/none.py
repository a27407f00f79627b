"""The ``none`` strategy: machines are used as the driver readied them."""

from __future__ import annotations

from provisioning.convergence.base import ConvergenceStrategy

__all__ = ["NoConvergence"]


class NoConvergence(ConvergenceStrategy):
    name = "none"

    def converge(self, machine) -> bool:
        return False
