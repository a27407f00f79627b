"""The ``fake:`` cloud's server records: one append-only journal, read incrementally.

Creating 1,000 servers used to write 2,000 small files (a JSON record and a tag file each, both
replaced atomically) and ``status`` read 1,000 of them back. Now a change is one line appended
to ``servers/journal`` under the warehouse's flock (``{"put": [server, ...]}`` for a batch of
new or changed servers, ``{"del": [id, ...]}``), and each process keeps the journal's meaning in
memory, reading only what was appended since its last look (one ``stat`` when nothing was).

Crash safety: a line is one ``write``; a writer killed in the middle leaves a torn last line,
which readers skip (the next writer starts on a fresh line). Nothing is rewritten in place:
``compact`` writes the live servers to a temporary file and renames it over the journal, under
the same lock. A reader keeps the journal it read open, so that file's inode number cannot be
given to the compacted one while the reader still counts on it: a different inode behind the
path always means a new journal, read from the start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import weakref
from typing import Any, Iterable, Iterator

from provisioning.keys import random_hex

__all__ = ["ServerJournal"]

#: servers written per journal line (a line is parsed in one ``json.loads``)
LINE_SERVERS = 1000


class ServerJournal:
    """The servers of one warehouse: ``path`` the journal, ``lock_path`` the flock that
    serializes writers (readers take no lock)."""

    def __init__(self, path: str, lock_path: str) -> None:
        self.path = path
        self.lock_path = lock_path
        self._mutex = threading.Lock()  # the warehouse is shared by a run's worker threads
        self._servers: dict[str, dict[str, Any]] = {}
        self._tagged: dict[tuple[str, str], str] = {}  # (name tag, store tag) -> newest id
        self._fd: int | None = None  # the journal read so far, held open
        self._inode: int | None = None  # its inode number
        self._closer: weakref.finalize | None = None  # closes ``_fd`` with this object
        self._offset = 0
        self._records = 0  # journal records read (put or del of one server)

    # -- reading ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read what was appended since the last call (all of it after a compaction)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            stat = None
        if stat is not None and (stat.st_ino, stat.st_size) == (self._inode, self._offset):
            return  # nothing new: the common case, without waiting for other threads
        with self._mutex:
            fd = self._hold_current()
            if fd is None:
                return
            size = os.fstat(fd).st_size
            if size == self._offset:
                return
            chunk = os.pread(fd, size - self._offset, self._offset)
            complete = chunk.rfind(b"\n") + 1  # a line still being written waits for its end
            self._offset += complete
            for line in chunk[:complete].split(b"\n"):
                if line.strip():
                    self._apply(line)

    def _hold_current(self) -> int | None:
        """The descriptor of the journal now at ``path``: the one held when the path still
        names it, else the new one opened and held (and what was read forgotten), None when
        there is no journal. Call under ``_mutex``."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            stat = None
        if self._fd is not None and stat is not None and stat.st_ino == self._inode:
            return self._fd
        self._release()
        if stat is None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        self._fd, self._closer = fd, weakref.finalize(self, os.close, fd)
        self._reset(os.fstat(fd).st_ino)
        return fd

    def _release(self) -> None:
        if self._closer is not None:
            self._closer()
        self._fd = self._closer = None
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self._servers, self._tagged = {}, {}
        self._inode, self._offset, self._records = inode, 0, 0

    def _apply(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return  # torn by a writer that was killed: nothing of it happened
        for server in record.get("put", ()):
            self._servers[server["id"]] = server
            tags = server.get("tags", {})
            if "provisioning:name" in tags:
                self._tagged[(tags["provisioning:name"], tags.get("provisioning:store", ""))] = \
                    server["id"]
        for server_id in record.get("del", ()):
            self._servers.pop(server_id, None)
        self._records += len(record.get("put", ())) + len(record.get("del", ()))

    def get(self, server_id: str) -> dict[str, Any] | None:
        server = self._servers.get(server_id)
        return _copy(server) if server is not None else None

    def state(self, server_id: str) -> str:
        """The server's state, "missing" when the journal does not know it (no copy made)."""
        server = self._servers.get(server_id)
        return str(server["state"]) if server is not None else "missing"

    def tagged(self, name: str, store_id: str) -> dict[str, Any] | None:
        """The newest server tagged for (name, store), if its tags still say so."""
        server = self._servers.get(self._tagged.get((name, store_id), ""))
        tags = (server or {}).get("tags", {})
        if tags.get("provisioning:name") == name and tags.get("provisioning:store") == store_id:
            return _copy(server)  # type: ignore[arg-type]
        return None

    def ids(self) -> list[str]:
        with self._mutex:  # not while another thread reads new lines into it
            return sorted(self._servers)

    def __contains__(self, server_id: object) -> bool:
        return server_id in self._servers

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator["ServerJournal"]:
        """The writers' lock, with the journal read up to date inside it."""
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.refresh()
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, *, put: Iterable[dict[str, Any]] = (), delete: Iterable[str] = ()) -> None:
        """One line (per ``LINE_SERVERS`` servers) at the journal's end; hold ``locked``."""
        put, delete = list(put), list(delete)
        lines = [json.dumps({"put": put[i:i + LINE_SERVERS]}, sort_keys=True)
                 for i in range(0, len(put), LINE_SERVERS)]
        if delete:
            lines.append(json.dumps({"del": delete}))
        if not lines:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"  # a killed writer's line
            os.write(fd, ("\n" if torn else "").encode() + ("\n".join(lines) + "\n").encode())
        finally:
            os.close(fd)
        self.refresh()

    def compact(self) -> bool:
        """Rewrite the journal with only its live servers when most of its records are dead
        (hold ``locked``). True when it did."""
        live = len(self._servers)
        if self._records < 1000 or self._records < 2 * live:
            return False
        tmp = f"{self.path}.tmp-{os.getpid()}-{random_hex(6)}"
        servers = [self._servers[i] for i in self.ids()]
        with open(tmp, "w", encoding="utf-8") as handle:
            for i in range(0, len(servers), LINE_SERVERS):
                handle.write(json.dumps({"put": servers[i:i + LINE_SERVERS]},
                                        sort_keys=True) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self.refresh()
        return True


def _copy(server: dict[str, Any]) -> dict[str, Any]:
    """A record the caller may change without changing the journal's memory."""
    return {**server, "tags": dict(server.get("tags", {}))}
