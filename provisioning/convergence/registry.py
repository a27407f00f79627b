"""Strategy name -> ConvergenceStrategy class, found like drivers: lazily, by name.

Lookup order: ``register_strategy`` calls; the three built in (``steps``, ``none``, ``ansible``,
found without reading any package's metadata: that scan costs a start-up more than the rest of
``converge up``); then the entry-point group ``provisioning.convergence``, read once through
importlib.metadata, for any other name (this package registers the same three there too).
A plug-in package adds a strategy with one line in its packaging metadata::

    [project.entry-points."provisioning.convergence"]
    salt = "provisioning_salt:SaltConvergence"
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from provisioning.convergence.steps import STEP_KINDS
from provisioning.errors import ConfigError
from provisioning.inputs.schema import Problems, describe_type, did_you_mean
from provisioning.lazy import EntryPoints, load

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.convergence.base import ConvergenceStrategy

__all__ = ["ENTRY_POINT_GROUP", "register_strategy", "strategy_class", "known_strategies",
           "parse_convergence"]

ENTRY_POINT_GROUP = "provisioning.convergence"
_BUILTIN = {"steps": "provisioning.convergence.steps:StepsConvergence",
            "none": "provisioning.convergence.none:NoConvergence",
            "ansible": "provisioning.convergence.ansible:AnsibleConvergence"}

_lock = threading.Lock()
_registered: dict[str, Any] = {}
_entry_points = EntryPoints(ENTRY_POINT_GROUP)


def register_strategy(name: str, cls_or_path: Any) -> None:
    """Register a strategy class (or a lazy ``"module:Class"`` string) under a name."""
    with _lock:
        _registered[name] = cls_or_path


def known_strategies() -> list[str]:
    return sorted(set(_registered) | set(_entry_points.all()) | set(_BUILTIN))


def strategy_class(name: str) -> "type[ConvergenceStrategy]":
    """The class registered under ``name``; ConfigError with a did-you-mean when unknown."""
    with _lock:
        target = _registered.get(name) or _BUILTIN.get(name)
    if target is None:
        ep = _entry_points.get(name)
        if ep is not None:
            return ep.load()
    if target is None:
        raise ConfigError(f"unknown convergence strategy {name!r}"
                          f"{did_you_mean(name, known_strategies())}", key="converge")
    found: type[ConvergenceStrategy] = load(target) if isinstance(target, str) else target
    return found


def parse_convergence(value: Any, key: str, problems: Problems,
                      base_dir: str) -> tuple[str, Any]:
    """A machine's ``converge:`` as (strategy name, parsed settings).

    A list (or nothing) is the ``steps`` strategy, as before plug-ins existed; a one-key mapping
    names the strategy: ``{ansible: {playbook: site.yml}}``, ``{steps: [...]}``, ``{none: {}}``.
    """
    if value is None:  # most machines of a fleet
        return "none", None
    if isinstance(value, list):
        return "steps", strategy_class("steps").parse(value, key, problems, base_dir)
    if not isinstance(value, dict) or len(value) != 1:
        problems.add(key, "expected a list of steps or one strategy like {ansible: {playbook: "
                          f"site.yml}}, got {describe_type(value)}"
                     + (f" with {len(value)} keys" if isinstance(value, dict) else ""))
        return "none", None
    name = next(iter(value))
    if name in STEP_KINDS:
        problems.add(key, f"expected a list of steps: write '- {name}: ...' under converge (or one "
                          "strategy like {ansible: {playbook: site.yml}})")
        return "none", None
    try:
        cls = strategy_class(str(name))
    except ConfigError:
        problems.add(f"{key}.{name}", f"unknown convergence strategy {name!r}"
                                      f"{did_you_mean(str(name), known_strategies())}")
        return "none", None
    return str(name), cls.parse(value[name], f"{key}.{name}", problems, base_dir)
