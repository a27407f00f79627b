"""Plans: what ``up`` would do to each machine, computed from the wish (the cluster file), the
record (the state) and, when refreshed, the warehouse's view (the driver), changing nothing.

Actions per machine: ``create`` (not in the state, or its resource vanished), ``adopt`` (not in
the state, but the driver's allocate would adopt a resource tagged for it: its first planned
action starts with "adopt "), ``start`` (it is stopped: its steps are checked after the start),
``converge`` (the steps that would change, each with why), ``replace`` (asked for with
``--replace``; with ``create_before_destroy`` the new machine first, see
``provisioning.cluster.replace``), ``destroy`` (scale-down, or a machine of this cluster no
longer in the file), ``nothing``. Besides its action, a machine lists its ``deposed``
resources (moved aside by a create-before-destroy replace that has not finished): applying
destroys them once the machine is up.

A plan saved as JSON (``converge plan --out``) records the cluster file's sha256 and each
machine's state version; ``apply`` refuses it with ``StalePlan`` once either changed. The
document (``PLAN_FORMAT``, ``PLAN_VERSION``) is described in docs/cli.md.
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import asdict, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence, cast

from provisioning.actions import RecordingActionHandler
from provisioning.cluster.replace import check_drivers
from provisioning.errors import ConfigError, ConfigProblem, ProvisioningError, StalePlan
from provisioning.inputs.digest import sha256_hex
from provisioning.inputs.records import record
from provisioning.inputs.userfiles import MAX_OUTPUT_BYTES, read_user_text
from provisioning.spec import MachineSpec
from provisioning.store import same_state

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.file import MachineDefinition
    from provisioning.cluster.runner import ClusterRunner

__all__ = ["Plan", "MachinePlan", "PlannedStep", "make_plan", "file_sha256", "check_fresh",
           "doomed_entries",
           "ACTIONS", "PLAN_FORMAT", "PLAN_VERSION"]

PLAN_FORMAT = "provisioning-plan"
PLAN_VERSION = 1
ACTIONS = ("create", "adopt", "start", "converge", "replace", "destroy", "nothing")
#: the note on the steps of a stopped machine: they cannot be read until it runs
AFTER_START = "checked after start"
#: how a driver's allocate words taking over a resource tagged for the machine (the base
#: class contract: "adopts a tagged resource instead of creating a second one")
ADOPT_PREFIX = "adopt "


@record(frozen=True)
class PlannedStep:
    """One change the action would make: ``update etc/motd (sha256 differs)``, and ``why``
    apart when the description gives it (``sha256 differs``)."""

    description: str
    why: str | None = None

    @classmethod
    def from_text(cls, text: str) -> "PlannedStep":
        match = re.match(r"^.*\S \(([^()]*)\)$", text)
        return cls(text, match.group(1) if match else None)

    def __str__(self) -> str:
        if self.why and not self.description.endswith(f"({self.why})"):
            return f"{self.description} ({self.why})"
        return self.description


@record
class MachinePlan:
    """What will happen to one machine, and the state version it was planned from."""

    name: str
    action: str
    reason: str
    group: str | None = None
    driver_url: str | None = None
    state_version: int = 0
    observed: str | None = None          # the driver's word when refreshed: running, stopped...
    steps: list[PlannedStep] = field(default_factory=list)
    #: a replace that creates the new machine before destroying the old one
    create_before_destroy: bool = False
    #: the resources moved aside by an unfinished create-before-destroy replace, by label:
    #: destroyed once the machine is up
    deposed: list[str] = field(default_factory=list)
    #: what the driver found different from the wish that neither up nor apply changes (a
    #: size or image a resource cannot take after creation): shown, so plan hides no drift
    drift: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = [asdict(s) for s in self.steps]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MachinePlan":
        body = dict(data)
        body["steps"] = [PlannedStep(**s) for s in body.get("steps") or []]
        machine = cls(**body)
        if not isinstance(machine.name, str) or machine.action not in ACTIONS:
            raise ValueError(f"machine {machine.name!r}: action {machine.action!r} is not one of "
                             f"{', '.join(ACTIONS)}")
        if type(machine.state_version) is not int:
            raise ValueError(f"machine {machine.name!r}: state_version "
                             f"{machine.state_version!r} is not a number")
        return machine


@record
class Plan:
    """A plan for one cluster: per-machine actions and what they were planned from."""

    cluster: str
    file: str
    file_sha256: str
    state: str
    machines: list[MachinePlan]
    refreshed: bool = True
    created_at: str = ""
    selection: list[str] = field(default_factory=list)
    #: the file's images the machines boot from that apply would build first:
    #: ``{"name", "description"}`` each
    images: list[dict[str, str]] = field(default_factory=list)

    def by_action(self, action: str) -> list[MachinePlan]:
        return [m for m in self.machines if m.action == action]

    def counts(self) -> dict[str, int]:
        counts = {action: len(self.by_action(action)) for action in ACTIONS}
        counts["steps"] = sum(len(m.steps) for m in self.by_action("converge"))
        counts["deposed"] = sum(len(m.deposed) for m in self.machines)
        return counts

    @property
    def changes(self) -> bool:
        return bool(self.images) or any(m.action != "nothing" or m.deposed
                                        for m in self.machines)

    def summary(self) -> str:
        """``plan: 2 to create, 1 to converge (3 steps), 1 to destroy, 5 unchanged``."""
        counts = self.counts()
        parts = [f"{len(self.images)} image{'s' if len(self.images) != 1 else ''} to build"] \
            if self.images else []
        for action, verb in (("create", "to create"), ("adopt", "to adopt"),
                             ("start", "to start"), ("converge", "to converge"),
                             ("replace", "to replace"), ("destroy", "to destroy")):
            if counts[action]:
                extra = (f" ({counts['steps']} step{'s' if counts['steps'] != 1 else ''})"
                         if action == "converge" else "")
                parts.append(f"{counts[action]} {verb}{extra}")
        if counts["deposed"]:
            parts.append(f"{counts['deposed']} deposed to destroy")
        parts.append(f"{counts['nothing']} unchanged")
        return "plan: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "cluster": self.cluster,
                "file": self.file, "file_sha256": self.file_sha256, "state": self.state,
                "refreshed": self.refreshed, "created_at": self.created_at,
                "selection": list(self.selection), "summary": self.counts(),
                "images": [dict(i) for i in self.images],
                "machines": [m.to_dict() for m in self.machines]}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "plan") -> "Plan":
        """A plan read back from JSON; ``ConfigError`` when it is not one this code can apply."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise ConfigError("not a plan: expected the JSON document 'converge plan --out FILE' "
                              "writes", file=source, key="format")
        if data.get("version") != PLAN_VERSION:
            raise ConfigError(f"plan version {data.get('version')!r} is not {PLAN_VERSION}, the "
                              "one this provisioning writes; make the plan again with this "
                              "version", file=source, key="version")
        try:
            return cls(cluster=data["cluster"], file=data["file"],
                       file_sha256=data["file_sha256"], state=data["state"],
                       refreshed=bool(data.get("refreshed", True)),
                       created_at=data.get("created_at", ""),
                       selection=list(data.get("selection") or []),
                       images=[dict(i) for i in data.get("images") or []],
                       machines=[MachinePlan.from_dict(m) for m in data["machines"]])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"the plan is damaged ({type(exc).__name__}: {exc}); make it again "
                              "with 'converge plan --out FILE'", file=source) from exc

    @classmethod
    def load(cls, path: str) -> "Plan":
        # bounded and regular files only: ``apply /dev/zero`` (or a FIFO) must not read for ever
        text = read_user_text(path, what="plan", limit=MAX_OUTPUT_BYTES)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not JSON: {exc}", file=path) from exc
        except RecursionError as exc:  # "[[[[..." nested deeper than any plan is
            raise ConfigError("not a plan: JSON nested too deeply; make it again with "
                              "'converge plan --out FILE'", file=path) from exc
        return cls.from_dict(data, source=path)


