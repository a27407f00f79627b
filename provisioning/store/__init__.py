"""State stores, chosen by URL: ``open_store("postgresql://...")``, a path, or ``memory:``."""

from __future__ import annotations

import os

from provisioning.errors import ConfigError, MissingExtra
from provisioning.lazy import lazy_exports, load
from provisioning.store.base import DEFAULT_LOCK_TTL, Lock, ManagedEntryStore, holder_info, mask_url
from provisioning.store.memory import MemoryStore

__all__ = ["open_store", "ManagedEntryStore", "Lock", "holder_info", "DEFAULT_LOCK_TTL",
           "mask_url", "same_state", "NOT_CREATED", "DEFAULT_STATE_PATH"]

#: where the state goes when none is named: SQLite, beside the cluster file
DEFAULT_STATE_PATH = os.path.join(".provisioning", "state.db")
#: the SQLite store's module, loaded by name when a state is SQLite: a runner on PostgreSQL or
#: in memory does not load ``sqlite3``
_SQLITE = "provisioning.store.sqlite"


def open_store(url: str | None = None, *, base_dir: str | None = None,
               create: bool = True, keep_missing: bool = False) -> ManagedEntryStore:
    """Open the store a URL names. None: SQLite at ``.provisioning/state.db`` under ``base_dir``
    (the cluster file's directory, else the current one). ``create=False`` (why-run, read-only
    commands): a state file that does not exist is not created, an empty store stands in, and
    an existing one is not changed. ``keep_missing`` (commands that create no machine: stop,
    destroy, sync, snapshots, state rm/mv, image list/destroy): a state file that does not exist
    is not created either (they find nothing in it), but one that exists opens for writing."""
    base = base_dir or os.getcwd()
    if isinstance(url, str) and "\x00" in url:
        raise ConfigError("the state URL contains a NUL byte; remove it", key="state")
    if url is None or url == "":
        return _sqlite(os.path.join(base, DEFAULT_STATE_PATH), create, keep_missing)
    if url in ("memory:", "memory://"):
        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from provisioning.store.postgres import PostgresStore
        except ImportError as exc:
            raise MissingExtra("a PostgreSQL state store", "postgres", "psycopg2") from exc
        return PostgresStore(url)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        return _sqlite(os.path.join(base, os.path.expanduser(path)), create, keep_missing)
    if "://" in url:
        raise ConfigError(f"unknown state URL {mask_url(url)!r}; use a file path, sqlite:///PATH, "
                          "postgresql://USER@HOST/DB or memory:", key="state")
    return _sqlite(os.path.join(base, os.path.expanduser(url)), create, keep_missing)


#: what a read-only or why-run command's URL says of a state file that does not exist yet
NOT_CREATED = " (not created yet)"


def same_state(url: str, other: str) -> bool:
    """True when two store URLs name one state, one of them perhaps before it was created
    (a plan made on a new project is applied to the state file apply creates)."""
    return url.removesuffix(NOT_CREATED) == other.removesuffix(NOT_CREATED)


def _sqlite(path: str, create: bool, keep_missing: bool = False) -> ManagedEntryStore:
    sqlite = load(_SQLITE)
    missing = (not create or keep_missing) and (not sqlite.inspect_state_file(path)
                                                 or os.path.getsize(path) == 0)
    if missing:
        empty = MemoryStore()
        empty.url = f"sqlite://{os.path.abspath(path)}{NOT_CREATED}"
        return empty
    store: ManagedEntryStore = sqlite.SQLiteStore(path, read_only=not create)
    return store


#: names this package held before the SQLite store was loaded on demand (``from
#: provisioning.store import SQLiteStore`` keeps working), loaded when first asked for
__getattr__, __dir__ = lazy_exports(__name__, {"SQLiteStore": _SQLITE,
                                               "inspect_state_file": "provisioning.store.state_file"},
                                    __all__)
