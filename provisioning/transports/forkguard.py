"""Keeps a child process from being started while this process has a file open for writing.

A child started by fork holds a copy of every descriptor until it execs (close-on-exec closes
them only then). If another thread of ours then execs a file it has just written (a script
step on a ``fake:`` machine), the kernel refuses with ``ETXTBSY`` (Text file busy) for as long
as any such child still holds the written file open. Writers share the guard; starting a child
takes it alone, and a waiting start goes before new writers so a stream of writes cannot
starve it."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["ForkGuard", "FORK_GUARD"]


class ForkGuard:
    """A shared (writing) / exclusive (starting a child) lock."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._writers = 0
        self._starting = False
        self._waiting_starts = 0

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Held while a file of ours is open for writing."""
        with self._changed:
            while self._starting or self._waiting_starts:
                self._changed.wait()
            self._writers += 1
        try:
            yield
        finally:
            with self._changed:
                self._writers -= 1
                self._changed.notify_all()

    @contextmanager
    def starting(self) -> Iterator[None]:
        """Held while a child is forked and until it has exec'd (``Popen`` returns then)."""
        with self._changed:
            self._waiting_starts += 1
            try:
                while self._starting or self._writers:
                    self._changed.wait()
            finally:
                self._waiting_starts -= 1
            self._starting = True
        try:
            yield
        finally:
            with self._changed:
                self._starting = False
                self._changed.notify_all()

    def can_start(self) -> bool:
        """Whether a child could be started right now (no file is being written)."""
        with self._changed:
            return not (self._starting or self._writers)


#: the one guard of this process: every writer and every child start of the local transport
FORK_GUARD = ForkGuard()
