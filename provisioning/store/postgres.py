"""PostgresStore: state shared by many runners on many hosts (``--state postgresql://...``).

The password comes from the URL, ``PGPASSWORD`` or a pgpass file (libpq reads them); it is never
shown: ``url`` is masked, and every error text is scrubbed of it.

Schema: tables prefixed ``provisioning_``, versioned in ``provisioning_schema`` (one row per
applied migration). Opening a store applies missing migrations under an advisory lock (so many
runners starting at once migrate once); a schema newer than this code is refused.

Locks are leases (the base class heartbeats them) that also die with their holder's session:
every store connection holds a session-level advisory lock on a random key, and a lease records
that key. When a runner dies (kill -9) its connection closes, the server drops the advisory
lock, and the lease is free at once; when the network is lost instead, the lease expires after
its TTL (the server's clock decides, so hosts' clocks need not agree).

Work splitting for many runners (``provisioning.cluster.claims``) uses ``provisioning_runs`` and
``provisioning_work`` with ``FOR UPDATE SKIP LOCKED``: a claim never waits on another runner, and
takes a batch of machines in one statement (their outcomes are written back in one, too).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from provisioning import __version__
from provisioning.errors import ConfigError, StateError
from provisioning.faults import checkpoint
from provisioning.store.base import ManagedEntryStore, holder_is_dead, mask_url
from provisioning.store.postgres_batch import PREPARE_WRITES, EntryWrite, distinct_rounds, send_writes
from provisioning.store.postgres_claims import PostgresClaims
from provisioning.store.postgres_sql import ADVISORY_NAMESPACE, alive, connect, execute, psycopg2, scalar

if TYPE_CHECKING:  # pragma: no cover
    from psycopg2.extensions import connection as Connection

__all__ = ["PostgresStore", "SCHEMA_VERSION", "MIGRATIONS", "masked_url"]

T = TypeVar("T")

#: the second half used for the schema-migration lock
_MIGRATION_KEY = 0

#: (version, description, SQL), applied in order; never edit a released one, append instead
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "entries, metadata and lock leases", """
        CREATE TABLE provisioning_meta (key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE provisioning_entries (
            kind text NOT NULL, name text NOT NULL, data text NOT NULL,
            version integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (kind, name));
        CREATE TABLE provisioning_locks (
            name text PRIMARY KEY, token text NOT NULL, holder jsonb NOT NULL,
            session_key integer NOT NULL, expires_at timestamptz NOT NULL);
    """),
    (2, "runs and work claims for many runners", """
        CREATE TABLE provisioning_runs (
            run_key text NOT NULL, generation integer NOT NULL, operation text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            touched_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz, PRIMARY KEY (run_key, generation));
        CREATE TABLE provisioning_work (
            run_key text NOT NULL, generation integer NOT NULL, name text NOT NULL,
            state text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
            token text, holder jsonb, session_key integer, expires_at timestamptz,
            claimed_at timestamptz, done_at timestamptz, error text,
            PRIMARY KEY (run_key, generation, name),
            FOREIGN KEY (run_key, generation) REFERENCES provisioning_runs ON DELETE CASCADE);
    """),
    (3, "entries belong to a cluster (data.cluster): older code must not rewrite them", """
        COMMENT ON COLUMN provisioning_entries.data IS
            'JSON: reference, last_action, last_error, updated_at, cluster, group';
    """),
    (4, "an index of the open work of each run: claims and counts cost the open rows only", """
        CREATE INDEX provisioning_work_open ON provisioning_work
            (run_key, generation, name COLLATE "C") WHERE state IN ('pending', 'claimed');
    """),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
def masked_url(url: str) -> str:
    """The URL with a password in the user part or a ``password=`` parameter masked."""
    return mask_url(re.sub(r"([?&]password=)[^&]*", r"\1***", url))


def _url_password(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    values = parse_qs(parts.query).get("password")
    return values[0] if values else None


def _server(url: str) -> str:
    """Where a URL points, for the user: ``host HOST, port PORT, database DB`` (libpq's
    defaults and PGHOST/PGPORT/PGDATABASE filled in), or a ConfigError when nothing names a
    server nor a database (``postgresql://``) or the port is not a port number."""
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    env = os.environ
    try:
        port = parts.port or query.get("port") or env.get("PGPORT") or "5432"
    except ValueError as exc:
        raise ConfigError(f"the state URL {masked_url(url)} has a bad port ({exc}); write "
                          "postgresql://USER@HOST:PORT/DB with PORT from 1 to 65535",
                          key="state") from exc
    host = parts.hostname or query.get("host") or env.get("PGHOST")
    database = unquote(parts.path.lstrip("/")) or query.get("dbname") or env.get("PGDATABASE")
    if not host and not database and not (query.get("service") or env.get("PGSERVICE")):
        raise ConfigError(f"the state URL {masked_url(url)} names no server and no database; "
                          "write postgresql://USER@HOST/DB (or postgresql:///DB for the local "
                          "socket)", key="state")
    return (f"host {host or 'the local socket'}, port {port}, "
            f"database {database or 'named as the user'}")


def _scrub_secret(text: str, secret: str) -> str:
    """``text`` with ``secret`` masked where a password stands (a URL's ``user:SECRET@``, a
    ``password=SECRET`` parameter or DSN key) and, when it is long enough not to be an
    ordinary word (8 characters or more), anywhere: a password ``a`` or ``pg`` must not turn
    every ``a`` of a message into ``***``."""
    text = re.sub(r"(password\s*=\s*'?)" + re.escape(secret) + r"(?=['&\s]|$)", r"\1***",
                  mask_url(text))
    return text.replace(secret, "***") if len(secret) >= 8 else text


class PostgresStore(PostgresClaims, ManagedEntryStore):
    """Entries and leases in PostgreSQL; safe across threads, processes and hosts."""

    supports_claims = True

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        self._raw_url = url if not url.startswith("postgres://") else "postgresql://" + url[11:]
        self.url = masked_url(url)
        self._server = _server(self._raw_url)
        self._secrets = [s for s in (_url_password(url), os.environ.get("PGPASSWORD")) if s]
        self._connect_timeout = connect_timeout
        self._mutex = threading.RLock()
        #: entry writes waiting for the connection (``_write_grouped``)
        self._pending: list[EntryWrite] = []
        self._pending_lock = threading.Lock()
        #: the connection ``PREPARE_WRITES`` was run on (prepared statements live in a session)
        self._prepared_on: Connection | None = None
        self._conn: Connection | None = None
        self.session_key = 0
        with self._mapped("open"):
            self._connect()
            self._migrate()

    # -- errors: the one boundary where psycopg2's exceptions become ours ---------------------
    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = _scrub_secret(text, secret)
        return text

    @contextlib.contextmanager
    def _mapped(self, doing: str) -> Iterator[None]:
        """Translate psycopg2 errors (most specific first), always masking the password."""
        try:
            yield
        except StateError:
            raise
        except psycopg2.errors.InsufficientPrivilege as exc:
            raise StateError(self._scrub(
                f"the PostgreSQL state at {self.url} refused to {doing}: {exc}; grant the user "
                "CREATE and USAGE on the database's schema, or use another database")) from exc
        except psycopg2.errors.UntranslatableCharacter as exc:
            raise StateError(self._scrub(f"cannot {doing}: {exc}")) from exc
        except psycopg2.DataError as exc:
            raise StateError(self._scrub(f"cannot {doing}: {exc} (names and values must be "
                                         "valid UTF-8 text without NUL characters)")) from exc
        except psycopg2.OperationalError as exc:
            self._drop_connection()
            raise StateError(self._scrub(
                f"cannot reach the PostgreSQL state at {self.url} ({self._server}) to {doing}: "
                f"{' '.join(str(exc).split())}; check host, port, database, user and password "
                "(in the URL, PGPASSWORD or ~/.pgpass) and that the server runs there")) from exc
        except psycopg2.Error as exc:
            raise StateError(self._scrub(
                f"the PostgreSQL state at {self.url} failed to {doing}: {exc}")) from exc

    def _safe_holder(self, holder: dict[str, Any]) -> dict[str, Any]:
        """The holder as stored and shown to others: its command line (which may carry a
        ``--state`` URL) with every password masked."""
        command = holder.get("command")
        if isinstance(command, str):
            holder = dict(holder, command=self._scrub(masked_url(command)))
        return holder

    # -- connection --------------------------------------------------------------------------
    def _connect(self) -> Connection:
        conn = connect(self._raw_url, self._connect_timeout, keepalives=1, keepalives_idle=10,
                       keepalives_interval=5, keepalives_count=3)
        # the session key: held as long as this connection lives; leases record it
        for _ in range(20):
            key = 1 + int.from_bytes(os.urandom(4), "big") % (2**31 - 1)  # without importing random
            if scalar(execute(conn, "SELECT pg_try_advisory_lock(%s, %s)",
                              (ADVISORY_NAMESPACE, key))):
                break
        else:  # pragma: no cover - 20 collisions in 2**31 keys
            raise StateError("could not pick a free session key in the PostgreSQL state")
        self._conn, self.session_key = conn, key
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _db(self) -> Connection:
        conn = self._conn
        if conn is None or conn.closed:  # psycopg2: nonzero once closed or found broken
            self._drop_connection()
            conn = self._connect()
        return conn

    def _run(self, doing: str, fn: Callable[[Connection], T], *, tx: bool = True,
             retry: bool = True) -> T:
        """Run ``fn`` on the connection, in one transaction unless ``tx`` is False. Without a
        transaction (a read, or one idempotent statement), ``fn`` on a connection found dead is
        retried once on a new connection unless ``retry`` is False."""
        with self._mutex, self._mapped(doing):
            conn = self._db()
            if tx:
                return self._in_transaction(conn, fn)
            try:
                return fn(conn)
            except psycopg2.OperationalError:
                if not conn.closed or not retry:
                    raise
                self._drop_connection()
                return fn(self._db())

    @staticmethod
    def _in_transaction(conn: Connection, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one transaction: committed when it returns, rolled back when it raises."""
        conn.autocommit = False  # psycopg2 sends BEGIN before the first statement
        try:
            result = fn(conn)
            conn.commit()
            return result
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg2.Error):
                    conn.rollback()
            raise
        finally:
            if not conn.closed:
                conn.autocommit = True

    def _migrate(self) -> None:
        """Bring the schema up to ``SCHEMA_VERSION``. A schema already there is seen in one
        read without the migration lock (versions are recorded with their migration, in
        one transaction), so runners starting together do not queue for that lock."""
        if self._installed_version() == SCHEMA_VERSION:
            return

        def migrate(conn: Connection) -> None:
            execute(conn, "SELECT pg_advisory_xact_lock(%s, %s)",
                         (ADVISORY_NAMESPACE, _MIGRATION_KEY))
            execute(conn, "CREATE TABLE IF NOT EXISTS provisioning_schema ("
                         "version integer PRIMARY KEY, description text NOT NULL, "
                         "applied_at timestamptz NOT NULL DEFAULT now())")
            current = scalar(execute(conn,
                "SELECT coalesce(max(version), 0) FROM provisioning_schema"))
            if current > SCHEMA_VERSION:
                raise StateError(
                    f"the PostgreSQL state at {self.url} has schema version {current}, newer than "
                    f"this provisioning {__version__} knows ({SCHEMA_VERSION}); upgrade "
                    "provisioning on this runner (pip install -U provisioning)")
            for version, description, sql in MIGRATIONS:
                if version > current:
                    execute(conn, sql)
                    execute(conn, "INSERT INTO provisioning_schema (version, description) "
                                 "VALUES (%s, %s)", (version, description))
        self._run("create or upgrade its schema", migrate)

    def _installed_version(self) -> int | None:
        """The schema version recorded, None before the first migration."""
        def read(conn: Connection) -> int | None:
            try:
                return int(scalar(execute(conn,
                    "SELECT coalesce(max(version), 0) FROM provisioning_schema")))
            except psycopg2.errors.UndefinedTable:
                return None
        return self._run("read the schema version", read, tx=False)

    def schema_version(self) -> int:
        return self._installed_version() or 0

    # -- entries -----------------------------------------------------------------------------
    def _load(self, kind, name):
        row = self._run(f"read {kind} {name!r}", lambda c: execute(c,
            "SELECT data, version FROM provisioning_entries WHERE kind = %s AND name = %s",
            (kind, name)).fetchone(), tx=False)
        return (row[0], row[1]) if row else None

    def _load_many(self, kind, names):
        rows = self._run(f"read {len(names)} {kind} entries", lambda c: execute(c,
            "SELECT name, data, version FROM provisioning_entries WHERE kind = %s "
            "AND name = ANY(%s::text[])", (kind, list(names))).fetchall(), tx=False)
        return {r[0]: (r[1], r[2]) for r in rows}

    def _store(self, kind, name, data, expected_version):
        write = EntryWrite(kind, name, data, expected_version)
        self._write_grouped([write])
        if write.error is not None:
            raise write.error
        return write.version

    def _store_many(self, rows, *, release=None):
        """In one statement with other threads' saves (``_write_grouped``), ``release``
        released in it with the last row (a refused save's caller releases it anyway)."""
        writes = [EntryWrite(*row) for row in rows]
        writes[-1].lock = release
        self._write_grouped(writes)
        if release is not None and writes[-1].error is None:
            release._forget()
        return [w.error if w.error is not None else w.version for w in writes]

    def _write_grouped(self, writes: list[EntryWrite]) -> None:
        """Queue ``writes``, then send every queued write in one statement, unless the thread
        holding the connection meanwhile sent them with its own (a group commit: the saves of
        workers finishing together cost one round trip, not one each)."""
        with self._pending_lock:
            self._pending.extend(writes)
        one = writes[0]
        doing = f"save {one.kind} {one.name!r}" if len(writes) == 1 else \
            f"save {len(writes)} entries"
        try:
            self._run(doing, self._send_pending, tx=False, retry=False)
        except BaseException:  # no connection: what nobody sent is taken back, not sent later
            with self._pending_lock:
                mine = {id(w) for w in writes}
                self._pending = [w for w in self._pending if id(w) not in mine]
            if not all(w.done for w in writes):
                raise

    def _send_pending(self, conn: Connection) -> None:
        """Every queued write, in statements that each name an entry once."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if not batch:
            return  # sent by the thread that held the connection before
        try:
            checkpoint("mid_save", machine=batch[0].name)  # fault tests: before it lands
            for part in distinct_rounds(batch):
                self._send_part(conn, part)
        except Exception as exc:
            for write in batch:
                if not write.done:
                    write.error, write.done = self._translated(
                        exc, f"save {write.kind} {write.name!r}"), True
        finally:
            for write in batch:
                if not write.done:  # interrupted (KeyboardInterrupt): not known to be saved
                    write.error, write.done = StateError(
                        f"{write.kind} {write.name!r} was not saved: interrupted"), True

    def _send_part(self, conn: Connection, part: list[EntryWrite]) -> None:
        try:
            if len(part) > 1 and self._prepared_on is not conn:
                execute(conn, PREPARE_WRITES)
                self._prepared_on = conn
            send_writes(conn, part)
        except psycopg2.Error as exc:
            if len(part) == 1 or isinstance(exc, psycopg2.OperationalError) or conn.closed:
                raise
            for write in part:  # one row the server refused (bad text) fails its save alone
                try:
                    send_writes(conn, [write])
                except psycopg2.OperationalError:
                    raise
                except psycopg2.Error as own:
                    write.error, write.done = self._translated(
                        own, f"save {write.kind} {write.name!r}"), True

    def _translated(self, exc: BaseException, doing: str) -> BaseException:
        """``exc`` as ``_mapped`` raises it for ``doing`` (called with the connection held)."""
        try:
            with self._mapped(doing):
                raise exc
        except BaseException as mapped:
            return mapped

    def _store_renamed(self, kind, name, data, expected_version, old_name):
        """The save and the delete of ``old_name`` in one transaction (``state mv``): a refused
        save rolls the delete back with it."""
        write = EntryWrite(kind, name, data, expected_version, forget=old_name)

        def send(conn: Connection) -> int:
            checkpoint("mid_save", machine=name)  # fault tests: fail before the write lands
            send_writes(conn, [write])
            if write.error is not None:
                raise write.error
            return write.version
        return self._run(f"save {kind} {name!r}", send)

    def _remove(self, kind, name):
        self._run(f"delete {kind} {name!r}", lambda c: execute(c,
            "DELETE FROM provisioning_entries WHERE kind = %s AND name = %s", (kind, name)),
            tx=False)

    def _remove_many(self, kind, names):
        self._run(f"delete {len(names)} {kind} entries", lambda c: execute(c,
            "DELETE FROM provisioning_entries WHERE kind = %s AND name = ANY(%s::text[])",
            (kind, list(names))), tx=False)

    def _names(self, kind):
        rows = self._run(f"list {kind} entries", lambda c: execute(c,
            "SELECT name, data, version FROM provisioning_entries WHERE kind = %s "
            'ORDER BY name COLLATE "C"', (kind,)).fetchall(), tx=False)
        return [tuple(r) for r in rows]

    def kinds(self) -> list[str]:
        """Every kind that has entries (for export)."""
        rows = self._run("list kinds", lambda c: execute(c,
            'SELECT kind FROM provisioning_entries GROUP BY kind ORDER BY kind COLLATE "C"').fetchall(),
            tx=False)
        return [r[0] for r in rows]

    def _meta(self, key, default=None):
        def get(conn: Connection) -> str | None:
            if default is not None:
                execute(conn, "INSERT INTO provisioning_meta (key, value) VALUES (%s, %s) "
                             "ON CONFLICT (key) DO NOTHING", (key, default))
            row = execute(conn, "SELECT value FROM provisioning_meta WHERE key = %s",
                               (key,)).fetchone()
            return row[0] if row else None
        return self._run(f"read setting {key!r}", get)

    # -- leases ------------------------------------------------------------------------------
    def _try_acquire(self, name, token, holder, ttl):
        def take(conn: Connection) -> dict[str, Any] | None:
            row = execute(conn,
                "INSERT INTO provisioning_locks AS l (name, token, holder, session_key, expires_at)"
                " VALUES (%(n)s, %(t)s, %(h)s::jsonb, %(k)s, clock_timestamp() + %(ttl)s * interval '1s')"
                " ON CONFLICT (name) DO UPDATE SET token = excluded.token,"
                " holder = excluded.holder, session_key = excluded.session_key,"
                " expires_at = excluded.expires_at"
                f" WHERE l.expires_at <= clock_timestamp() OR NOT {alive('l.session_key')}"
                " RETURNING token",
                {"n": name, "t": token, "h": json.dumps(self._safe_holder(holder)),
                 "k": self.session_key, "ttl": float(ttl)}).fetchone()
            if row is not None:
                return None
            current = execute(conn, "SELECT holder, token FROM provisioning_locks WHERE name = %s",
                                   (name,)).fetchone()
            if current is None:  # released between the two statements: try once more
                return take(conn)
            if holder_is_dead(current[0]):  # our host, its process gone: free it now
                execute(conn, "DELETE FROM provisioning_locks WHERE name = %s AND token = %s",
                             (name, current[1]))
                return take(conn)
            return current[0]
        return self._run(f"lock {name!r}", take)

    def _try_acquire_many(self, tokens, holder, ttl):
        """Every free name in one statement; the others' holders in a second."""
        def take(conn: Connection) -> dict[str, dict[str, Any] | None]:
            names, values = list(tokens), [tokens[n] for n in tokens]
            taken = {r[0] for r in execute(conn,
                "INSERT INTO provisioning_locks AS l (name, token, holder, session_key, expires_at)"
                " SELECT n, t, %(h)s::jsonb, %(k)s, clock_timestamp() + %(ttl)s * interval '1s'"
                " FROM unnest(%(n)s::text[], %(t)s::text[]) AS w(n, t)"
                " ON CONFLICT (name) DO UPDATE SET token = excluded.token,"
                " holder = excluded.holder, session_key = excluded.session_key,"
                " expires_at = excluded.expires_at"
                f" WHERE l.expires_at <= clock_timestamp() OR NOT {alive('l.session_key')}"
                " RETURNING name",
                {"n": names, "t": values, "h": json.dumps(self._safe_holder(holder)),
                 "k": self.session_key, "ttl": float(ttl)}).fetchall()}
            out: dict[str, dict[str, Any] | None] = {name: None for name in taken}
            held = [n for n in names if n not in taken]
            if held:
                out.update({r[0]: r[1] for r in execute(conn,
                    "SELECT name, holder FROM provisioning_locks WHERE name = ANY(%s::text[])",
                    (held,)).fetchall()})
            return out
        # no transaction around them: the insert is one statement (its own transaction) and
        # the holders' read only names who held what (two round trips fewer per batch)
        result = self._run(f"lock {len(tokens)} names", take, tx=False, retry=False)
        # a name freed between the two statements, or held by a dead process here: one by one
        for name in [n for n in tokens if n not in result or
                     (result[n] is not None and holder_is_dead(result[n]))]:
            result[name] = self._try_acquire(name, tokens[name], holder, ttl)
        return result

    def _renew(self, name, token, ttl):
        self._run(f"renew the lock on {name!r}", lambda c: execute(c,
            "UPDATE provisioning_locks SET expires_at = clock_timestamp() + %s * interval '1s', "
            "session_key = %s WHERE name = %s AND token = %s",
            (float(ttl), self.session_key, name, token)), tx=False)

    def _release(self, name, token):
        self._run(f"release the lock on {name!r}", lambda c: execute(c,
            "DELETE FROM provisioning_locks WHERE name = %s AND token = %s", (name, token)),
            tx=False)

    def locks(self):
        rows = self._run("list locks", lambda c: execute(c,
            "SELECT name, holder FROM provisioning_locks l WHERE expires_at > clock_timestamp() "
            f'AND {alive("l.session_key")} ORDER BY name COLLATE "C"').fetchall(), tx=False)
        return {name: holder for name, holder in rows if not holder_is_dead(holder)}

    def close(self) -> None:
        with self._mutex:
            self._drop_connection()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:  # never pickle a password along
        raise TypeError("a PostgresStore cannot be pickled; open one per process with its URL")

    def describe(self) -> dict[str, Any]:
        """Plain facts for ``status``: masked URL, schema version."""
        return {"url": self.url, "schema_version": self.schema_version(),
                "store_id": self.store_id}
