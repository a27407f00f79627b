"""SQL shared by the parts of the PostgreSQL store: session keys (a session-level advisory
lock every store connection holds, recorded by the leases and claims it takes) and whether the
session holding one is still connected."""

from __future__ import annotations

from typing import Any

__all__ = ["ADVISORY_NAMESPACE", "LIVE_SESSIONS", "alive", "scalar"]

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
