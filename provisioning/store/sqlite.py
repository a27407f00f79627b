"""SQLiteStore: the default state store, a single file beside the cluster file.

WAL mode, every write in one ``BEGIN IMMEDIATE`` transaction (atomic: a crash mid-save leaves
the previous version), file mode 0600 in a 0700 directory. Safe across threads and processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Iterator, Sequence, TypeVar

from provisioning.errors import ConfigError, ProvisioningError, StateConflict, StateError
from provisioning.faults import checkpoint
from provisioning.inputs.userfiles import creation_problem
from provisioning.store import DEFAULT_STATE_PATH
from provisioning.store.base import ANY_VERSION, ManagedEntryStore, holder_is_dead
from provisioning.store.state_file import check_tables, inspect_state_file, tighten_mode

__all__ = ["SQLiteStore", "DEFAULT_STATE_PATH"]

SCHEMA_VERSION = 2
#: seconds a statement waits for another process's write to finish before giving up
BUSY_TIMEOUT = 30.0
#: names per ``IN (...)`` list (SQLite allows at least 999 parameters)
_CHUNK = 500
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    kind TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
    version INTEGER NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY, token TEXT NOT NULL, holder TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS entries_cluster ON entries (kind, json_extract(data, '$.cluster'));
"""

#: schema version -> SQL that brings the previous version to it (applied in order on open)
_MIGRATIONS = {
    # entries record their cluster in their data; older code must not rewrite (and drop) it
    2: "CREATE INDEX IF NOT EXISTS entries_cluster ON entries "
       "(kind, json_extract(data, '$.cluster'))",
}


class _Write:
    """One thread's write waiting for a transaction shared with other threads' writes."""

    __slots__ = ("fn", "result", "error", "done")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


