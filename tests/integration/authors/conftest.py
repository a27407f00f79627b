"""Fixtures for the driver-author tests: one virtual environment per session with this project
installed (editable, its dependencies seen through --system-site-packages), the real ``converge``
console script, and a pseudo-terminal driver for the wizard."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_runner import CONVERGE, cli_env
from tests.cli_runner import converge as run_converge

REPO = Path(__file__).resolve().parents[3]


def run(argv, *, cwd=None, env=None, timeout=300, check=True) -> subprocess.CompletedProcess:
    """Run a command with its output captured; on an unexpected status show all of it."""
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n"
                             f"--- stderr\n{proc.stderr}")
    return proc


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would point a child at another config or state."""
    return cli_env(extra, clean=True)


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def converge(self) -> Path:
        return self.root / "bin" / "converge"

    def pip_install(self, *args: str) -> None:
        run([self.python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--no-build-isolation", *args], env=clean_env(), timeout=600)


@pytest.fixture(scope="session")
def author_venv(tmp_path_factory) -> Venv:
    """A fresh venv with this project installed into it (no network: build tools and the
    project's dependencies come from the system site-packages)."""
    root = tmp_path_factory.mktemp("author-venv") / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", root], timeout=300)
    venv = Venv(root)
    venv.pip_install("--no-deps", "-e", str(REPO))
    return venv


def converge_script() -> str:
    """The real ``converge`` console script of the Python running these tests."""
    if not shutil.which(CONVERGE):
        pytest.fail("the converge console script is not installed: pip install -e .")
    return CONVERGE


@pytest.fixture
def converge():
    """Run the real console script: converge(*args, cwd=...) -> CompletedProcess (a clean
    environment unless ``env`` is given)."""
    converge_script()

    def call(*args, cwd, check=False, env=None, timeout=120):
        return run_converge(*args, cwd=cwd, env=env, clean=env is None, check=check,
                            timeout=timeout)
    return call


# -- a tiny expect over a real pseudo-terminal ---------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """A child process on a pseudo-terminal: ``expect`` text, ``send`` lines."""

    def __init__(self, argv: list[str], *, cwd: str, env: dict[str, str]) -> None:
        import pty

        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal
            try:
                os.chdir(cwd)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.seen = ""           # everything read so far (ANSI codes removed)
        self._pos = 0            # how far expect has consumed
        self.status: int | None = None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:          # EIO: the child closed the terminal
            data = b""
        if not data:
            raise EOFError
        self.seen += _ANSI.sub("", data.decode(errors="replace").replace("\r", ""))
        return True

    def expect(self, text: str, timeout: float = 30) -> str:
        """Wait until ``text`` appears after what earlier expects consumed; return what came
        before it."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.seen.find(text, self._pos)
            if index >= 0:
                before = self.seen[self._pos:index]
                self._pos = index + len(text)
                return before
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; the terminal shows:\n"
                                     f"{self.seen[-2000:]}")
            try:
                self._read(min(remaining, 0.5))
            except EOFError:
                raise AssertionError(f"the program ended before showing {text!r}:\n"
                                     f"{self.seen[-2000:]}") from None

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            try:
                self._read(0.1)
            except EOFError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the program did not exit; it shows:\n{self.seen[-2000:]}")
        return self.status

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        os.close(self.fd)


@pytest.fixture
def terminal():
    """terminal(argv, cwd=..., env=...) -> Terminal; killed (by its PID) after the test."""
    opened: list[Terminal] = []

    def start(argv, *, cwd, env=None) -> Terminal:
        term = Terminal([str(a) for a in argv], cwd=str(cwd), env=env or clean_env(TERM="xterm"))
        opened.append(term)
        return term
    yield start
    for term in opened:
        term.close()
