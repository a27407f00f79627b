"""Every machine's file templates rendered once before a run writes anything.

A template is rendered for real only when its machine is converged, which for a new machine
comes after the machine was created (and the state file written). A hostile template there
(``{{ cycler.__init__.__globals__ }}``, ``range(10**9)``) was refused by the sandbox, but only
after those writes. ``check_templates`` renders each machine's file templates in the same
bounded sandbox beforehand, with what is known before any machine exists (no addresses, no
facts), and raises a ``ConfigError`` naming every file and template line that breaks the
sandbox's rules. Other render errors are left to the real render: a template may well need
an address only known later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from provisioning.cluster.topology import machines_view
from provisioning.convergence.steps import FileStep
from provisioning.errors import ConfigError, ConfigProblem
from provisioning.inputs.templating import render_file

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.model import ClusterFile, MachineDefinition

__all__ = ["check_templates"]


class _NothingSaved:
    """The state before the first run: no machine has an address or facts yet."""

    @staticmethod
    def list(kind: str) -> list[Any]:
        return []


def _violation(exc: ConfigError) -> bool:
    """True for what the sandbox refuses whatever the variables (not a missing value)."""
    from jinja2.exceptions import SecurityError

    return isinstance(exc.__cause__, (SecurityError, RecursionError))


def check_templates(cluster: "ClusterFile",
                    definitions: Iterable["MachineDefinition"] | None = None) -> None:
    """Render the file templates of ``definitions`` (default: every machine of the file) and
    raise one ConfigError listing each sandbox violation, before anything is written."""
    problems: list[ConfigProblem] = []
    seen: set[tuple[str, str]] = set()
    for definition in cluster.machines.values() if definitions is None else definitions:
        templated = [s for s in definition.steps if isinstance(s, FileStep) and s.template]
        if not templated:
            continue
        view = machines_view(cluster, _NothingSaved(), definition)  # type: ignore[arg-type]
        variables = cluster.variables(definition, view)
        variables["machine"].update(name=definition.name, address=None)
        for step in templated:
            try:
                render_file(step.template or "", cluster.base_dir, variables, file=cluster.path,
                            key=f"{step.key}.template")
            except ConfigError as exc:
                message = exc.problems[0].message if exc.problems else str(exc)
                if _violation(exc) and (step.key, message) not in seen:
                    seen.add((step.key, message))
                    problems.append(ConfigProblem(f"[{definition.name}] {message}",
                                                  file=cluster.path, key=f"{step.key}.template"))
    if problems:
        raise ConfigError(problems=problems)
