"""The ``steps`` strategy: an ordered list of idempotent steps from the cluster file.

- ``file``: ``path`` with exactly one of ``content``, ``source`` (a local file) or ``template``
  (a local Jinja file rendered with ``machine``, ``options`` and ``cluster``); ``mode``,
  ``owner``, ``group``. Written only when the sha256 differs.
- ``directory``: ``path`` (created with parents), ``mode``, ``owner``, ``group``.
- ``command``: ``run`` (rendered like a template when it holds ``{{``), guarded by ``creates``
  (a path), ``unless`` and ``onlyif`` (commands); ``sudo``, ``env``, ``timeout``, ``cwd``.
  Without a guard it runs every time, like any command.
- ``script``: a local ``source`` uploaded to a temporary path, run with ``args``, then removed;
  the same guards as ``command``.
- ``package``: Debian packages ``name`` (one or a list), ``state`` present (default) or absent;
  checked with ``dpkg-query``, changed with apt-get (``provisioning.convergence.packages``).

Each step checks the machine first and changes only what differs; the changes go through the
machine's action handler, so why-run reports "would update /etc/motd (sha256 differs)" instead.
Guards and checks are reads, so they run under why-run too.
"""

from __future__ import annotations

import abc
import os
import shlex
from dataclasses import field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from provisioning.convergence import packages
from provisioning.convergence.base import ConvergenceContext, ConvergenceStrategy
from provisioning.inputs.records import record
from provisioning.inputs.schema import Problems, describe_type, did_you_mean
from provisioning.inputs.templating import render_file, render_text, template_syntax_problem
from provisioning.machine.base import normalize_mode

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.machine.base import Machine

__all__ = ["Step", "FileStep", "DirectoryStep", "CommandStep", "ScriptStep", "PackageStep",
           "StepsConvergence", "parse_steps", "STEP_KINDS"]


@record(frozen=True)
class Step(abc.ABC):
    """One step; ``key`` is its key path in the cluster file (for errors)."""

    key: str
    kind: ClassVar[str] = "?"

    @abc.abstractmethod
    def apply(self, machine: "Machine", context: "StepContext") -> bool:
        """Bring the machine in line with this step; True when something changed."""

    @abc.abstractmethod
    def summary(self) -> str:
        """What the step does, for a plan of a machine that does not exist yet."""


#: what steps need besides the machine (the one context every strategy gets)
StepContext = ConvergenceContext


# -- attributes shared by file and directory ------------------------------------------------
@record(frozen=True)
class _Attributes:
    """Mode, owner and group a file or directory step sets (None: left as they are)."""

    mode: str | None = None
    owner: str | None = None
    group: str | None = None


@record(frozen=True)
class FileStep(Step):
    """A file with given content, a copy of a local file, or a rendered template."""

    kind: ClassVar[str] = "file"
    path: str = ""
    content: str | None = None
    source: str | None = None
    template: str | None = None
    attributes: _Attributes = _Attributes()

    def summary(self) -> str:
        origin = ("from " + self.source if self.source else
                  "from template " + self.template if self.template else "with given content")
        return f"create {self.path} {origin}{_attrs_text(self.attributes)}"

    def apply(self, machine, context) -> bool:
        attrs = self.attributes
        if self.source is not None:
            changed = machine.upload_file(context.local_path(self.source), self.path,
                                          mode=attrs.mode, owner=attrs.owner, group=attrs.group)
        else:
            data = self.content if self.template is None else render_template(
                self.template, context, key=f"{self.key}.template")
            changed = machine.write_file(self.path, data or "", mode=attrs.mode,
                                         owner=attrs.owner, group=attrs.group)
        if not changed:
            machine.action_handler.report_progress(f"file {self.path} is up to date")
        return changed


@record(frozen=True)
class DirectoryStep(Step):
    """A directory (and its parents) with the given attributes."""

    kind: ClassVar[str] = "directory"
    path: str = ""
    attributes: _Attributes = _Attributes()

    def summary(self) -> str:
        return f"create directory {self.path}{_attrs_text(self.attributes)}"

    def apply(self, machine, context) -> bool:
        attrs = self.attributes
        changed = machine.create_dir(self.path, mode=attrs.mode, owner=attrs.owner,
                                     group=attrs.group)
        if not changed:
            machine.action_handler.report_progress(f"directory {self.path} is up to date")
        return changed


