"""ManagedEntryStore: where machine records and per-machine locks live.

Stores implement a handful of small primitives (``_load``, ``_store``, ``_try_acquire``...);
the base class builds the public contract on them once: optimistic versions, lock leases with a
heartbeat, waiting with a deadline, and the ``StateLocked`` error that names the holder.
"""

from __future__ import annotations

import abc
import builtins
import os
import re
import sys
import threading
import time
from typing import Any, Callable, ClassVar, Iterator, Mapping, NamedTuple, Sequence

from provisioning.errors import StateLocked, UnsupportedOperation
from provisioning.keys import random_hex
from provisioning.spec import ManagedEntry

__all__ = ["ManagedEntryStore", "Lock", "WorkLeft", "holder_info", "mask_url",
           "DEFAULT_LOCK_TTL"]

#: seconds a lock lives without a heartbeat; a dead runner's locks free after this
DEFAULT_LOCK_TTL = 30.0
#: the expected version of a write made over whichever version the store holds
ANY_VERSION = -1
_HEARTBEAT_CREATION = threading.Lock()


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for errors, logs, status)."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def this_host() -> str:
    """This host's name as leases record it: the kernel's node name, which is what
    ``socket.gethostname()`` returns, without loading the socket module."""
    return os.uname().nodename


def holder_info(command: str | None = None) -> dict[str, Any]:
    """Who is taking a lock: host, PID, command line, since when."""
    return {
        "host": this_host(),
        "pid": os.getpid(),
        "command": command or " ".join(os.path.basename(a) if i == 0 else a
                                       for i, a in enumerate(sys.argv))[:200],
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def holder_is_dead(holder: dict[str, Any]) -> bool:
    """True when the holder ran on this host and its process no longer exists."""
    if holder.get("host") != this_host() or not holder.get("pid"):
        return False
    pid = int(holder["pid"])
    if pid == os.getpid():
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state in (b"Z", b"X")
    except (FileNotFoundError, IndexError):
        return True
    except OSError:
        return False


class WorkLeft(NamedTuple):
    """What is left of a shared run (``ManagedEntryStore.run_left``)."""

    #: machines nobody has claimed yet
    pending: int
    #: machines not yet done or failed: pending plus claimed
    open: int
    #: runners holding claims now
    runners: int


class Lock:
    """A held lock on one name, renewed by its store's heartbeat until released."""

    def __init__(self, store: "ManagedEntryStore", name: str, token: str, ttl: float,
                 holder: dict[str, Any]) -> None:
        self.store = store
        self.name = name
        self.token = token
        self.ttl = ttl
        self.holder = holder
        #: set: no more renewals (released, or a test freezing this runner)
        self._stop = threading.Event()
        self._next_renewal = time.monotonic() + self.interval
        store._heartbeat().add(self)

    @property
    def interval(self) -> float:
        return max(self.ttl / 3.0, 0.05)

    def renew(self) -> None:
        try:
            self.store._renew(self.name, self.token, self.ttl)
        except Exception:  # a failed renewal only shortens the lease; the next try may work
            pass
        self._next_renewal = time.monotonic() + self.interval

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._forget()
        self.store._release(self.name, self.token)

    def _forget(self) -> None:
        """Released in the store already (with a save): no more renewals, no more release."""
        self._stop.set()
        self.store._heartbeat().discard(self)

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Heartbeat:
    """One thread per store renews every lease this process holds there, each a third of its
    TTL before it would lapse: a batch of a thousand machines costs one thread, not a thousand."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._locks: set[Lock] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        #: when the thread wakes next by itself (monotonic clock)
        self._next_wake = 0.0

    def add(self, lock: Lock) -> None:
        with self._wake:
            self._locks.add(lock)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"lock-heartbeat:{self.name}")
                self._thread.start()
            elif lock._next_renewal < self._next_wake:  # only a sooner renewal needs a wake-up
                self._wake.notify()

    def discard(self, lock: Lock) -> None:
        with self._wake:
            self._locks.discard(lock)

    def _run(self) -> None:
        while True:
            with self._wake:
                live = [lock for lock in self._locks if not lock._stop.is_set()]
                if not live:
                    self._thread = None
                    return
                self._next_wake = min(lock._next_renewal for lock in live)
                self._wake.wait(max(self._next_wake - time.monotonic(), 0.0))
                now = time.monotonic()
                due = [lock for lock in self._locks
                       if not lock._stop.is_set() and lock._next_renewal <= now]
            for lock in due:
                lock.renew()


class ManagedEntryStore(abc.ABC):
    """Entries by (kind, name), and leases on names."""

    #: the URL this store was opened with, with any password masked
    url: str = ""
    #: made on first use: the lease-renewing thread, the id read from (or written to) the store
    _lease_heartbeat: Heartbeat | None = None
    _store_id: str | None = None

    # -- what a store may say about itself (defaults for a store without a schema) ---------
    def schema_version(self) -> int | None:
        """The version of the store's own tables (``converge state show``); None: no schema."""
        return None

    def kinds(self) -> list[str]:
        """The kinds ``converge state export`` moves. The built-in stores list every kind that
        has entries; this default, for a store that cannot enumerate them, lists the kinds a
        cluster cannot be rebuilt without."""
        return ["machine", "image", "load_balancer", "instance"]

    # -- primitives each store implements ----------------------------------------------------
    @abc.abstractmethod
    def _load(self, kind: str, name: str) -> tuple[str, int] | None:
        """(data json, version) or None."""

    @abc.abstractmethod
    def _store(self, kind: str, name: str, data: str, expected_version: int) -> int:
        """Write if the current version is ``expected_version`` (0: absent); return the new
        version, or raise ``StateConflict``. Atomic."""

    @abc.abstractmethod
    def _remove(self, kind: str, name: str) -> None: ...

    @abc.abstractmethod
    def _names(self, kind: str) -> list[tuple[str, str, int]]:
        """(name, data json, version) of every entry of a kind, sorted by name."""

    @abc.abstractmethod
    def _try_acquire(self, name: str, token: str, holder: dict[str, Any],
                     ttl: float) -> dict[str, Any] | None:
        """Take the lease if free, expired or held by a dead local process. Returns None when
        taken, else the current holder."""

    @abc.abstractmethod
    def _renew(self, name: str, token: str, ttl: float) -> None: ...

    @abc.abstractmethod
    def _release(self, name: str, token: str) -> None: ...

    @abc.abstractmethod
    def _meta(self, key: str, default: str | None = None) -> str | None:
        """Read a store-level value, creating it as ``default`` if absent."""

    @abc.abstractmethod
    def locks(self) -> dict[str, dict[str, Any]]:
        """Current live leases: name -> holder (for ``status``)."""

    # -- batch primitives: one statement or transaction for many names where the store can ---
    def _load_many(self, kind: str, names: Sequence[str]) -> dict[str, tuple[str, int]]:
        """name -> (data json, version) for those of ``names`` that exist."""
        rows = {}
        for name in names:
            row = self._load(kind, name)
            if row is not None:
                rows[name] = row
        return rows

    def _try_acquire_many(self, tokens: Mapping[str, str], holder: dict[str, Any],
                          ttl: float) -> dict[str, dict[str, Any] | None]:
        """``_try_acquire`` for each name -> token: name -> None (taken) or the holder."""
        return {name: self._try_acquire(name, token, holder, ttl)
                for name, token in tokens.items()}

    def close(self) -> None:
        """Release connections."""

    def _heartbeat(self) -> Heartbeat:
        """This store's one lease-renewing thread (made on first use)."""
        with _HEARTBEAT_CREATION:
            if self._lease_heartbeat is None:
                self._lease_heartbeat = Heartbeat(self.url or type(self).__name__)
        return self._lease_heartbeat

    # -- the contract ------------------------------------------------------------------------
    @property
    def store_id(self) -> str:
        """A random id made when the store was created: tags provider resources as ours."""
        if self._store_id is None:
            self._store_id = self._meta("store_id", random_hex(16))
        return self._store_id or ""

    def get(self, kind: str, name: str) -> ManagedEntry | None:
        row = self._load(kind, name)
        if row is None:
            return None
        return ManagedEntry.from_row(kind, name, row[0], row[1], store=self)

    def get_or_new(self, kind: str, name: str) -> ManagedEntry:
        """The saved entry, or a fresh unsaved one bound to this store."""
        entry = self.get(kind, name)
        if entry is None:
            entry = ManagedEntry.from_row(kind, name, "{}", 0, store=self)
        return entry

    def save(self, entry: ManagedEntry, *, release: Lock | None = None) -> None:
        """Write ``entry`` over the version it was read at, with what waits in its
        ``save_with`` (over any version); ``release``: then release this lock (in the same
        transaction where the store can; released even if the save fails)."""
        entry.store = self
        data = entry.data_json()
        along, entry._along = entry._along, []
        if release is None and not along:
            entry.version = self._store(entry.kind, entry.name, data, entry.version)
            entry._read_data = data
            return
        failed: list[BaseException] = []
        written: list[ManagedEntry] = []
        rows: list[tuple[str, str, str, int]] = []
        try:
            for other in along:  # one refused by its checks does not stop the entry's save
                try:
                    rows.append(self._row(other, ANY_VERSION))
                    written.append(other)
                except Exception as exc:
                    failed.append(exc)
            rows.append((entry.kind, entry.name, data, entry.version))
            outcomes = self._store_many(rows, release=release)
        finally:
            if release is not None:
                release.release()  # nothing left to do when the store released it with the save
        self._settle([*written, entry], rows, outcomes)
        failed += [o for o in outcomes if isinstance(o, BaseException)]
        if failed:  # the entry's own error first
            raise outcomes[-1] if isinstance(outcomes[-1], BaseException) else failed[0]

    def save_many(self, entries: Sequence[ManagedEntry]) -> None:
        """``save`` for many entries (one transaction where the store can); each keeps its own
        checks: the others are saved, then the first refused one's error is raised."""
        errors: dict[int, BaseException] = {}
        kept: list[int] = []
        rows: list[tuple[str, str, str, int]] = []
        for index, entry in enumerate(entries):
            try:
                rows.append(self._row(entry, entry.version))
                kept.append(index)
            except Exception as exc:
                errors[index] = exc
        if rows:
            outcomes = self._store_many(rows)
            self._settle([entries[i] for i in kept], rows, outcomes)
            errors.update((i, o) for i, o in zip(kept, outcomes) if isinstance(o, BaseException))
        if errors:
            raise errors[min(errors)]

    def _row(self, entry: ManagedEntry, expected: int) -> tuple[str, str, str, int]:
        """What ``_store_many`` writes of ``entry``, checked and stamped."""
        entry._check_saveable()
        entry.store, entry.updated_at = self, time.time()
        return entry.kind, entry.name, entry.data_json(), expected

    @staticmethod
    def _settle(entries: Sequence[ManagedEntry], rows: Sequence[tuple[str, str, str, int]],
                outcomes: Sequence["int | BaseException"]) -> None:
        """Each written entry takes its new version and the data it was written with."""
        for entry, row, outcome in zip(entries, rows, outcomes):
            if not isinstance(outcome, BaseException):
                entry.version, entry._read_data = outcome, row[2]

    def _store_many(self, rows: Sequence[tuple[str, str, str, int]], *,
                    release: Lock | None = None) -> list["int | BaseException"]:
        """``_store`` of each (kind, name, data, expected version or ``ANY_VERSION``): its new
        version or its error. Stores that can write them in one transaction (or round trip)
        override it, releasing ``release`` in it too and then calling ``release._forget()``;
        here the caller releases it afterwards."""
        outcomes: list[int | BaseException] = []
        for row in rows:
            try:
                outcomes.append(self._store(*row))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def delete(self, kind: str, name: str) -> None:
        self._remove(kind, name)

    def rename(self, entry: ManagedEntry, old_name: str) -> None:
        """Save ``entry`` (under its new name) and delete ``old_name`` of its kind, in one
        transaction where the store can (``_store_renamed``): a ``state mv`` stopped between
        the two must not leave both entries recording one resource (the next scale-down would
        destroy it)."""
        entry._check_saveable()
        entry.store, entry.updated_at = self, time.time()
        data = entry.data_json()
        entry.version = self._store_renamed(entry.kind, entry.name, data, entry.version,
                                            old_name)
        entry._read_data = data

    def _store_renamed(self, kind: str, name: str, data: str, expected_version: int,
                       old_name: str) -> int:
        """``_store``, then ``old_name`` removed; stores that can override it with one
        transaction."""
        version = self._store(kind, name, data, expected_version)
        self._remove(kind, old_name)
        return version

    def list(self, kind: str = "machine") -> list[ManagedEntry]:
        return [ManagedEntry.from_row(kind, name, data, version, store=self)
                for name, data, version in self._names(kind)]

    def lock(self, name: str, ttl: float = DEFAULT_LOCK_TTL, *, wait: float = 0.0,
             holder: dict[str, Any] | None = None, poll: float = 0.1) -> Lock:
        """Take the lease on ``name``; wait up to ``wait`` seconds, then raise ``StateLocked``
        naming the holder. Use as a context manager."""
        token = random_hex()
        info = dict(holder or holder_info())
        deadline = time.monotonic() + wait
        while True:
            current = self._try_acquire(name, token, info, ttl)
            if current is None:
                return Lock(self, name, token, ttl, info)
            if time.monotonic() >= deadline:
                raise StateLocked(name, current)
            time.sleep(poll)

    def delete_many(self, kind: str, names: Sequence[str]) -> None:
        """``delete`` for many names (one transaction where the store can)."""
        self._remove_many(kind, list(names))

    def _remove_many(self, kind: str, names: Sequence[str]) -> None:
        for name in names:
            self._remove(kind, name)

    def get_many(self, kind: str, names: Sequence[str]) -> dict[str, ManagedEntry]:
        """The entries of ``names`` (a fresh unsaved one for each absent name), in few queries."""
        rows = self._load_many(kind, list(names))
        return {name: ManagedEntry.from_row(kind, name, *rows.get(name, ("{}", 0)), store=self)
                for name in names}

    def lock_many(self, names: Sequence[str], ttl: float = DEFAULT_LOCK_TTL, *,
                  wait: float = 0.0, holder: dict[str, Any] | None = None, poll: float = 0.1
                  ) -> tuple[dict[str, Lock], dict[str, StateLocked]]:
        """``lock`` for many names in few transactions: (name -> held lock, name -> the
        ``StateLocked`` of each name still held by someone else after ``wait`` seconds)."""
        info = dict(holder or holder_info())
        deadline = time.monotonic() + wait
        tokens = {name: random_hex() for name in names}
        locks: dict[str, Lock] = {}
        while True:
            refused = {}
            for name, current in self._try_acquire_many(tokens, info, ttl).items():
                if current is None:
                    locks[name] = Lock(self, name, tokens[name], ttl, info)
                else:
                    refused[name] = current
            tokens = {name: tokens[name] for name in refused}
            if not tokens or time.monotonic() >= deadline:
                return locks, {name: StateLocked(name, h) for name, h in refused.items()}
            time.sleep(poll)

    def iter_entries(self, kind: str = "machine") -> Iterator[ManagedEntry]:
        yield from self.list(kind)

    # -- work claims: an optional capability -------------------------------------------------
    # Runners sharing a store can split one operation's machines between them (PostgreSQL;
    # the algorithm is ``provisioning.cluster.claims``). Stores that cannot leave ``supports_claims``
    # False: the provisioner then runs every machine itself, per-machine locks keeping
    # concurrent runners safe, and never calls the methods below.

    #: True when the store implements the claim methods below
    supports_claims: ClassVar[bool] = False

    def _no_claims(self) -> UnsupportedOperation:
        return UnsupportedOperation(f"{type(self).__name__} cannot split work between runners; "
                                    "use a PostgreSQL state store (--state postgresql://...)")

    def join_run(self, run_key: str, operation: str, names: Sequence[str],
                 fresh_within: float) -> int:
        """The generation of ``run_key`` to work on: the unfinished one touched within
        ``fresh_within`` seconds, else a new one with every name pending."""
        raise self._no_claims()

    def claim_work(self, run_key: str, generation: int, token: str, holder: dict[str, Any],
                   ttl: float, count: int) -> "builtins.list[str]":
        """Claim up to ``count`` pending (else abandoned) names of the run; [] when nothing is
        claimable."""
        raise self._no_claims()

    def finish_work(self, run_key: str, generation: int, token: str,
                    outcomes: Mapping[str, str | None]) -> set[str]:
        """Mark our claims done (error None) or failed; returns the names still ours."""
        raise self._no_claims()

    def release_work(self, run_key: str, generation: int, token: str,
                     names: Sequence[str]) -> None:
        """Give back claims this runner will not start: pending again for the others."""
        raise self._no_claims()

    def run_left(self, run_key: str, generation: int, upto: int | None = None) -> WorkLeft:
        """What is left of the run: pending and open names, runners holding claims. With
        ``upto``, among the first ``upto`` open names in claim order only (a count below it is
        exact, one equal to it means at least): its cost then does not grow with the run."""
        raise self._no_claims()

    def watch_run(self, run_key: str, generation: int, wake: Callable[[], None],
                  stop: threading.Event) -> None:
        """Call ``wake()`` whenever another runner finishes or gives back work of the run,
        until ``stop`` is set (in the caller's thread). Optional: by default it returns at
        once, and waiting runners find others' progress by polling alone."""
        return None

    def renew_claims(self, run_key: str, generation: int, token: str, ttl: float) -> None:
        """Heartbeat of one runner in one run: its claims live on, the run stays joinable."""
        raise self._no_claims()

    def run_progress(self, run_key: str, generation: int) -> dict[str, dict[str, Any]]:
        """name -> {state, holder, error, live} for one run."""
        raise self._no_claims()

    def run_outcomes(self, run_key: str, generation: int,
                     token: str) -> dict[str, dict[str, Any]]:
        """Like ``run_progress``, only the machines done or failed by runners other than
        ``token`` (final outcomes, reported before the run is over)."""
        raise self._no_claims()

    def runs(self) -> "builtins.list[dict[str, Any]]":
        """Unfinished runs with their counts and who claims what (for ``status``); none here."""
        return []

    def __enter__(self) -> "ManagedEntryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
