"""Helpers for the safety tests: run ``converge`` in this process (fast enough for hundreds of
bad inputs) and list every file under a directory to prove nothing was created or changed."""

from __future__ import annotations

import contextlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def converge_here(*args: str, cwd: str | os.PathLike, env: dict | None = None) -> Run:
    """``converge ARGS`` run in-process in ``cwd`` (same code path as the console script)."""
    from provisioning.cli import common
    from provisioning.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    os.environ.pop("PROVISIONING_STATE", None)
    os.environ.update(env or {})
    common._current = None
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        common._current = None
    return Run(code, out.getvalue(), err.getvalue())


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