@record(frozen=True)
class _Guarded(Step):
    """A step that runs something unless a guard (creates, unless, onlyif) says it need not."""

    creates: str | None = None
    unless: str | None = None
    onlyif: str | None = None
    sudo: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None

    def _skip_reason(self, machine: "Machine") -> str | None:
        """Why this step need not run (a guard says so), or None to run it."""
        if self.creates is not None and machine.file_exists(self.creates):
            return f"{self.creates} exists"
        if self.onlyif is not None:
            check = machine.execute_always(self.onlyif, check=False, sudo=self.sudo, env=self.env,
                                           timeout=self.timeout)
            if not check.ok:
                return f"onlyif {self.onlyif!r} exited {check.exit_status}"
        if self.unless is not None:
            check = machine.execute_always(self.unless, check=False, sudo=self.sudo, env=self.env,
                                           timeout=self.timeout)
            if check.ok:
                return f"unless {self.unless!r} succeeded"
        return None

    def _guard_text(self) -> str:
        parts = [f"creates {self.creates}" if self.creates else "",
                 f"unless {self.unless!r}" if self.unless else "",
                 f"onlyif {self.onlyif!r}" if self.onlyif else ""]
        parts = [p for p in parts if p]
        return f" ({', '.join(parts)})" if parts else ""


@record(frozen=True)
class CommandStep(_Guarded):
    """A shell command, run on every converge unless its guard says not."""

    kind: ClassVar[str] = "command"
    run: str = ""
    cwd: str | None = None

    def _run(self, context: StepContext) -> str:
        return render_string(self.run, context.variables, file=context.file, key=f"{self.key}.run")

    def summary(self) -> str:
        return f"run {self.run!r}{self._guard_text()}"

    def apply(self, machine, context) -> bool:
        reason = self._skip_reason(machine)
        if reason is not None:
            machine.action_handler.report_progress(f"skip {self.run!r}: {reason}")
            return False
        run = self._run(context)
        if self.cwd:  # where the machine keeps that directory (a fake: machine's own root)
            run = f"cd {shlex.quote(machine.transport.resolve_path(self.cwd))} && {run}"
        machine.execute(run, sudo=self.sudo, env=self.env, timeout=self.timeout,
                        description=f"run {self._run(context)!r}")
        return True


@record(frozen=True)
class ScriptStep(_Guarded):
    """A local script, uploaded to the machine's /tmp, run with its arguments and removed."""

    kind: ClassVar[str] = "script"
    source: str = ""
    args: tuple[str, ...] = ()

    def summary(self) -> str:
        return f"upload and run script {self.source}{self._guard_text()}"

    def apply(self, machine, context) -> bool:
        reason = self._skip_reason(machine)
        if reason is not None:
            machine.action_handler.report_progress(f"skip script {self.source}: {reason}")
            return False
        local = context.local_path(self.source)
        size = os.path.getsize(local)

        def upload_and_run() -> None:
            # the machine's /tmp: a fake: machine keeps it inside its own root
            tmp = shlex.quote(machine.transport.resolve_path("/tmp"))
            made = machine.execute_always(f"mkdir -p {tmp} && mktemp {tmp}/provisioning-script."
                                          "XXXXXXXX")
            remote = "/tmp/" + made.stdout.strip().rsplit("/", 1)[-1]
            where = shlex.quote(machine.transport.resolve_path(remote))
            try:
                machine.transport.upload_file(local, remote)
                argv = " ".join([where, *(shlex.quote(a) for a in self.args)])
                machine.execute_always(f"chmod 0700 {where} && {argv}",
                                       sudo=self.sudo, env=self.env, timeout=self.timeout)
            finally:
                machine.execute_always(f"rm -f -- {where}", check=False)
        machine.action_handler.perform_action(
            f"upload and run script {self.source} ({size} bytes)", upload_and_run,
            data={"script": self.source})
        return True


