"""State tests: a throwaway PostgreSQL server per session (provisioning.testing.postgres)."""

from provisioning.testing.postgres import postgres_server, postgres_url  # noqa: F401
