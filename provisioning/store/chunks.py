"""Machines locked and loaded a chunk at a time, ahead of the workers that act on them.

Taking each machine's lock and reading its entry one by one cost a thousand machines some
thousands of store transactions. ``ChunkedHold`` takes the locks of the next ``size`` machines
in one transaction and reads their entries in one query, when the first worker reaches that
chunk; the other workers go on with the machines already held, so a chunk is no barrier. A
``prepare`` hook sees each chunk once it is held: ``converge up`` sends the chunk's machines that
need creating to the driver's batch allocate there.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Sequence

from provisioning.spec import MachineSpec

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.store.base import Lock, ManagedEntryStore

__all__ = ["ChunkedHold", "CHUNK"]

#: machines locked and loaded together
CHUNK = 100

#: called with a held chunk's specs; returns name -> error for machines it failed
Prepare = Callable[[Sequence[MachineSpec]], "dict[str, BaseException]"]


class ChunkedHold:
    """The specs of ``names`` (in order), each under its lock unless ``locking`` is False."""

    def __init__(self, store: "ManagedEntryStore", names: Sequence[str], *, ttl: float,
                 wait: float, locking: bool = True, size: int = CHUNK,
                 prepare: Prepare | None = None) -> None:
        self.store = store
        self.names = list(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.ttl, self.wait, self.locking = ttl, wait, locking
        self.size = max(1, size)
        self.prepare = prepare
        self._mutex = threading.Lock()
        self._ready: dict[int, threading.Event] = {}
        self._specs: dict[str, MachineSpec] = {}
        self._locks: dict[str, "Lock"] = {}
        self._errors: dict[str, BaseException] = {}

    def take(self, name: str) -> tuple[MachineSpec | None, "Lock | None", BaseException | None]:
        """(spec, held lock, error) of one machine, fetching its chunk if no worker has yet.
        The spec is None when its lock was refused (error: ``StateLocked``); error is also set
        when ``prepare`` failed the machine. The caller saves the spec and releases the lock."""
        self._ensure(self.index[name] // self.size)
        with self._mutex:
            return self._specs.pop(name, None), self._locks.pop(name, None), \
                self._errors.pop(name, None)

    def prefetch(self) -> None:
        """Lock and read every chunk now, ahead of the workers (a runner sharing a run does this
        for the batch it claimed next while its workers are still busy with the current one)."""
        for chunk in range(-(-len(self.names) // self.size)):
            self._ensure(chunk)

    def _ensure(self, chunk: int) -> None:
        """Fetch chunk number ``chunk`` unless a worker did or is doing it (then wait for it)."""
        with self._mutex:
            ready = self._ready.get(chunk)
            mine = ready is None
            if mine:
                ready = self._ready[chunk] = threading.Event()
        assert ready is not None  # made above by whichever thread came first
        if mine:  # fetched outside the mutex: workers on held machines never wait for it
            try:
                self._fetch(self.names[chunk * self.size:(chunk + 1) * self.size])
            finally:
                ready.set()
        else:
            ready.wait()

    def _fetch(self, names: list[str]) -> None:
        locks: dict[str, "Lock"] = {}
        errors: dict[str, BaseException] = {}
        specs: dict[str, MachineSpec] = {}
        try:
            held = names
            if self.locking:
                locks, refused = self.store.lock_many(names, self.ttl, wait=self.wait)
                errors.update(refused)
                held = [n for n in names if n in locks]
            specs = self.store.get_many("machine", held)  # type: ignore[assignment]
            if self.prepare is not None and held:
                errors.update(self.prepare([specs[n] for n in held]))
        except Exception as exc:  # the whole chunk failed: each of its machines says why
            errors.update({n: exc for n in names if n not in errors})
        with self._mutex:
            self._locks.update(locks)
            self._specs.update(specs)
            self._errors.update(errors)

    def close(self) -> None:
        """Release the locks no worker took (machines cancelled under fail-fast)."""
        with self._mutex:
            locks, self._locks = list(self._locks.values()), {}
        for lock in locks:
            lock.release()