@record(frozen=True)
class PackageStep(Step):
    """Operating-system packages brought to ``state`` (present or absent) by the package manager."""

    kind: ClassVar[str] = "package"
    names: tuple[str, ...] = ()
    state: str = "present"

    def summary(self) -> str:
        return packages.summary(self.names, self.state)

    def apply(self, machine, context) -> bool:
        return packages.converge_packages(machine, self.names, self.state, key=self.key)


STEP_KINDS: dict[str, type[Step]] = {cls.kind: cls for cls in
                                     (FileStep, DirectoryStep, CommandStep, ScriptStep,
                                      PackageStep)}


# -- the strategy ----------------------------------------------------------------------------
class StepsConvergence(ConvergenceStrategy):
    """Runs steps in order; stops at the first failing step (later steps may depend on it)."""

    name = "steps"

    def __init__(self, steps: list[Step], context: StepContext) -> None:
        self.steps = list(steps)
        self.context = context

    @classmethod
    def parse(cls, value: Any, key: str, problems: Problems, base_dir: str) -> tuple[Step, ...]:
        return tuple(parse_steps(value, key, problems, base_dir))

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return {"$ref": "#/$defs/steps"}

    @classmethod
    def from_settings(cls, settings: Any, context: ConvergenceContext) -> "StepsConvergence":
        return cls(list(settings or ()), context)

    def converge(self, machine) -> bool:
        variables = dict(self.context.variables)
        variables["machine"] = _machine_variables(machine, variables.get("machine"))
        variables.setdefault("options", dict(machine.options))
        context = StepContext(self.context.base_dir, self.context.file, variables)
        changed = False
        for step in self.steps:
            changed = step.apply(machine, context) or changed
        if not changed:
            machine.action_handler.report_progress(
                f"converged: {len(self.steps)} step{'s' if len(self.steps) != 1 else ''}, "
                "nothing to change")
        return changed

    def plan(self, action_handler: "ActionHandler") -> None:
        """Under why-run, for a machine that does not exist yet: every step would run."""
        for step in self.steps:
            action_handler.perform_action(step.summary(), data={"step": step.key})


def _machine_variables(machine: "Machine", extra: Any) -> dict[str, Any]:
    out = dict(extra) if isinstance(extra, Mapping) else {}
    out.update(name=machine.name, address=machine.address, options=dict(machine.options))
    return out


def _attrs_text(attrs: _Attributes) -> str:
    parts = [f"mode {attrs.mode}" if attrs.mode else "",
             f"owner {attrs.owner}" if attrs.owner else "",
             f"group {attrs.group}" if attrs.group else ""]
    parts = [p for p in parts if p]
    return f" ({', '.join(parts)})" if parts else ""


# -- templates -------------------------------------------------------------------------------
def render_template(path: str, context: StepContext, *, key: str) -> str:
    """Render a local Jinja template in the bounded sandbox (provisioning.inputs.templating)."""
    return render_file(path, context.base_dir, context.variables, file=context.file, key=key)


def render_string(text: str, variables: Mapping[str, Any], *, file: str | None, key: str) -> str:
    """Render a short Jinja string (healthcheck targets); plain strings pass through."""
    if "{{" not in text and "{%" not in text:
        return text
    return render_text(text, variables, file=file, key=key)


def check_template_syntax(path: str, base_dir: str) -> str | None:
    """A message when the template is missing or does not parse, else None."""
    return template_syntax_problem(path, base_dir)


# -- parsing ---------------------------------------------------------------------------------
_ATTR_KEYS = ("mode", "owner", "group")
_GUARD_KEYS = ("creates", "unless", "onlyif", "sudo", "env", "timeout")
_KEYS = {
    "file": ("path", "content", "source", "template") + _ATTR_KEYS,
    "directory": ("path",) + _ATTR_KEYS,
    "command": ("run", "cwd") + _GUARD_KEYS,
    "script": ("source", "args") + _GUARD_KEYS,
    "package": ("name", "state"),
}
#: the key a one-string short form fills in (``command: make``); file has no short form
_SHORT = {"directory": "path", "command": "run", "script": "source", "package": "name"}


