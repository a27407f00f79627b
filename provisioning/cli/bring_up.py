"""What ``converge up`` does once its command line is read: bring the machines up and print the
summary, without click.

``provisioning.cli.up`` is the command's click face (its options, help and errors, and the
plan printed under --why-run); ``provisioning.cli.quick`` runs a plain ``converge up`` (global
options only) straight here, so each of many runners started together reaches its first claim
without importing click.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provisioning.cli.session import finish_batch, open_session

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cli.settings import Settings

__all__ = ["bring_up"]


def bring_up(settings: "Settings", machines: tuple[str, ...] = (),
             replace: tuple[str, ...] = ()) -> int:
    """Create (if needed), ready, converge and healthcheck ``machines`` (all when none), and
    destroy what a lowered count leaves out; the exit code of the batch."""
    with open_session(settings, select=machines, replace=replace) as session:
        results = session.cluster.up(machines, replace=replace)
        try:
            return finish_batch(session, "up", results)
        finally:
            for outcome in results.values():
                if outcome.ok and outcome.value is not None:
                    outcome.value.disconnect()
