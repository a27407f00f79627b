"""Cluster tests: real SQLite and PostgreSQL state (the suite starts its own server), the fake
driver's warehouse in the test's directory."""

from provisioning.testing.postgres import postgres_server, postgres_url  # noqa: F401
