"""Importing by name, on first use: the one way ``provisioning`` defers an import of its own.

Start-up stays fast because the big choices are tables of dotted names, resolved only when one
entry is used: drivers by URL scheme (``registry``), convergence strategies by name, state
stores by URL, ``converge`` commands by name (``cli/commands.py``), and the public names of
the facade and of ``provisioning.driver``, ``provisioning.machine`` and
``provisioning.transports.ssh`` (PEP 562 ``__getattr__``).
Everything else is imported at the top of the module that uses it (a test counts the
exceptions, see docs/architecture.md).

This module imports nothing of ``provisioning``: every layer may use it.
"""

from __future__ import annotations

import _thread  # threading's lock, without importing threading on every start-up
import contextlib
import gc
import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it alike)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Iterator

__all__ = ["load", "lazy_exports", "EntryPoints", "collector_paused", "own_the_process"]

#: whether the objects a start makes are frozen after it (``own_the_process``)
_freeze_after_start = False


def load(target: str) -> Any:
    """The object a ``"package.module:attribute"`` string names (the module alone without a
    ``:attribute``), importing its module now if needed."""
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def lazy_exports(package: str, exports: dict[str, str], public: list[str], *,
                 dir_all: bool = True) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's module ``__getattr__`` and ``__dir__`` (PEP 562): ``exports`` maps each name
    to the module defining it, imported when the name is first asked for and then kept in the
    package's namespace (so the second use costs a dictionary lookup); a name mapped to the
    package's submodule of that name is the submodule itself. ``dir()`` lists
    ``public`` and, with ``dir_all``, whatever the package holds already::

        __getattr__, __dir__ = lazy_exports(__name__, {"Machine": "provisioning.machine.base"},
                                            __all__)
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(module)
        value = loaded if module == f"{package}.{name}" else getattr(loaded, name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        if not dir_all:
            return list(public)
        return sorted(set(vars(importlib.import_module(package))) | set(public))

    return __getattr__, __dir__


class EntryPoints:
    """One entry-point group of the installed packages (name -> entry point), read once through
    importlib.metadata on first use: scanning every installed package's metadata costs a
    start-up more than the rest of a command, so built-in names are looked up before it."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._lock = _thread.allocate_lock()
        self._found: dict[str, Any] | None = None

    def all(self) -> dict[str, Any]:
        """name -> entry point; the first package declaring a name wins."""
        with self._lock:
            if self._found is None:
                from importlib.metadata import entry_points  # the scan is the cost: only now

                found: dict[str, Any] = {}
                for entry in entry_points(group=self.group):
                    found.setdefault(entry.name, entry)
                self._found = found
            return self._found

    def get(self, name: str) -> Any:
        """The entry point declared for ``name``, or None."""
        return self.all().get(name)

    def forget(self) -> None:
        """Read the group again on next use (after installing a package in this process)."""
        with self._lock:
            self._found = None


@contextlib.contextmanager
def collector_paused() -> "Iterator[None]":
    """The cycle collector paused while a command starts (its modules imported, its cluster
    file read): that allocates tens of thousands of objects that live as long as the process
    and makes no garbage cycles, so each collection it triggers walks them all for nothing
    (about a tenth of ``converge status``). Collection resumes after, as it was; a nested or
    concurrent use leaves it to the outermost. In a process a command owns
    (``own_the_process``), what was made until then is frozen first (``gc.freeze``): the
    first collections after would otherwise walk all of it once more (about 9 M instructions
    of a runner's start)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if _freeze_after_start:
                gc.freeze()
            gc.enable()


def own_the_process() -> None:
    """Say that this process runs one command (the ``converge`` console script): what its
    start makes lives as long as the process, so ``collector_paused`` freezes it. Not for a
    program that runs commands in-process (a test, a library user), whose older garbage would
    be frozen with it."""
    global _freeze_after_start
    _freeze_after_start = True
