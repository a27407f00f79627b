"""Fixtures for the CLI tests (helpers live in helpers.py)."""

from tests.integration.cli.helpers import example  # noqa: F401  (fixture)
