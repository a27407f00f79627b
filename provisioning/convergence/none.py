"""The ``none`` strategy: machines are used as the driver readied them."""

from __future__ import annotations

from typing import Any

from provisioning.convergence.base import ConvergenceStrategy
from provisioning.inputs.schema import describe_type

__all__ = ["NoConvergence"]


class NoConvergence(ConvergenceStrategy):
    name = "none"

    @classmethod
    def parse(cls, value: Any, key: str, problems, base_dir: str) -> None:
        if value not in (None, {}, True):
            problems.add(key, f"'none' takes no settings, got {describe_type(value)}")
        return None

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return {"type": ["object", "null", "boolean"], "maxProperties": 0}

    def converge(self, machine) -> bool:
        return False
