"""Is this path our SQLite state file? Checked before the store touches it.

``--state`` takes any path, so before ``SQLiteStore`` creates, opens, extends or chmods a file it
asks here. An existing file is used only when it is already a provisioning state file (SQLite
with our ``meta`` table, or an empty database); anything else (``/etc/passwd``, a directory, a
device, someone else's SQLite database, a path under /proc) is a ``ConfigError`` naming the path,
and nothing is changed. A missing file's parent must be a directory (or creatable).
``tighten_mode`` makes our own file 0600 without following a symbolic link. The file is never
opened here: SQLite's POSIX locks are per process, and closing any descriptor of the file would
drop them under a live connection.
"""

from __future__ import annotations

import os
import sqlite3
import stat

from provisioning.errors import ConfigError
from provisioning.inputs.userfiles import creation_problem

__all__ = ["inspect_state_file", "check_tables", "tighten_mode"]
_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def _refuse(path: str, message: str) -> ConfigError:
    return ConfigError(f"state file {path}: {message}", key="state")


def inspect_state_file(path: str) -> bool:
    """True when ``path`` is our state file, False when it does not exist yet (and may be
    created); ConfigError for everything else."""
    real = os.path.realpath(path)
    if any(real == top or real.startswith(top + "/") for top in _PSEUDO_FILESYSTEMS):
        raise _refuse(path, f"is under {real.split('/')[1] and '/' + real.split('/')[1]}, not "
                            "a place for files; give a path like .provisioning/state.db")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        _check_parent(path)
        return False
    except NotADirectoryError:
        _check_parent(path)
        raise _refuse(path, "a part of the path is not a directory") from None  # pragma: no cover
    except OSError as exc:
        raise _refuse(path, f"cannot be read: {exc.strerror}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise _refuse(path, f"is a directory; give a file path such as {path.rstrip('/')}"
                            "/state.db")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, "is not a regular file; give the path of a state file")
    if info.st_size == 0:
        if info.st_mode & 0o077:
            raise _refuse(path, "is an empty file that others can read, not a state file this "
                                "tool made; give another path or remove it")
        return True
    return True


def check_tables(db: sqlite3.Connection, path: str, newest: int | None = None) -> None:
    """Refuse someone else's SQLite database, and one of ours whose schema is newer than
    ``newest`` (called on the store's own connection, before it creates a table or switches
    to WAL: a second connection here could race with runners using the file)."""
    try:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    except sqlite3.DatabaseError as exc:
        raise _refuse(path, f"is not a provisioning state file ({exc}); it was left unchanged; "
                            "give another path") from exc
    tables = {row[0] for row in rows}
    if not tables:
        return
    ours = "meta" in tables and db.execute(
        "SELECT 1 FROM meta WHERE key='schema_version'").fetchone() is not None
    if not ours:
        shown = ", ".join(sorted(tables)[:5])
        raise _refuse(path, f"is another program's SQLite database (tables: {shown}), not a "
                            "provisioning state file; it was left unchanged; give another path")
    version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    if not str(version).isdigit():
        raise _refuse(path, f"has a damaged schema version ({str(version)[:40]!r}, not a "
                            "number); it was left unchanged; restore it from a backup")
    if newest is not None and int(version) > newest:
        raise _refuse(path, f"was written by a newer provisioning (schema {version}, this one "
                            f"knows {newest}); it was left unchanged; upgrade provisioning")
    if "entries" not in tables:  # made in one transaction with meta: dropped since
        raise _refuse(path, "is damaged: its table 'entries' is missing (what it recorded of "
                            "each machine is gone); it was left unchanged; restore it from a "
                            "backup, or move it away and 'converge import' the machines")


def _check_parent(path: str) -> None:
    """Refuse a missing state file's path that no command could ever make (a file where a
    directory goes, a symbolic link to nothing), for readers too; writability is the creating
    store's question."""
    problem = creation_problem(os.path.abspath(path), writable=False)
    if problem:
        raise _refuse(path, f"{problem}; fix that, or choose another location with --state")


def tighten_mode(path: str) -> None:
    """Make our state file 0600 if it is not; a symbolic link is left alone (never followed).
    Never opens the file: closing any descriptor of an SQLite file drops the process's locks."""
    try:
        info = os.lstat(path)
    except OSError:
        return
    if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
        os.chmod(path, 0o600)