def file_sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return sha256_hex(handle.read())


def check_fresh(plan: Plan, runner: "ClusterRunner", source: str = "plan") -> None:
    """Raise ``StalePlan`` naming what changed since the plan was made (``ConfigError`` for
    what no plan of this file says: an edited plan)."""
    edited = [f"machine {m.name!r} is planned {m.action!r}, but the cluster file "
              f"{'has it' if m.action == 'destroy' else 'has no such machine'}"
              for m in plan.machines
              if (m.action == "destroy") == (m.name in runner.cluster.machines)]
    file_changed = plan.file_sha256 != file_sha256(runner.cluster.path)
    if edited and not file_changed:
        raise ConfigError(f"the plan was changed after it was made ({'; '.join(edited)}); make "
                          "it again with 'converge plan --out FILE'", file=source)
    changes = []
    if plan.cluster != runner.name:
        changes.append(f"it was made for cluster {plan.cluster!r}, this file is cluster "
                       f"{runner.name!r}")
    if file_changed:
        changes.append(f"the cluster file {runner.cluster.path} changed")
    if not same_state(plan.state, runner.store.url):
        changes.append(f"it was made against state {plan.state}, not {runner.store.url}")
    for machine in plan.machines:
        entry = runner.store.get("machine", machine.name)
        version = entry.version if entry is not None else 0
        if version != machine.state_version:
            changes.append(f"machine {machine.name!r} changed in the state (version "
                           f"{machine.state_version} then, {version} now)")
    if changes:
        raise StalePlan(source, changes)


