"""Helpers for the safety tests: run ``converge`` in this process (fast enough for hundreds of
bad inputs) and list every file under a directory to prove nothing was created or changed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.cli_runner import converge_in_process

converge_here = converge_in_process


def snapshot(*roots: str | os.PathLike) -> dict[str, tuple]:
    """Every path under the roots with its type and mode, and for files their size and mtime
    (symlinks not followed)."""
    found: dict[str, tuple] = {}
    for root in roots:
        root = Path(root)
        if not os.path.lexists(root):
            found[str(root)] = ("absent",)
            continue
        for path in [root, *root.rglob("*")]:
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):  # its listing is compared; SQLite's transient
                found[str(path)] = (info.st_mode,)  # -wal/-shm files touch its mtime
            else:
                found[str(path)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found
