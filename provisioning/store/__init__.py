"""State stores, chosen by URL: ``open_store("postgresql://...")``, a path, or ``memory:``."""

from __future__ import annotations

import os

from provisioning.errors import ConfigError
from provisioning.store.base import DEFAULT_LOCK_TTL, Lock, ManagedEntryStore, holder_info, mask_url

__all__ = ["open_store", "ManagedEntryStore", "Lock", "holder_info", "DEFAULT_LOCK_TTL",
           "mask_url"]


def open_store(url: str | None = None, *, base_dir: str | None = None) -> ManagedEntryStore:
    """Open the store a URL names. None: SQLite at ``.provisioning/state.db`` under ``base_dir``
    (the cluster file's directory, else the current one)."""
    from provisioning.store.sqlite import DEFAULT_STATE_PATH, SQLiteStore

    base = base_dir or os.getcwd()
    if url is None or url == "":
        return SQLiteStore(os.path.join(base, DEFAULT_STATE_PATH))
    if url in ("memory:", "memory://"):
        from provisioning.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from provisioning.store.postgres import PostgresStore
        except ImportError as exc:
            from provisioning.errors import MissingExtra

            raise MissingExtra("a PostgreSQL state store", "postgres", "psycopg") from exc
        return PostgresStore(url)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        return SQLiteStore(os.path.join(base, os.path.expanduser(path)))
    if "://" in url:
        raise ConfigError(f"unknown state URL {mask_url(url)!r}; use a file path, sqlite:///PATH, "
                          "postgresql://USER@HOST/DB or memory:", key="state")
    return SQLiteStore(os.path.join(base, os.path.expanduser(url)))
