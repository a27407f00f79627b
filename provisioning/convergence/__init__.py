"""Convergence strategies: what brings a ready machine to its wished state.

``none`` does nothing; ``steps`` runs an ordered list of idempotent file, directory, command
and script steps from the cluster file. Heavy modules (jinja2) load only when a step needs them.
"""

from provisioning.convergence.base import ConvergenceStrategy

__all__ = ["ConvergenceStrategy"]
