"""MemoryStore: entries and locks in this process only (tests, one-off scripts)."""

from __future__ import annotations

import threading
import time
from typing import Any

from provisioning.errors import StateConflict
from provisioning.faults import checkpoint
from provisioning.store.base import ANY_VERSION, ManagedEntryStore, holder_is_dead

__all__ = ["MemoryStore"]


class MemoryStore(ManagedEntryStore):
    def __init__(self) -> None:
        self.url = "memory:"
        self._entries: dict[tuple[str, str], tuple[str, int]] = {}
        self._leases: dict[str, tuple[str, dict[str, Any], float]] = {}
        self._metadata: dict[str, str] = {}
        self._mutex = threading.RLock()

    def _load(self, kind, name):
        with self._mutex:
            return self._entries.get((kind, name))

    def _store(self, kind, name, data, expected_version):
        with self._mutex:
            current = self._entries.get((kind, name))
            version = current[1] if current else 0
            if expected_version not in (version, ANY_VERSION):
                raise StateConflict(f"{kind} {name!r} changed since it was read (version "
                                    f"{version}, expected {expected_version}); re-read and retry")
            checkpoint("mid_save", machine=name)  # fault tests: fail before the write lands
            self._entries[(kind, name)] = (data, version + 1)
            return version + 1

    def _remove(self, kind, name):
        with self._mutex:
            self._entries.pop((kind, name), None)

    def kinds(self) -> list[str]:
        """Every kind that has entries (for export)."""
        with self._mutex:
            return sorted({k for (k, _) in self._entries})

    def _names(self, kind):
        with self._mutex:
            return sorted((n, d, v) for (k, n), (d, v) in self._entries.items() if k == kind)

    def _try_acquire(self, name, token, holder, ttl):
        with self._mutex:
            now = time.time()
            current = self._leases.get(name)
            if current and current[2] > now and not holder_is_dead(current[1]):
                return current[1]
            self._leases[name] = (token, holder, now + ttl)
            return None

    def _renew(self, name, token, ttl):
        with self._mutex:
            current = self._leases.get(name)
            if current and current[0] == token:
                self._leases[name] = (token, current[1], time.time() + ttl)

    def _release(self, name, token):
        with self._mutex:
            if self._leases.get(name, ("",))[0] == token:
                del self._leases[name]

    def _meta(self, key, default=None):
        with self._mutex:
            if key not in self._metadata and default is not None:
                self._metadata[key] = default
            return self._metadata.get(key)

    def locks(self):
        with self._mutex:
            now = time.time()
            return {n: h for n, (_, h, exp) in self._leases.items() if exp > now}
