"""SQL shared by the parts of the PostgreSQL store: session keys (a session-level advisory
lock every store connection holds, recorded by the leases and claims it takes), whether the
session holding one is still connected, and the few calls made on psycopg2's connections."""

from __future__ import annotations

import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from psycopg2.extensions import connection as Connection
    from psycopg2.extensions import cursor as Cursor

__all__ = ["ADVISORY_NAMESPACE", "LIVE_SESSIONS", "alive", "connect", "execute", "scalar",
           "psycopg2"]


def _load_client() -> ModuleType:
    """psycopg2 with the submodules the store uses. Its C module imports Python's ``ssl`` only
    to set up libcrypto's locking callbacks for libpq, needless since OpenSSL 1.1 (Python 3.11
    requires 1.1.1; the binary wheel's libpq even has an OpenSSL of its own), yet a third of
    psycopg2's import (about 44 M instructions) that each runner paid before its first claim.
    Hidden while psycopg2 loads, that step is skipped (psycopg2 then leaves libpq to set up its
    OpenSSL itself, libpq's default); SSL connections work the same
    (``test_ssl_connections_work_without_pythons_ssl_module``). Hidden only while this is the
    process's one thread (a command's start): another thread importing ``ssl`` meanwhile would
    fail, so a program running threads of its own gets psycopg2 loaded as it comes."""
    hide = ("ssl" not in sys.modules and "psycopg2" not in sys.modules
            and threading.active_count() == 1)
    if hide:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # import ssl: ImportError
    try:
        import psycopg2.errors
        import psycopg2.extensions
    finally:
        if hide and sys.modules.get("ssl", False) is None:
            del sys.modules["ssl"]
    return psycopg2


#: the PostgreSQL client (the store's modules take it from here, loaded as above)
psycopg2 = _load_client()

#: first half of every advisory-lock key we take ('prov'), so ours never clash with others'
ADVISORY_NAMESPACE = 0x70726F76

#: SQL true when the session holding advisory key ``{col}`` is still connected
_SESSION_ALIVE = """EXISTS (SELECT 1 FROM pg_locks pl WHERE pl.locktype = 'advisory'
    AND pl.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND pl.classid = {ns}::oid AND pl.objid = {col}::oid AND pl.objsubid = 2 AND pl.granted)"""


def alive(column: str) -> str:
    """SQL true when the session whose key is in ``column`` is still connected."""
    return _SESSION_ALIVE.format(ns=ADVISORY_NAMESPACE, col=column)


#: the session keys of every connected store session (read once per statement, not per row)
LIVE_SESSIONS = f"""SELECT pl.objid FROM pg_locks pl WHERE pl.locktype = 'advisory'
    AND pl.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND pl.classid = {ADVISORY_NAMESPACE}::oid AND pl.objsubid = 2 AND pl.granted"""


def scalar(cursor: Any) -> Any:
    """The one value of a query that always yields one row (an aggregate, a function call)."""
    row = cursor.fetchone()
    assert row is not None, "an aggregate query returned no row"
    return row[0]


def connect(url: str, timeout: float, **options: Any) -> Connection:
    """A connection in autocommit mode (a transaction is opened only where one is asked for)."""
    conn = psycopg2.connect(url, connect_timeout=max(1, int(timeout)),
                            application_name="provisioning", **options)
    conn.autocommit = True
    return conn


def execute(conn: Connection, sql: str, params: Any = None) -> Cursor:
    """Run one statement (or several, separated by ``;``: one round trip, one implicit
    transaction, each statement with its own snapshot); returns the cursor holding the last
    statement's rows. Text the server cannot take (a NUL character, a lone surrogate) is a
    ``DataError`` as the server's own refusals are, not a bare ``ValueError``."""
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params)
    except ValueError as exc:  # UnicodeEncodeError is one too
        raise psycopg2.DataError(str(exc)) from exc
    return cursor
