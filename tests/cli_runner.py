"""The one way tests run the ``converge`` command.

- ``converge(*args, cwd=...)``: the real console script in a child process, as a user runs it;
  returns the finished ``CompletedProcess`` (text output captured).
- ``start_converge(*args, cwd=...)``: the same, left running (a ``Popen`` with text pipes), for
  tests that run several at once or act while it runs.
- ``converge_in_process(*args, cwd=...)``: the same entry point (``provisioning.cli.main.main``)
  in this process, for tests that need no process of their own.

Every child sees this environment without ``PROVISIONING_STATE`` (a developer's own state must
never leak into a test); ``clean=True`` also drops every ``PROVISIONING_*``/``PYTEST_*``
variable and the virtualenv markers, for tests of a freshly installed package.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["CONVERGE", "Run", "cli_env", "converge", "converge_in_process", "start_converge"]

#: the console script installed beside this interpreter (not a shim found on PATH)
CONVERGE = (os.path.join(os.path.dirname(sys.executable), "converge")
            if os.path.exists(os.path.join(os.path.dirname(sys.executable), "converge"))
            else shutil.which("converge") or "converge")


def cli_env(env: dict[str, str] | None = None, *, clean: bool = False,
            unset: Iterable[str] = ()) -> dict[str, str]:
    """The environment a ``converge`` child gets: ours without the state override (and, with
    ``clean``, without anything pointing it at another config, state or virtualenv), minus
    ``unset``, plus ``env``."""
    if clean:
        out = {k: v for k, v in os.environ.items()
               if not k.startswith(("PROVISIONING_", "PYTEST_", "PIP_REQUIRE"))
               and k != "VIRTUAL_ENV"}
    else:
        out = {k: v for k, v in os.environ.items() if k != "PROVISIONING_STATE"}
    for name in unset:
        out.pop(name, None)
    out.update(env or {})
    return out


def start_converge(*args: str, cwd: str | os.PathLike, env: dict[str, str] | None = None,
                   clean: bool = False, unset: Iterable[str] = (),
                   stdin: int | None = subprocess.DEVNULL, stdout: Any = subprocess.PIPE,
                   stderr: Any = subprocess.PIPE) -> subprocess.Popen:
    """``converge ARGS`` started in ``cwd``, still running; read it with ``communicate`` (or
    from the files given as ``stdout``/``stderr``)."""
    return subprocess.Popen([CONVERGE, *map(str, args)], cwd=cwd,
                            env=cli_env(env, clean=clean, unset=unset), stdin=stdin,
                            stdout=stdout, stderr=stderr, text=True)


def converge(*args: str, cwd: str | os.PathLike, env: dict[str, str] | None = None,
             clean: bool = False, unset: Iterable[str] = (), input: str | None = None,
             timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    """``converge ARGS`` run to its end in ``cwd``; with ``check``, a failure shows all of its
    output."""
    proc = subprocess.run([CONVERGE, *map(str, args)], cwd=cwd,
                          env=cli_env(env, clean=clean, unset=unset), capture_output=True,
                          text=True, timeout=timeout, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"converge {' '.join(args)} exited {proc.returncode}\n--- stdout\n"
                             f"{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


@dataclass
class Run:
    """What ``converge_in_process`` saw: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def converge_in_process(*args: str, cwd: str | os.PathLike,
                        env: dict[str, str] | None = None) -> Run:
    """``converge ARGS`` run in this process in ``cwd``, its environment and working directory
    restored afterwards."""
    from provisioning.cli import common
    from provisioning.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    os.environ.clear()
    os.environ.update(cli_env(env))
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
