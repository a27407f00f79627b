"""Entry writes of many threads sent to PostgreSQL together (a group commit).

A runner's workers finish their machines at about the same moment (ten machines readied by ten
workers wake together) and each saves its entry, most releasing the machine's lease with it.
One statement per save meant ten round trips, each paying the server's parse, plan and commit,
one after another on the runner's one connection. Here every save waiting for the connection
goes in the next statement: ``unnest`` of arrays, each row keeping its own version check (a
refused row refuses only its own save) and its own lease release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from provisioning.errors import StateConflict
from provisioning.store.base import ANY_VERSION
from provisioning.store.postgres_sql import execute

if TYPE_CHECKING:  # pragma: no cover
    from psycopg2.extensions import connection as Connection

__all__ = ["EntryWrite", "PREPARE_WRITES", "send_writes", "distinct_rounds"]

#: every row's lease release, new entries, then updates over the version read; the rows
#: written come back (a row missing was refused: another writer got there first). Prepared
#: once per connection (``prepare_writes``): planning it cost the server more than running it.
PREPARE_WRITES = """PREPARE provisioning_write_many (text[], text[], text[], int[], text[], text[]) AS
WITH w AS (SELECT * FROM unnest($1, $2, $3, $4, $5, $6) AS w(k, n, d, v, ln, lt)),
released AS (DELETE FROM provisioning_locks l USING w WHERE l.name = w.ln AND l.token = w.lt),
inserted AS (INSERT INTO provisioning_entries (kind, name, data, version)
             SELECT k, n, d, 1 FROM w WHERE v = 0
             ON CONFLICT (kind, name) DO NOTHING RETURNING kind, name, version),
overwritten AS (INSERT INTO provisioning_entries AS e (kind, name, data, version)
                SELECT k, n, d, 1 FROM w WHERE v < 0
                ON CONFLICT (kind, name) DO UPDATE SET data = excluded.data,
                   version = e.version + 1, updated_at = now()
                RETURNING kind, name, version),
updated AS (UPDATE provisioning_entries e SET data = w.d, version = e.version + 1,
                   updated_at = now()
            FROM w WHERE w.v > 0 AND e.kind = w.k AND e.name = w.n AND e.version = w.v
            RETURNING e.kind, e.name, e.version)
SELECT kind, name, version FROM inserted UNION ALL SELECT kind, name, version FROM overwritten
UNION ALL SELECT kind, name, version FROM updated"""
_WRITE_MANY = "EXECUTE provisioning_write_many (%(k)s, %(n)s, %(d)s, %(v)s, %(ln)s, %(lt)s)"


class EntryWrite:
    """One entry's save (over ``expected`` version, 0: a new entry, ``ANY_VERSION``: over
    whichever it has), with the release of a lease (``lock``) when given, and the delete of
    the entry ``forget`` of its kind (``state mv``; sent alone, in a transaction that a refused
    save rolls back); ``version`` or ``error`` once sent."""

    __slots__ = ("kind", "name", "data", "expected", "lock", "forget", "version", "error",
                 "done")

    def __init__(self, kind: str, name: str, data: str, expected: int, lock: Any = None, *,
                 forget: str | None = None) -> None:
        self.kind, self.name, self.data, self.expected, self.lock, self.forget = \
            kind, name, data, expected, lock, forget
        self.version: int | None = None
        self.error: BaseException | None = None
        self.done = False


def distinct_rounds(writes: Sequence[EntryWrite]) -> list[list[EntryWrite]]:
    """``writes`` in rounds that each name an entry once (one statement cannot write a row
    twice), in order: a later save of an entry goes in a later round."""
    rounds: list[list[EntryWrite]] = []
    seen: list[set[tuple[str, str]]] = []
    for write in writes:
        key = (write.kind, write.name)
        index = next((i for i in range(len(seen) - 1, -1, -1) if key in seen[i]), -1) + 1
        if index == len(rounds):
            rounds.append([])
            seen.append(set())
        rounds[index].append(write)
        seen[index].add(key)
    return rounds


def _write_one(write: EntryWrite) -> tuple[str, dict[str, Any]]:
    """The statement of a write sent alone: simpler for the server to plan than the batch."""
    if write.expected == ANY_VERSION:
        sql = ("INSERT INTO provisioning_entries AS e (kind, name, data, version) "
               "VALUES (%(k)s, %(n)s, %(d)s, 1) ON CONFLICT (kind, name) DO UPDATE SET "
               "data = excluded.data, version = e.version + 1, updated_at = now() "
               "RETURNING kind, name, version")
    elif write.expected == 0:
        sql = ("INSERT INTO provisioning_entries (kind, name, data, version) "
               "VALUES (%(k)s, %(n)s, %(d)s, 1) ON CONFLICT (kind, name) DO NOTHING "
               "RETURNING kind, name, version")
    else:
        sql = ("UPDATE provisioning_entries SET data = %(d)s, version = version + 1, "
               "updated_at = now() WHERE kind = %(k)s AND name = %(n)s AND version = %(v)s "
               "RETURNING kind, name, version")
    if write.lock is not None:
        sql = ("WITH released AS (DELETE FROM provisioning_locks WHERE name = %(ln)s "
               "AND token = %(lt)s) " + sql)
    elif write.forget is not None:
        sql = ("WITH forgotten AS (DELETE FROM provisioning_entries WHERE kind = %(k)s "
               "AND name = %(old)s) " + sql)
    return sql, {"k": write.kind, "n": write.name, "d": write.data, "v": write.expected,
                 "ln": getattr(write.lock, "name", None), "lt": getattr(write.lock, "token", None),
                 "old": write.forget}


def send_writes(conn: "Connection", writes: Sequence[EntryWrite]) -> None:
    """Send ``writes`` (each entry named once) in one statement, which is its own transaction;
    each gets its new version, or a ``StateConflict`` when its version check refused it. More
    than one needs ``PREPARE_WRITES`` run on ``conn`` first."""
    if len(writes) == 1:
        rows = execute(conn, *_write_one(writes[0])).fetchall()
    else:
        rows = execute(conn, _WRITE_MANY, {
            "k": [w.kind for w in writes], "n": [w.name for w in writes],
            "d": [w.data for w in writes], "v": [w.expected for w in writes],
            "ln": [getattr(w.lock, "name", None) for w in writes],
            "lt": [getattr(w.lock, "token", None) for w in writes]}).fetchall()
    written = {(kind, name): version for kind, name, version in rows}
    refused = [w for w in writes if (w.kind, w.name) not in written]
    now: dict[tuple[str, str], int] = {}
    if refused:
        now = {(kind, name): version for kind, name, version in execute(conn,
               "SELECT kind, name, version FROM provisioning_entries WHERE (kind, name) IN "
               "(SELECT * FROM unnest(%s::text[], %s::text[]))",
               ([w.kind for w in refused], [w.name for w in refused])).fetchall()}
    for write in writes:
        key = (write.kind, write.name)
        if key in written:
            write.version = int(written[key])
        else:
            write.error = StateConflict(
                f"{write.kind} {write.name!r} changed since it was read (version "
                f"{now.get(key, 0)}, expected {write.expected}); re-read and retry")
        write.done = True
