"""What a validated cluster file is made of: the ``ClusterFile``, its machines, and the groups
the loader expands into machines. Apart from ``file.py`` (the loader) so that the loader's
helpers (``matrix``, ``topology``) can name these without importing the loader back."""

from __future__ import annotations

import copy
import os
import re
from dataclasses import field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from provisioning.config import Config
from provisioning.convergence.base import ConvergenceContext
from provisioning.convergence.registry import strategy_class
from provisioning.errors import ConfigError
from provisioning.inputs.records import record
from provisioning.inputs.schema import Problems, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.healthcheck import HealthCheck
    from provisioning.convergence.base import ConvergenceStrategy
    from provisioning.convergence.steps import Step

__all__ = ["ClusterFile", "MachineDefinition", "VerifyItem", "GroupSpec", "deep_merge"]


@record(frozen=True)
class VerifyItem:
    """One verification: a command run on the machine, or a directory of pytest (our fixtures)
    or pytest-testinfra tests (its ``host`` fixture) run against it."""

    kind: str          # "command", "pytest" or "testinfra"
    value: str
    key: str


@record(frozen=True)
class MachineDefinition:
    """One machine after count expansion and option merging.

    ``group`` is the name that selects it with its siblings; ``role`` the group as written in
    its scope (``db`` inside instance ``app-bookworm``), which ``after`` and the ``machines``
    template variable use; ``instance`` is the matrix instance (``SUITE-PLATFORM``) it belongs
    to, None in a plain ``machines:`` file. ``strategy``/``settings``: its convergence."""

    name: str
    group: str
    index: int | None
    driver_url: str
    machine_options: Mapping[str, Any]
    steps: tuple["Step", ...] = ()
    healthchecks: tuple["HealthCheck", ...] = ()
    verify: tuple[VerifyItem, ...] = ()
    key: str = ""
    strategy: str = "none"
    settings: Any = None
    after: tuple[str, ...] = ()
    role: str = ""
    instance: str | None = None

    def variables(self) -> dict[str, Any]:
        """What templates see as ``machine`` (name and address are added when it is ready)."""
        return {"name": self.name, "group": self.role or self.group, "index": self.index,
                "instance": self.instance, "driver_url": self.driver_url,
                "options": copy.deepcopy(dict(self.machine_options))}