# -- computing a plan -------------------------------------------------------------------------
def make_plan(runner: "ClusterRunner", names: Iterable[str] = (), *, refresh: bool = True,
              replace: Sequence[str] = ()) -> Plan:
    """The plan for the machines (or groups) ``names`` (all when none): conflicts with other
    clusters and destroys that ``prevent_destroy`` forbids are errors, raised before anything
    is asked of a driver."""
    cluster = runner.cluster
    names = list(names)
    definitions = cluster.select(names)
    replace = cluster.replaceable(replace)
    runner.refuse_foreign([d.name for d in definitions])
    entries = runner.entries()
    doomed = doomed_entries(runner, names, entries)
    problems = [ConfigProblem(f"the plan would destroy {e.name} ({_destroy_reason(runner, e)}) "
                              f"but group {e.group!r} has prevent_destroy: true; raise its count "
                              "again, or remove prevent_destroy first", file=cluster.path,
                              key=f"machines.{e.group}.prevent_destroy")
                for e in doomed if e.group in cluster.prevent_destroy]
    problems += [ConfigProblem(f"--replace {n} would destroy it, but group "
                               f"{cluster.machines[n].group!r} has prevent_destroy: true",
                               file=cluster.path,
                               key=f"machines.{cluster.machines[n].group}.prevent_destroy")
                 for n in replace if cluster.machines[n].group in cluster.prevent_destroy]
    if problems:
        raise ConfigError(problems=problems)
    check_drivers(cluster, definitions)

    booted = {d.name: d for d in _with_images(runner, definitions)}
    images = _images_to_build(runner, definitions)

    def one(definition: "MachineDefinition") -> MachinePlan:
        planned = _plan_machine(runner, booted[definition.name], entries.get(definition.name),
                                refresh=refresh, replace=definition.name in replace)
        if planned.deposed and planned.action != "replace":
            planned.reason += (f"; a replace did not finish: {len(planned.deposed)} deposed "
                               "resource(s) to destroy once it is up")
        return planned

    results = runner.provisioner.parallelizer.run(
        (d.name, functools.partial(one, d)) for d in definitions)
    machines: list[MachinePlan] = []
    for definition in definitions:
        outcome = results[definition.name]
        if outcome.error is not None:
            raise outcome.error
        machines.append(cast(MachinePlan, outcome.value))
    for entry in doomed:
        machines.append(MachinePlan(entry.name, "destroy", _destroy_reason(runner, entry),
                                    group=entry.group, driver_url=entry.driver_url,
                                    state_version=entry.version,
                                    deposed=_deposed(runner, entry)))
    return Plan(cluster=runner.name, file=cluster.path, file_sha256=file_sha256(cluster.path),
                state=runner.store.url, machines=machines, refreshed=refresh,
                created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), selection=names,
                images=images)


