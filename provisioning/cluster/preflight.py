"""Every machine's templates (file templates, command lines, healthcheck targets) rendered
once before a run writes anything.

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
from provisioning.convergence.steps import CommandStep, FileStep
from provisioning.errors import ConfigError, ConfigProblem
from provisioning.inputs.templating import render_file, render_text

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
    from jinja2.exceptions import SecurityError, TemplateSyntaxError

    return isinstance(exc.__cause__, (SecurityError, RecursionError, TemplateSyntaxError))


def _templates(steps: Iterable[Any], checks: Iterable[Any] = ()) -> list[tuple[str, str, bool]]:
    """(key, text or template path, is a file template) of every templated value."""
    found: list[tuple[str, str, bool]] = []
    for step in steps:
        if isinstance(step, FileStep) and step.template:
            found.append((f"{step.key}.template", step.template, True))
        elif isinstance(step, CommandStep) and ("{{" in step.run or "{%" in step.run):
            found.append((f"{step.key}.run", step.run, False))
    found += [(f"{check.key}.{check.kind}", check.target, False)
              for check in checks if "{" in check.target]
    return found


def check_templates(cluster: "ClusterFile",
                    definitions: Iterable["MachineDefinition"] | None = None) -> None:
    """Render the file templates, command lines and healthcheck targets of ``definitions``
    (default: every machine of the file) and of the file's images, and raise one
    ConfigError listing each sandbox violation, before anything is written."""
    problems: list[ConfigProblem] = []
    seen: set[tuple[str, str]] = set()
    for definition in cluster.machines.values() if definitions is None else definitions:
        templated = _templates(definition.steps, definition.healthchecks)
        if not templated:
            continue
        view = machines_view(cluster, _NothingSaved(), definition)  # type: ignore[arg-type]
        variables = cluster.variables(definition, view)
        variables["machine"].update(name=definition.name, address=None)
        problems += _render(cluster, templated, variables, definition.name, seen)
    for image in cluster.images.values():
        variables = {"image": {"name": image.name, "from": image.base}}  # as the builder has
        problems += _render(cluster, _templates(image.steps), variables,
                            f"image {image.name}", seen)
    if problems:
        raise ConfigError(problems=problems)


def _render(cluster: "ClusterFile", templated: list[tuple[str, str, bool]],
            variables: dict[str, Any], label: str,
            seen: set[tuple[str, str]]) -> list[ConfigProblem]:
    problems = []
    for key, text, is_file in templated:
        try:
            if is_file:
                render_file(text, cluster.base_dir, variables, file=cluster.path, key=key)
            else:
                render_text(text, variables, file=cluster.path, key=key)
        except ConfigError as exc:
            message = exc.problems[0].message if exc.problems else str(exc)
            if _violation(exc) and (key, message) not in seen:
                seen.add((key, message))
                problems.append(ConfigProblem(f"[{label}] {message}", file=cluster.path,
                                              key=key))
    return problems