@record
class ClusterFile:
    """A validated cluster file."""

    path: str
    base_dir: str
    driver: str | None
    driver_options: dict[str, Any] = field(default_factory=dict)
    private_key_paths: list[str] = field(default_factory=list)
    private_keys: dict[str, str] = field(default_factory=dict)
    machine_options: dict[str, Any] = field(default_factory=dict)
    machines: dict[str, MachineDefinition] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    state: str | None = None
    #: matrix instance -> its machine names (empty for a plain ``machines:`` file)
    instances: dict[str, list[str]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    #: ``images:``, name -> provisioning.images.ImageDefinition
    images: dict[str, Any] = field(default_factory=dict)
    #: the cluster's name in the state store (``name:``, else ``default_cluster_name(path)``)
    name: str = ""
    #: groups with ``prevent_destroy: true``: a plan that would destroy one of them is an error
    prevent_destroy: frozenset[str] = frozenset()
    #: groups with ``create_before_destroy: true``: a replace makes the new machine first, then
    #: destroys the old one (``provisioning.cluster.replace``)
    create_before_destroy: frozenset[str] = frozenset()

    def config(self, base: "Config | None" = None) -> "Config":
        """Settings for this cluster: ``provisioning.yml`` beside it, the environment, then the
        cluster's own driver options and keys."""
        base = base or Config.load(cwd=self.base_dir)
        extra: dict[str, Any] = {"driver_options": self.driver_options,
                                 "private_keys": self.private_keys}
        if self.private_key_paths:
            extra["private_key_paths"] = [os.path.join(self.base_dir, os.path.expanduser(p))
                                          for p in self.private_key_paths] + \
                list(base.data.get("private_key_paths") or [])
        return base.with_data(extra, source=self.path)

    def state_url(self, explicit: str | None, config: "Config | None" = None) -> str | None:
        """--state wins, then $PROVISIONING_STATE (config), then the file's ``state``. A
        control or format character (newline, bidi override) would name a state file no one
        meant: refused before anything is written, as the environment variable is."""
        for value, key in ((explicit, "--state"),
                           (config.state if config is not None else None, "PROVISIONING_STATE"),
                           (self.state, "state")):
            if not value:
                continue
            if not value.isprintable():
                at = next(i for i, c in enumerate(value) if not c.isprintable())
                raise ConfigError(f"the state location holds the character {value[at]!r} at "
                                  f"position {at + 1} ({value[:60]!r}); give it without it",
                                  key=key, file=None if key != "state" else self.path)
            return value
        return None

    def select(self, names: Iterable[str] = ()) -> list[MachineDefinition]:
        """Machines by name or group name (all when none given), in file order."""
        names = list(names)
        if not names:
            return list(self.machines.values())
        wanted: list[str] = []
        problems = Problems(self.path)
        for name in names:
            if name in self.machines:
                members = [name]
            elif name in self.groups:
                members = self.groups[name]
            elif name in self.instances:
                members = self.instances[name]
            else:
                choices = list(self.machines) + [g for g in self.groups if g not in self.machines]
                choices += [i for i in self.instances if i not in choices]
                problems.add(f"machines.{name}", f"no machine or group {name!r} in this cluster"
                                                 f"{did_you_mean(name, choices)}")
                continue
            wanted += [m for m in members if m not in wanted]
        problems.raise_if_any()
        return [self.machines[n] for n in self.machines if n in wanted]

    def replaceable(self, names: Iterable[str]) -> list[str]:
        """``names`` given to ``--replace``: machines of this file (a group is refused naming
        its machines, an unknown name with a did-you-mean)."""
        names = list(names)
        unknown = [n for n in names if n not in self.machines]
        if unknown:
            self.select(unknown)  # ConfigError with a did-you-mean
            problems = Problems(self.path)
            for name in unknown:
                problems.add(f"machines.{name}", f"--replace {name}: {name!r} is a group, not a "
                             "machine; name each machine to replace ("
                             f"{', '.join(d.name for d in self.select([name]))})")
            problems.raise_if_any()
        return names

    def choose(self, patterns: Iterable[str] = ()) -> list[MachineDefinition]:
        """Machines by name, group, instance, or a regular expression over instance names (and
        machine names), like test-kitchen's ``kitchen verify REGEX``; all when none given."""
        patterns = list(patterns)
        exact = [p for p in patterns if p in self.machines or p in self.groups
                 or p in self.instances]
        chosen = {d.name for d in self.select(exact)} if exact else set()
        for pattern in patterns:
            if pattern in exact:
                continue
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{pattern!r} is no machine, group or instance, nor a valid "
                                  f"regular expression ({exc})", file=self.path) from exc
            found = {d.name for d in self.machines.values()
                     if regex.search(d.instance or d.name) or regex.search(d.name)}
            if not found:
                self.select([pattern])  # raises the did-you-mean for a mistyped name
            chosen |= found
        return [d for d in self.machines.values() if not patterns or d.name in chosen]

    def login_target(self, name: str) -> str:
        """The machine ``converge login NAME`` opens: the machine itself, or the first machine
        of an instance or group (``converge login app-bookworm`` -> ``app-bookworm-db``)."""
        if name in self.machines:
            return name
        members = self.instances.get(name) or self.groups.get(name)
        return members[0] if members else name

    def instance_of(self, definition: MachineDefinition) -> str:
        """The name its verify result is recorded under: its matrix instance, else itself."""
        return definition.instance or definition.name

    def convergence(self, definition: MachineDefinition,
                    machines: Mapping[str, Any] | None = None) -> "ConvergenceStrategy":
        """The machine's strategy, built from its ``converge`` settings; ``machines`` is what
        templates see as ``machines`` (see ``provisioning.cluster.topology.machines_view``)."""
        name = definition.strategy
        if name == "steps" and not definition.settings:
            name = "none"
        context = ConvergenceContext(self.base_dir, self.path,
                                     self.variables(definition, machines))
        return strategy_class(name).from_settings(definition.settings, context)

    def variables(self, definition: MachineDefinition,
                  machines: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Template variables: ``machine``, ``options``, ``cluster`` (names and groups) and
        ``machines`` (group -> machines with their addresses, when known)."""
        return {"machine": definition.variables(),
                "options": copy.deepcopy(dict(definition.machine_options)),
                "cluster": self._cluster_view(),
                # shared, not copied: copying every machine's view for each machine made a
                # fleet's cost grow with the square of its size; templates only read them
                "machines": dict(machines or {})}

    def _cluster_view(self) -> dict[str, Any]:
        """``cluster`` for templates: names and groups, built once per file."""
        view = self.__dict__.get("_view")
        if view is None or len(view["machines"]) != len(self.machines):
            view = {"machines": list(self.machines),
                    "groups": {g: list(m) for g, m in self.groups.items()}, "file": self.path,
                    "name": self.name}
            self.__dict__["_view"] = view
        return view


@record(frozen=True)
class GroupSpec:
    """One group to expand into machines: ``name`` is its full name (``app-bookworm-db``),
    ``role`` the group as written in its scope (``db``), ``instance`` its matrix instance."""

    name: str
    body: Any
    key: str
    role: str
    instance: str | None
    driver: str | None
    defaults: Mapping[str, Any]


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over a deep copy of ``base``; mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