def doomed_entries(runner: "ClusterRunner", names: Sequence[str] = (),
                   entries: "dict[str, MachineSpec] | None" = None) -> list["MachineSpec"]:
    """This cluster's saved machines the file no longer names (a lowered ``count``, a removed
    group), highest-numbered first: what a plan destroys. With ``names`` (machines or groups),
    only those of the named groups."""
    cluster = runner.cluster
    entries = runner.entries() if entries is None else entries
    wanted_groups = {d.group for d in cluster.select(names)} if names else \
        set(cluster.groups) | {e.group for e in entries.values() if e.group}
    doomed = [e for n, e in entries.items() if n not in cluster.machines
              and (not names or e.group in wanted_groups or n in names)]
    return sorted(doomed, key=lambda e: _number(e.name), reverse=True)


def _number(name: str) -> tuple[str, int]:
    match = re.match(r"^(.*?)(\d+)$", name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def _with_images(runner: "ClusterRunner", definitions: list["MachineDefinition"]
                 ) -> list["MachineDefinition"]:
    """Definitions booting from an image of the file, pointed at its built id, or at its base
    while it is not built yet: planning reads, it never builds (apply does)."""
    from dataclasses import replace

    builder = runner.images
    out = []
    for definition in definitions:
        name = definition.machine_options.get("image")
        if name in builder.images:
            image = builder.status(name).image_id or builder.stand_in(name)
            definition = replace(definition,
                                 machine_options={**definition.machine_options, "image": image})
        out.append(definition)
    return out


def _images_to_build(runner: "ClusterRunner", definitions: list["MachineDefinition"]
                     ) -> list[dict[str, str]]:
    """The file's images these machines boot from (and their parents) that are not built or
    are outdated, parents first."""
    builder = runner.images
    order: list[str] = []

    def visit(name: str) -> None:
        base = builder.images[name].base
        if base in builder.images:
            visit(base)
        if name not in order:
            order.append(name)
    for definition in definitions:
        name = definition.machine_options.get("image")
        if name in builder.images:
            visit(name)
    out = []
    for name in order:
        status = builder.status(name)
        if status.needs_build:
            out.append({"name": name, "description": f"build image {name} "
                        f"({builder.definition(name).summary()}; {status.reason()})"})
    return out


def _destroy_reason(runner: "ClusterRunner", entry: "MachineSpec") -> str:
    group = entry.group
    if group in runner.cluster.groups:
        count = len(runner.cluster.groups[group])
        return f"scale-down: group {group!r} now has {count} machine{'s' if count != 1 else ''}"
    return "no longer in the cluster file"


def _plan_machine(runner: "ClusterRunner", definition: "MachineDefinition",
                  spec: "MachineSpec | None", *, refresh: bool, replace: bool) -> MachinePlan:
    name = definition.name
    plan = MachinePlan(name, "nothing", "", group=definition.group,
                       driver_url=definition.driver_url,
                       state_version=spec.version if spec is not None else 0)
    if spec is None:  # not saved for this cluster (and no other cluster's: refuse_foreign)
        spec = MachineSpec(name, store=runner.store)  # a fresh, unsaved entry, no query
        plan.state_version = spec.version
    plan.deposed = _deposed(runner, spec)
    if replace and spec.exists:  # a machine not made yet is simply created
        plan.action = "replace"
        steps = [PlannedStep(s.summary()) for s in definition.steps]
        if definition.group in runner.cluster.create_before_destroy:
            plan.create_before_destroy = True
            plan.reason = ("asked for with --replace: create the new machine, then destroy the "
                           "old one (create_before_destroy)")
            plan.steps = [PlannedStep("create it anew, beside the old one"), *steps,
                          PlannedStep("destroy the old one (deposed)")]
        else:
            plan.reason = "asked for with --replace: destroy, then create"
            plan.steps = [PlannedStep("destroy the machine"), PlannedStep("create it anew"),
                          *steps]
        return plan
    if not spec.exists:
        plan.action = "create"
        plan.reason = "not in the state" if not spec.deposed else \
            "the new machine of a replace (create_before_destroy) is not made yet"
        plan.steps = (_rehearse(runner, definition, spec) if refresh else
                      [PlannedStep(s.summary()) for s in definition.steps])
        if plan.steps and plan.steps[0].description.startswith(ADOPT_PREFIX):
            plan.action = "adopt"
            plan.reason = ("not in the state, but a resource tagged for it exists (a run that "
                           "died before saving, or 'state rm'): adopted, not created again")
        return plan
    if not refresh:
        plan.action = "converge"
        plan.reason = "not refreshed: its steps are checked when applied"
        return plan
    driver = runner.provisioner.driver_for(spec, runner.driver(definition.driver_url))
    plan.observed = state = driver.machine_state(spec)
    if state == "missing":
        plan.action = "create"
        plan.reason = "its resource is gone at the provider (deleted behind our back)"
        gone = runner.provisioner.spec(name)
        gone.reference, gone.version = {}, spec.version
        plan.steps = _rehearse(runner, definition, gone)
        return plan
    if state == "stopped":
        plan.action, plan.reason = "start", "it is stopped"
        plan.steps = [PlannedStep(s.summary(), AFTER_START) for s in definition.steps]
        return plan
    plan.steps = _rehearse(runner, definition, spec, drift=plan.drift)
    if plan.steps:
        plan.action = "converge"
        plan.reason = f"{len(plan.steps)} change{'s' if len(plan.steps) != 1 else ''}"
    elif plan.drift:
        plan.reason = (f"differs from the file in what up cannot change; '--replace "
                       f"{definition.name}' re-creates it")
    else:
        plan.reason = "up to date"
    return plan


def _deposed(runner: "ClusterRunner", spec: "MachineSpec") -> list[str]:
    """Labels of the machine's deposed resources (``destroy server srv-1a2b`` names them)."""
    labels = []
    for reference in spec.deposed:
        loose = MachineSpec(spec.name, reference=dict(reference))
        try:
            labels.append(runner.provisioner.driver_for(loose).resource_label(reference))
        except ProvisioningError:  # a driver that cannot be loaded: the reference says enough
            labels.append(str(reference))
    return labels


def _rehearse(runner: "ClusterRunner", definition: "MachineDefinition",
              spec: "MachineSpec", *, drift: list[str] | None = None) -> list[PlannedStep]:
    """Run the machine's pipeline under why-run (no lock, nothing saved) and keep the changes
    it reports. ``drift`` (an existing machine's) gets what its allocate reported, which is
    what ``compare_with_wish`` says differs and up cannot change: compared once, as up does."""
    recorder = RecordingActionHandler(why_run=True)
    handler = recorder.for_machine(definition.name)
    driver = runner.provisioner.driver_for(spec, runner.driver(definition.driver_url))
    options = definition.machine_options
    try:
        driver.allocate_machine(handler, spec, options)
        if drift is not None:
            drift += [e.description for e in recorder.events if e.kind == "progress"]
        machine = driver.ready_machine(handler, spec, options)
        strategy = runner.cluster.convergence(definition)
        if machine is None:
            strategy.plan(handler)
        else:
            try:
                machine.action_handler = handler
                machine.convergence = strategy
                machine.setup_convergence()
                try:
                    machine.converge()
                finally:
                    machine.cleanup_convergence()
            finally:
                machine.disconnect()
    except ProvisioningError as exc:
        if exc.machine is None:
            exc.machine = definition.name
        raise
    return [PlannedStep.from_text(e.description) for e in recorder.actions()]
