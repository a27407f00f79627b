"""ConvergenceStrategy: the seam between a ready machine and the configuration it should have.

``Machine.setup_convergence``, ``Machine.converge`` and ``Machine.cleanup_convergence`` call
``setup``, ``converge`` and ``cleanup`` in that order. Every change goes through the machine's
action handler, so under why-run a strategy reports what it would do and changes nothing.

Strategies are plug-ins found by name (``provisioning.convergence.registry``). A cluster file
names one under a machine's ``converge:`` (``{ansible: {...}}``; a plain list means ``steps``);
the class checks its settings with ``parse`` (every problem recorded, nothing raised) and is built
from them with ``from_settings`` once the machine is about to be converged.

"""

from __future__ import annotations

import abc
import os
from dataclasses import field
from typing import TYPE_CHECKING, Any, Mapping

from provisioning.inputs.records import record

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.inputs.schema import Problems
    from provisioning.machine.base import Machine

__all__ = ["ConvergenceStrategy", "ConvergenceContext"]


@record(frozen=True)
class ConvergenceContext:
    """What a strategy needs besides the machine: where local files live (the cluster file's
    directory), the file for error messages, and the template variables."""

    base_dir: str
    file: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)

    def local_path(self, path: str) -> str:
        return os.path.join(self.base_dir, os.path.expanduser(path))


class ConvergenceStrategy(abc.ABC):
    """Brings one machine to its wished state, idempotently."""

    #: the name it is registered under and shown in events and ``status``
    name: str = "?"
    #: the optional extra that installs what it needs (for MissingExtra's hint)
    extra: str | None = None

    @classmethod
    def parse(cls, value: Any, key: str, problems: "Problems", base_dir: str) -> Any:
        """Check this strategy's settings from the cluster file; record every problem in
        ``problems`` (never raise) and return the settings ``from_settings`` accepts."""
        return value

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The JSON Schema of this strategy's settings, for ``converge schema``; default: any."""
        return {}

    @classmethod
    def from_settings(cls, settings: Any, context: ConvergenceContext) -> "ConvergenceStrategy":
        """The strategy for one machine, from parsed settings."""
        return cls()

    def setup(self, machine: "Machine") -> None:
        """Prepare the machine (install an agent, upload files); default: nothing to prepare."""

    @abc.abstractmethod
    def converge(self, machine: "Machine") -> bool:
        """Apply the configuration; True when something changed (or would, under why-run)."""

    def cleanup(self, machine: "Machine") -> None:
        """Remove what ``setup`` left behind; default: nothing."""

    def plan(self, action_handler: "ActionHandler") -> None:
        """Under why-run, for a machine that does not exist yet: report what converging it would
        do. Default: nothing can be said before the machine exists."""