class SQLiteStore(ManagedEntryStore):
    def __init__(self, path: str | os.PathLike = DEFAULT_STATE_PATH, *,
                 read_only: bool = False) -> None:
        """Open (or create) the state file. ``read_only``: the file must exist, and nothing
        about it is changed (no mode fix, no schema upgrade)."""
        self.path = os.path.abspath(os.fspath(path))
        self.url = f"sqlite://{self.path}"
        directory = os.path.dirname(self.path)
        exists = inspect_state_file(self.path)
        if read_only and not exists:
            raise StateError(f"state file {self.path} does not exist")
        problem = None if exists or read_only else creation_problem(self.path)
        if problem:
            raise ConfigError(f"the state file {self.path} cannot be made: {problem}; fix that, "
                              "or choose another location with --state", key="state")
        try:
            if not exists:
                if not os.path.isdir(directory):
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
        except OSError as exc:
            raise StateError(f"cannot create the state file {self.path}: {exc.strerror}; "
                             "choose a writable location with --state") from exc
        self._mutex = threading.RLock()
        #: writes waiting for the next shared transaction (``_grouped``)
        self._pending: list[_Write] = []
        self._pending_lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            if exists:
                try:
                    with self._guard():
                        check_tables(self._db, self.path, SCHEMA_VERSION)
                except ProvisioningError:
                    self._db.close()
                    raise
            if read_only:
                version = self._meta("schema_version")
            else:
                self._switch_to_wal()
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._tx(self._create_schema)
                version = self._meta("schema_version", str(SCHEMA_VERSION))
                if int(version or 0) < SCHEMA_VERSION:
                    version = self._migrate(int(version or 1))
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path} is not a usable provisioning state file: {exc}") from exc
        if int(version or 0) > SCHEMA_VERSION:
            raise StateError(f"{self.path} was written by a newer provisioning (schema {version}, "
                             f"this one knows {SCHEMA_VERSION}); upgrade provisioning")
        if not read_only:  # only now is it known to be ours
            for suffix in ("", "-wal", "-shm"):
                tighten_mode(self.path + suffix)

    @staticmethod
    def _create_schema(db: sqlite3.Connection) -> None:
        """The tables and the schema version in one transaction: another process opening the
        file meanwhile sees either nothing or a complete state file, never tables without a
        version (which it would refuse as another program's database)."""
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                   (str(SCHEMA_VERSION),))

    def _switch_to_wal(self) -> None:
        """Turn on WAL mode. Several processes opening one brand-new file race for it, and
        SQLite answers "database is locked" at once rather than waiting: retry within the busy
        timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        delay = 0.001
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _migrate(self, current: int) -> str:
        """Bring an older state file to this schema, in one transaction, keeping every entry."""
        def upgrade(db: sqlite3.Connection) -> str:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            found = int(row[0]) if row else current
            for version in range(found + 1, SCHEMA_VERSION + 1):
                db.execute(_MIGRATIONS[version])
            db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            return str(SCHEMA_VERSION)
        return self._tx(upgrade)

    def schema_version(self) -> int:
        return int(self._meta("schema_version") or 0)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Serialize this process's use of the connection, and turn every sqlite3 error into
        a StateError naming the file (the one place sqlite exceptions are mapped)."""
        with self._mutex:
            try:
                yield
            except sqlite3.Error as exc:
                kind = "busy" if "locked" in str(exc) else "unusable"
                raise StateError(f"state file {self.path} is {kind}: {exc}; check the disk and "
                                 "the file's permissions, or restore it from a backup") from exc

    def _tx(self, fn: Callable[[sqlite3.Connection], T], *, script: bool = False) -> T:
        """Run ``fn`` in one IMMEDIATE transaction (serialized against other processes)."""
        with self._guard():
            db = self._db
            if script:
                return fn(db)
            for attempt in range(50):
                try:
                    db.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 49:
                        raise StateError(f"state file {self.path} is busy: {exc}") from exc
                    time.sleep(0.05)
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

    def _grouped(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a transaction shared with the writes other threads of this process
        queued meanwhile (a group commit): whoever takes the connection next commits them all,
        each in its own savepoint, so each write keeps its own checks and outcome and returns
        only once committed. A thousand machines' saves cost tens of commits, not a thousand."""
        write = self._grouped_many([fn])[0]
        if write.error is not None:
            raise write.error
        return write.result

    def _grouped_many(self, fns: Sequence[Callable[[sqlite3.Connection], Any]]) -> list[_Write]:
        """``_grouped`` of several writes, each with its own outcome."""
        writes = [_Write(fn) for fn in fns]
        with self._pending_lock:
            self._pending.extend(writes)
        with self._guard():
            if not all(write.done for write in writes):
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit_batch(batch)
        return writes

    def _commit_batch(self, batch: list[_Write]) -> None:
        if len(batch) == 1:  # alone in its transaction: no savepoint needed to undo it alone
            write = batch[0]
            try:
                write.result = self._tx(write.fn)
            except Exception as exc:  # undone with its transaction; raised to its caller
                write.error = exc
            finally:
                write.done = True
            return

        def run(db: sqlite3.Connection) -> None:
            for write in batch:
                db.execute("SAVEPOINT one_write")
                try:
                    write.result = write.fn(db)
                except sqlite3.Error:  # the file itself failed: the whole transaction does
                    raise
                except Exception as exc:  # this write alone is undone; the others go on
                    db.execute("ROLLBACK TO one_write")
                    write.error = exc
                db.execute("RELEASE one_write")
        try:
            self._tx(run)
        except BaseException as exc:  # nothing of the transaction was saved
            shared = exc if isinstance(exc, Exception) else StateError(
                f"not saved in {self.path}: the transaction it shared was interrupted")
            for write in batch:
                write.error = shared
            raise
        finally:
            for write in batch:
                write.done = True

    def _load(self, kind, name):
        with self._guard():
            row = self._db.execute("SELECT data, version FROM entries WHERE kind=? AND name=?",
                                   (kind, name)).fetchone()
        return (row[0], row[1]) if row else None

    def kinds(self) -> list[str]:
        """Every kind that has entries (for export), like the PostgreSQL store."""
        with self._guard():
            rows = self._db.execute("SELECT DISTINCT kind FROM entries ORDER BY kind").fetchall()
        return [r[0] for r in rows]

    def _load_many(self, kind, names):
        rows = {}
        with self._guard():
            for start in range(0, len(names), _CHUNK):
                part = names[start:start + _CHUNK]
                rows.update((r[0], (r[1], r[2])) for r in self._db.execute(
                    f"SELECT name, data, version FROM entries WHERE kind=? AND name IN "
                    f"({','.join('?' * len(part))})", (kind, *part)))
        return rows

    def _store(self, kind, name, data, expected_version):
        return self._grouped(self._writer(kind, name, data, expected_version))

    def _store_many(self, rows, *, release=None):
        """One transaction (shared with other threads' writes, ``_grouped``), a savepoint per
        entry; ``release`` is released with the last row's write (one commit, not two)."""
        fns = [self._writer(*row) for row in rows]
        if release is not None:
            last = fns[-1]

            def last_and_release(db: sqlite3.Connection) -> int:
                version = last(db)
                db.execute("DELETE FROM locks WHERE name=? AND token=?",
                           (release.name, release.token))
                return version
            fns[-1] = last_and_release
        writes = self._grouped_many(fns)
        if release is not None and writes[-1].error is None:
            release._forget()
        return [w.error if w.error is not None else w.result for w in writes]

    @staticmethod
    def _writer(kind: str, name: str, data: str,
                expected_version: int) -> Callable[[sqlite3.Connection], int]:
        def write(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT version FROM entries WHERE kind=? AND name=?",
                             (kind, name)).fetchone()
            version = row[0] if row else 0
            if expected_version not in (version, ANY_VERSION):
                raise StateConflict(f"{kind} {name!r} changed since it was read (version {version}"
                                    f", expected {expected_version}); re-read and retry")
            db.execute("INSERT OR REPLACE INTO entries (kind, name, data, version, updated_at) "
                       "VALUES (?, ?, ?, ?, ?)", (kind, name, data, version + 1, time.time()))
            checkpoint("mid_save", machine=name)  # crash tests: die inside the transaction
            return version + 1
        return write

    def _store_renamed(self, kind, name, data, expected_version, old_name):
        """The save and the delete in one transaction."""
        write = self._writer(kind, name, data, expected_version)

        def both(db: sqlite3.Connection) -> int:
            version = write(db)
            db.execute("DELETE FROM entries WHERE kind=? AND name=?", (kind, old_name))
            return version
        return self._grouped(both)

    def _remove(self, kind, name):
        self._grouped(lambda db: db.execute("DELETE FROM entries WHERE kind=? AND name=?",
                                            (kind, name)))

    def _remove_many(self, kind, names):
        self._tx(lambda db: db.executemany("DELETE FROM entries WHERE kind=? AND name=?",
                                           [(kind, n) for n in names]) and None)

    def _names(self, kind):
        with self._guard():
            rows = self._db.execute("SELECT name, data, version FROM entries WHERE kind=? "
                                    "ORDER BY name", (kind,)).fetchall()
        return [tuple(r) for r in rows]

    def _try_acquire(self, name, token, holder, ttl):
        return self._try_acquire_many({name: token}, holder, ttl)[name]

    def _try_acquire_many(self, tokens, holder, ttl):
        """Every name in one transaction: the current holders read with one query per
        ``_CHUNK`` names, the free names taken with one ``executemany``."""
        text = json.dumps(holder)
        names = list(tokens)

        def take(db: sqlite3.Connection) -> dict[str, dict[str, Any] | None]:
            now = time.time()
            held: dict[str, tuple[str, float]] = {}
            for start in range(0, len(names), _CHUNK):
                part = names[start:start + _CHUNK]
                held.update((r[0], (r[1], r[2])) for r in db.execute(
                    f"SELECT name, holder, expires_at FROM locks WHERE name IN "
                    f"({','.join('?' * len(part))})", part))
            out: dict[str, dict[str, Any] | None] = {}
            for name in names:
                row = held.get(name)
                if row is not None:
                    current = json.loads(row[0])
                    if row[1] > now and not holder_is_dead(current):
                        out[name] = current
                        continue
                out[name] = None
            db.executemany("INSERT OR REPLACE INTO locks (name, token, holder, expires_at) "
                           "VALUES (?, ?, ?, ?)", [(n, tokens[n], text, now + ttl)
                                                   for n in names if out[n] is None])
            return out
        return self._tx(take)

    def _renew(self, name, token, ttl):
        self._tx(lambda db: db.execute("UPDATE locks SET expires_at=? WHERE name=? AND token=?",
                                       (time.time() + ttl, name, token)))

    def _release(self, name, token):
        self._grouped(lambda db: db.execute("DELETE FROM locks WHERE name=? AND token=?",
                                            (name, token)))

    def _meta(self, key, default=None):
        def get(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            if row is None and default is not None:
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, default))
                return default
            return row[0] if row else None
        return self._tx(get)

    def locks(self):
        with self._guard():
            rows = self._db.execute("SELECT name, holder FROM locks WHERE expires_at > ?",
                                    (time.time(),)).fetchall()
        holders = {name: json.loads(holder) for name, holder in rows}
        # a lease whose process on this host is gone is free (``_try_acquire`` takes it): not
        # shown as someone at work
        return {name: h for name, h in holders.items() if not holder_is_dead(h)}

    def close(self) -> None:
        with self._guard():
            self._db.close()