def parse_steps(value: Any, key: str, problems: Problems, base_dir: str) -> list[Step]:
    """Steps from a ``converge`` list; problems are recorded, never raised."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(key, f"expected a list of steps ({', '.join(STEP_KINDS)}), "
                          f"got {describe_type(value)}")
        return []
    steps = []
    for index, item in enumerate(value):
        step = _parse_step(item, f"{key}[{index}]", problems, base_dir)
        if step is not None:
            steps.append(step)
    return steps


def _parse_step(item: Any, key: str, problems: Problems, base_dir: str) -> Step | None:
    if isinstance(item, str):
        problems.add(key, f"expected a step like 'command: {item}', got {describe_type(item)}")
        return None
    body = problems.mapping(item, key, f"a step: a mapping with one of {', '.join(STEP_KINDS)}")
    if body is None:
        return None
    kinds = [k for k in body if k in STEP_KINDS]
    unknown = [k for k in body if k not in STEP_KINDS]
    for name in unknown:
        problems.add(f"{key}.{name}", f"unknown step kind {name!r}{did_you_mean(name, STEP_KINDS)}")
    if len(kinds) > 1:
        problems.add(key, f"one step per list item, got {' and '.join(kinds)}; split them into "
                          "separate items")
        return None
    if not kinds:
        if not unknown:
            problems.add(key, f"empty step; expected one of {', '.join(STEP_KINDS)}")
        return None
    kind = kinds[0]
    where = f"{key}.{kind}"
    raw = body[kind]
    if (isinstance(raw, str) or kind == "package" and isinstance(raw, list)) and kind in _SHORT:
        raw = {_SHORT[kind]: raw}
    spec = problems.mapping(raw, where, f"a mapping of {kind} settings"
                            + (f" or a string ({_SHORT[kind]})" if kind in _SHORT else ""))
    if spec is None:
        return None
    before = len(problems.items)
    problems.unknown_keys(spec, _KEYS[kind], where)
    _refuse_nul(spec, where, problems)
    step = _BUILDERS[kind](spec, where, problems, base_dir)
    return step if len(problems.items) == before else None


def _refuse_nul(value: Any, key: str, problems: Problems) -> None:
    """A NUL byte fits in no path, command, name or environment variable: refuse it before a
    machine is made (a file's ``content`` may hold one)."""
    if isinstance(value, str) and "\0" in value:
        problems.add(key, f"contains a NUL byte ({value[:40]!r}); remove it")
    elif isinstance(value, dict):
        for name, item in value.items():
            if isinstance(name, str) and "\0" in name:
                problems.add(f"{key}.{name!r}", "the name contains a NUL byte; remove it")
            elif name != "content":
                _refuse_nul(item, f"{key}.{name}", problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{key}[{index}]", problems)


def _path(spec, where, problems, name="path") -> str:
    value = problems.field(spec, name, where, str, required=True, expected="a path on the machine")
    if isinstance(value, str) and not value.strip():
        problems.add(f"{where}.{name}", "expected a path on the machine, got an empty string")
    return value or ""


def _attributes(spec, where, problems) -> _Attributes:
    mode = spec.get("mode")
    if mode is not None:
        if isinstance(mode, bool) or not isinstance(mode, (str, int)):
            problems.add(f"{where}.mode", f"expected an octal mode like \"0644\", got "
                                          f"{describe_type(mode)}")
            mode = None
        elif isinstance(mode, int) and mode > 0o777:
            # YAML reads 0644 as octal (420) but 644 as decimal: almost surely a missing 0
            problems.add(f"{where}.mode", f"{mode} read as a decimal number; quote the mode: "
                                          f"\"0{mode}\"")
            mode = None
        else:
            try:
                mode = normalize_mode(mode)
            except ValueError as exc:
                problems.add(f"{where}.mode", f"expected an octal mode like \"0644\": {exc}")
                mode = None
    owner = spec.get("owner")
    group = spec.get("group")
    for name, value in (("owner", owner), ("group", group)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            problems.add(f"{where}.{name}", f"expected a user or group name, got "
                                            f"{describe_type(value)}")
        elif isinstance(value, str) and (not value or value.startswith("-") or ":" in value
                                         or not value.isprintable()):
            # chown would read '-rf' as its options, 'a:b' as a user and a group
            article = "an" if name == "owner" else "a"
            problems.add(f"{where}.{name}", f"{value[:60]!r} is not {article} {name} name: no "
                                            "leading '-', no ':', no control characters")
    return _Attributes(mode=mode, owner=None if owner is None else str(owner),
                       group=None if group is None else str(group))


def _local_file(spec, name, where, problems, base_dir) -> str | None:
    value = problems.field(spec, name, where, str, expected="a path to a local file")
    if value is not None and not os.path.isfile(os.path.join(base_dir, os.path.expanduser(value))):
        problems.add(f"{where}.{name}", f"local file {os.path.join(base_dir, value)} does not exist "
                                        "(paths are relative to the cluster file)")
    return value


def _build_file(spec, where, problems, base_dir) -> Step:
    path = _path(spec, where, problems)
    given = [k for k in ("content", "source", "template") if k in spec]
    if len(given) != 1:
        problems.add(where, "expected exactly one of content, source, template; got "
                            + (", ".join(given) if given else "none"))
    content = problems.field(spec, "content", where, str, expected="text")
    source = _local_file(spec, "source", where, problems, base_dir)
    template = problems.field(spec, "template", where, str, expected="a path to a Jinja template")
    if template is not None:
        message = check_template_syntax(template, base_dir)
        if message:
            problems.add(f"{where}.template", message)
    return FileStep(key=where, path=path, content=content, source=source, template=template,
                    attributes=_attributes(spec, where, problems))


def _build_directory(spec, where, problems, base_dir) -> Step:
    return DirectoryStep(key=where, path=_path(spec, where, problems),
                         attributes=_attributes(spec, where, problems))


def _guards(spec, where, problems) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("creates", "unless", "onlyif"):
        out[name] = problems.field(spec, name, where, str,
                                   expected="a path" if name == "creates" else "a command")
    out["sudo"] = problems.field(spec, "sudo", where, bool, default=False)
    out["env"] = problems.string_map(spec["env"], f"{where}.env") if "env" in spec else {}
    for name in out["env"]:
        if not isinstance(name, str) or not name or "=" in name:
            problems.add(f"{where}.env", f"{name!r} is not an environment variable name (no "
                                         "'=', not empty)")
    out["timeout"] = problems.positive_number(spec, "timeout", where)
    return out


def _build_command(spec, where, problems, base_dir) -> Step:
    run = problems.field(spec, "run", where, str, required=True, expected="a command to run")
    if isinstance(run, str) and not run.strip():
        problems.add(f"{where}.run", "expected a command to run, got an empty string")
    cwd = problems.field(spec, "cwd", where, str, expected="a directory on the machine")
    return CommandStep(key=where, run=run or "", cwd=cwd, **_guards(spec, where, problems))


def _build_script(spec, where, problems, base_dir) -> Step:
    if "source" not in spec:
        problems.add(f"{where}.source", "required: a path to a local script")
    source = _local_file(spec, "source", where, problems, base_dir)
    args = problems.string_list(spec.get("args", []), f"{where}.args")
    return ScriptStep(key=where, source=source or "", args=tuple(args),
                      **_guards(spec, where, problems))


def _build_package(spec, where, problems, base_dir) -> Step:
    names = spec.get("name")
    if names is None:
        problems.add(f"{where}.name", "required: a Debian package name or a list of them")
    listed = [names] if isinstance(names, str) else names
    good = problems.string_list(listed, f"{where}.name") if listed is not None else []
    for name in good:
        if not packages.NAME_RE.match(name):
            problems.add(f"{where}.name", f"{name!r} is not a Debian package name (lower case "
                                          "letters, digits, + - .; like nginx or libssl3)")
    if listed == []:
        problems.add(f"{where}.name", "expected at least one package name")
    state = spec.get("state", "present")
    if state not in packages.STATES:
        problems.add(f"{where}.state", f"expected present or absent, got {state!r}"
                                       f"{did_you_mean(str(state), packages.STATES)}")
    return PackageStep(key=where, names=tuple(good), state=state)


_BUILDERS = {"file": _build_file, "directory": _build_directory, "command": _build_command,
             "script": _build_script, "package": _build_package}
