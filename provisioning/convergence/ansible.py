"""The ``ansible`` strategy: a playbook run against the machine with ansible-core.

::

    converge:
      ansible:
        playbook: site.yml                  # relative to the cluster file
        extra_vars: {db_host: "{{ machines.db[0].address }}"}   # rendered like templates
        timeout: 1800                       # seconds for the whole run

The run gets a generated inventory holding only this machine (group ``all`` plus its cluster
group), its key and a known_hosts file holding its pinned host key: host-key checking stays on
(``StrictHostKeyChecking=yes``, ``HostKeyAlias``), through the driver's ProxyCommand for machines
in a network namespace (``provisioning.machine.access``). Extra variables go through a 0600 file, never
the command line. Changes are counted from ansible's own task results (our callback plugin in
``ansible_plugins/``): each changed task is one action. Under why-run the playbook runs with
``--check --diff`` and its changes are reported as planned actions.

``setup`` makes sure the machine has a Python that ansible's modules run on (Debian's
``python3``; minimal images carry only ``python3-minimal``), installing it with apt when missing.
ansible-core is an optional extra: ``pip install 'provisioning[ansible]'``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import field
from typing import TYPE_CHECKING, Any, Mapping

from provisioning.cluster.schema import _object
from provisioning.convergence.base import ConvergenceContext, ConvergenceStrategy
from provisioning.convergence.steps import render_string
from provisioning.errors import ConvergenceFailed, MissingExtra
from provisioning.inputs.records import record
from provisioning.inputs.schema import Problems
from provisioning.keys import write_private_file
from provisioning.machine.access import ansible_inventory, ssh_access, write_access

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.machine.base import Machine

__all__ = ["AnsibleConvergence", "AnsibleSettings"]

KEYS = ("playbook", "extra_vars", "timeout")
PLUGINS = os.path.join(os.path.dirname(__file__), "ansible_plugins")
#: a Python with the modules ansible's module runner needs (json is not in python3-minimal)
PYTHON_CHECK = "python3 -c 'import json, zipfile, tempfile' 2>/dev/null"


@record(frozen=True)
class AnsibleSettings:
    playbook: str
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 1800.0
    key: str = "converge.ansible"


class AnsibleConvergence(ConvergenceStrategy):
    name = "ansible"
    extra = "ansible"

    def __init__(self, settings: AnsibleSettings, context: ConvergenceContext) -> None:
        self.settings = settings
        self.context = context

    @classmethod
    def parse(cls, value: Any, key: str, problems: Problems, base_dir: str) -> AnsibleSettings:
        if isinstance(value, str):
            value = {"playbook": value}
        body = problems.mapping(value, key, "a mapping with 'playbook' (and extra_vars)") or {}
        problems.unknown_keys(body, KEYS, key)
        playbook = problems.field(body, "playbook", key, str, required=True,
                                  expected="a playbook file, relative to the cluster file") or ""
        if playbook and not os.path.isfile(os.path.join(base_dir, os.path.expanduser(playbook))):
            problems.add(f"{key}.playbook", f"{os.path.join(base_dir, playbook)} does not exist "
                                            "(paths are relative to the cluster file)")
        try:
            _ansible_playbook()
        except MissingExtra as exc:
            problems.add(key, exc.message)
        extra = problems.mapping(body.get("extra_vars") or {}, f"{key}.extra_vars",
                                 "a mapping of variable names to values") or {}
        timeout = problems.positive_number(body, "timeout", key, default=1800.0)
        return AnsibleSettings(playbook=playbook, extra_vars=extra, timeout=timeout or 1800.0,
                               key=key)

    @classmethod
    def schema(cls) -> dict[str, Any]:
        body = _object(KEYS, required=("playbook",))
        return {"anyOf": [{"type": "string", "description": "the playbook"}, body]}

    @classmethod
    def from_settings(cls, settings: Any, context: ConvergenceContext) -> "AnsibleConvergence":
        return cls(settings, context)

    # -- the run -----------------------------------------------------------------------------
    def plan(self, action_handler: "ActionHandler") -> None:
        action_handler.perform_action(f"run ansible playbook {self.settings.playbook}",
                                      data={"playbook": self.settings.playbook})

    def setup(self, machine: "Machine") -> None:
        if machine.execute_always(PYTHON_CHECK, check=False).ok:
            return
        machine.execute("DEBIAN_FRONTEND=noninteractive apt-get -q -y install python3 || "
                        "{ apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get -q -y "
                        "install python3; }", sudo=True,
                        description="install python3 for ansible (apt-get)")

    def converge(self, machine: "Machine") -> bool:
        executable = _ansible_playbook()
        access = ssh_access(machine)
        with tempfile.TemporaryDirectory(prefix="converge-ansible-") as tmp:
            files = write_access([access], tmp)
            group = (self.context.variables.get("machine") or {}).get("group")
            inventory = ansible_inventory(
                [access], files, {group: [access.name]} if group else None,
                {access.name: {"ansible_python_interpreter": "/usr/bin/python3"}})
            inventory_path = os.path.join(tmp, "inventory.yml")
            _write_json(inventory_path, inventory)
            variables_path = os.path.join(tmp, "extra_vars.json")
            _write_json(variables_path, self._extra_vars(machine))
            events_path = os.path.join(tmp, "events.jsonl")
            argv = [executable, "-i", inventory_path, "-l", access.name,
                    "-e", f"@{variables_path}", self.context.local_path(self.settings.playbook)]
            if machine.action_handler.why_run:
                argv += ["--check", "--diff"]
            machine.action_handler.report_progress(
                f"ansible-playbook {self.settings.playbook}"
                + (" --check --diff" if machine.action_handler.why_run else ""))
            proc = self._run(argv, tmp, events_path, machine)
            events = _read_events(events_path)
        return self._report(machine, proc, events)

    def _extra_vars(self, machine: "Machine") -> dict[str, Any]:
        variables = dict(self.context.variables)
        variables["machine"] = dict(variables.get("machine") or {}, name=machine.name,
                                    address=machine.address)

        def render(value: Any, key: str) -> Any:
            if isinstance(value, str):
                return render_string(value, variables, file=self.context.file, key=key)
            if isinstance(value, Mapping):
                return {k: render(v, f"{key}.{k}") for k, v in value.items()}
            if isinstance(value, list):
                return [render(v, f"{key}[{i}]") for i, v in enumerate(value)]
            return value

        return render(dict(self.settings.extra_vars), f"{self.settings.key}.extra_vars")

    def _run(self, argv: list[str], tmp: str, events_path: str,
             machine: "Machine") -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.update({
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_CALLBACK_PLUGINS": PLUGINS,
            "ANSIBLE_CALLBACKS_ENABLED": "provisioning_events",
            "PROVISIONING_ANSIBLE_EVENTS": events_path,
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_LOCAL_TEMP": os.path.join(tmp, "local"),
            "ANSIBLE_HOME": os.path.join(tmp, "home"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(tmp, "cp"),
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_SYSTEM_WARNINGS": "False",
        })
        try:
            return subprocess.run(argv, cwd=self.context.base_dir, env=env, capture_output=True,
                                  text=True, timeout=self.settings.timeout)
        except subprocess.TimeoutExpired as exc:
            raise ConvergenceFailed(f"ansible-playbook {self.settings.playbook} ran past its "
                                    f"timeout of {self.settings.timeout:g} s "
                                    f"({self.settings.key}.timeout)", machine=machine.name,
                                    output=str(exc.stdout or "")) from exc

    def _report(self, machine: "Machine", proc: subprocess.CompletedProcess,
                events: list[dict[str, Any]]) -> bool:
        handler = machine.action_handler
        failures = [e for e in events if e.get("status") in ("failed", "unreachable")]
        if proc.returncode != 0 or failures:
            detail = "; ".join(f"{e.get('task') or '?'}: {e.get('msg') or e.get('status')}"
                               for e in failures[:5])
            if not detail:
                lines = (proc.stderr or proc.stdout).strip().splitlines()
                detail = " / ".join(lines[-5:]) or f"exit {proc.returncode}"
            raise ConvergenceFailed(f"ansible-playbook {self.settings.playbook} failed: {detail}",
                                    machine=machine.name, output=proc.stdout + proc.stderr)
        changed = [e for e in events if e.get("status") == "changed"]
        for event in changed:
            handler.perform_action(f"ansible: {event.get('task') or event.get('action')}",
                                   data={"playbook": self.settings.playbook,
                                         "task": event.get("task"), "module": event.get("action"),
                                         **({"diff": event["diff"]} if event.get("diff") else {})})
        if not changed:
            ok = sum(1 for e in events if e.get("status") == "ok")
            handler.report_progress(f"ansible: {ok} task{'s' if ok != 1 else ''} ok, "
                                    "nothing to change")
        return bool(changed)


def _ansible_playbook() -> str:
    """ansible-playbook beside this interpreter (the same environment), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    found = beside if os.access(beside, os.X_OK) else shutil.which("ansible-playbook")
    if found is None:
        raise MissingExtra("the ansible convergence strategy", "ansible", "ansible-core")
    return found


def _write_json(path: str, data: Any) -> None:
    write_private_file(path, json.dumps(data, indent=1).encode("utf-8"))


def _read_events(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]

