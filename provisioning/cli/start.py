"""What a command's start does before its modules load (``provisioning.cli.main`` calls it by
name after ``--help`` and ``--version``, which need none of it)."""

from __future__ import annotations

import _thread
import importlib
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it alike)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

__all__ = ["dataclasses_with_inspect_on_use"]


class _InspectOnUse:
    """Stands for ``inspect`` in ``dataclasses``' namespace until its first use, then puts the
    real module there."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        module = importlib.import_module("inspect")
        sys.modules["dataclasses"].inspect = module  # type: ignore[attr-defined]
        return getattr(module, name)


def dataclasses_with_inspect_on_use() -> None:
    """Import ``dataclasses`` now, its ``inspect`` on first use. ``dataclasses`` imports
    ``inspect`` (with ``ast``, ``dis``, ``tokenize``: about 36 M instructions, a tenth of what a
    runner spends before its first claim) only to write a docstring for a class that has none,
    and every data class of ours has one. ``inspect`` stands in ``sys.modules`` only while
    ``dataclasses`` loads, so any later ``import inspect`` gets the real module; nothing is done
    when either module is loaded already or another thread runs (a command's start is
    single-threaded)."""
    if "dataclasses" in sys.modules or "inspect" in sys.modules or _thread._count():
        return
    sys.modules["inspect"] = _InspectOnUse()  # type: ignore[assignment]
    try:
        importlib.import_module("dataclasses")
    finally:
        if isinstance(sys.modules.get("inspect"), _InspectOnUse):
            del sys.modules["inspect"]
