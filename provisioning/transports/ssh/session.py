"""ShellSession: one long-lived remote ``/bin/sh`` per machine, running many commands.

Why: every ``execute`` over SSH opens a channel, and sshd forks a session and starts the user's
login shell for it. For a run of small commands (steps convergence, checks) that start-up is
most of the cost. A session starts one shell once and feeds it commands over the same channel.

How the framing works: the shell reads a tiny driver function, then one line per command,
``__pv ID 'quoted command'``. The function runs the command in a subshell with stdin from
``/dev/null`` (so a command that reads stdin cannot eat the lines that follow), then prints a
marker holding a random per-session token, the command's id and its exit status to stdout, and
the token and id to stderr. Output before the markers belongs to the command, so every command
keeps its own exit status, stdout and stderr, including output with no trailing newline and
arbitrary bytes. Each command runs in its own subshell: ``cd``, variables, ``exit`` and syntax
errors do not leak into the next one.

A command past its timeout kills the whole session (the shell is a session leader on the far
side, so its process group goes with it); the next command starts a fresh shell. A session is
used by one command at a time (a lock); run sessions of many machines in parallel.

Commands run under ``/bin/sh`` (not the login shell); stdin input and ptys are not supported
here: use ``Transport.execute`` for those.
"""

from __future__ import annotations

import codecs
import re
import secrets
import select
import shlex
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from provisioning.errors import CommandResult, CommandTimeout, TransportError
from provisioning.inputs.records import record
from provisioning.transports.base import DEFAULT_COMMAND_TIMEOUT, StreamCallback

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

__all__ = ["ShellSession", "SessionCommand"]

#: how long a new shell may take to say it is ready (seconds)
START_TIMEOUT = 30.0

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The driver the remote shell reads once. Names start with __pv to stay out of the way.
# __pv ID COMMAND [STOP]: run COMMAND in a subshell, stdin /dev/null, then the two markers.
# With STOP=1 a command after a failed one in the same batch is skipped (status "skip").
_DRIVER = r"""__pv_t=%(token)s
__pv_f=0
__pv() {
  __pv_i=$1; __pv_c=$2; __pv_x=${3:-0}; shift $#
  if [ "$__pv_x" = 1 ] && [ "$__pv_f" != 0 ]; then
    printf '%%s:%%s:skip\n' "$__pv_t" "$__pv_i"; printf '%%s:%%s\n' "$__pv_t" "$__pv_i" >&2
    return 0
  fi
  ( eval "$__pv_c" ) </dev/null
  __pv_s=$?
  [ "$__pv_s" = 0 ] || __pv_f=1
  printf '%%s:%%s:%%s\n' "$__pv_t" "$__pv_i" "$__pv_s"
  printf '%%s:%%s\n' "$__pv_t" "$__pv_i" >&2
}
printf '%%s:ready:%%s\n' "$__pv_t" "$$"
"""


@record(frozen=True)
class SessionCommand:
    """One command of a batch, with its own options."""

    command: str
    timeout: float | None = None
    env: Mapping[str, str] | None = None
    sudo: bool = False


class _Dead(Exception):
    """The channel ended (EOF) before a marker arrived."""


class ShellSession:
    """A persistent shell on one machine, fed commands one after another.

    ``open_channel`` returns a fresh, unused paramiko session channel on the machine's
    connection; ``kill_group`` (optional) runs ``kill -KILL -- -PID`` over a separate channel
    so a timed-out command dies with its shell instead of lingering on the machine.
    """

    def __init__(
        self,
        open_channel: Callable[[], "paramiko.Channel"],
        *,
        host: str = "?",
        machine: str | None = None,
        kill_group: Callable[[int], None] | None = None,
        default_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        shell: str = "/bin/sh",
        sudo_prefix: str = "sudo -n --",
    ) -> None:
        self._open_channel = open_channel
        self._kill_group = kill_group
        self.host = host
        self.machine = machine
        self.default_timeout = default_timeout
        self.shell = shell
        self.sudo_prefix = sudo_prefix
        self._lock = threading.Lock()
        self._chan: "paramiko.Channel | None" = None
        self._pid: int | None = None
        self._ready = False
        self._token = b""
        self._out = bytearray()
        self._err = bytearray()
        self._next_id = 0
        self._closed = False
        #: how many shells this session has started (a timeout or a dead shell starts another)
        self.starts = 0

    # -- public ----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The remote shell's PID once it said it is ready (None before or after it died)."""
        return self._pid

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        sudo: bool = False,
        stream: StreamCallback | None = None,
    ) -> CommandResult:
        """Run one command; never raises on a non-zero exit. ``CommandTimeout`` past
        ``timeout`` (the session then starts a new shell for the next command)."""
        return self.run_many([SessionCommand(command, timeout, env, sudo)], stream=stream)[0]

    def run_many(
        self,
        commands: Iterable[str | SessionCommand],
        *,
        stop_on_error: bool = False,
        timeout: float | None = None,
        stream: StreamCallback | None = None,
    ) -> list[CommandResult]:
        """Run commands in order in one round trip (all are sent at once; the shell still runs
        them one after another). With ``stop_on_error`` the commands after the first failure
        are not run and not returned. ``timeout`` is the default per command; each command's
        clock starts when the one before it finished."""
        items = [c if isinstance(c, SessionCommand) else SessionCommand(c) for c in commands]
        if not items:
            return []
        with self._lock:
            if self._closed:
                raise TransportError("shell session was closed; open a new one", host=self.host,
                                     machine=self.machine)
            self._ensure_started()
            ids = []
            lines = []
            for item in items:
                self._next_id += 1
                ids.append(self._next_id)
                text = self._wrap(item)
                lines.append(f"__pv {self._next_id} {shlex.quote(text)}"
                             f"{' 1' if stop_on_error else ''}\n")
            if stop_on_error:
                lines.insert(0, "__pv_f=0\n")
            self._send("".join(lines).encode())
            results: list[CommandResult] = []
            for index, (cid, item) in enumerate(zip(ids, items)):
                if self._chan is None:
                    raise TransportError(
                        f"shell session on {self.host} ended during command {index} of "
                        f"{len(items)} ({items[index - 1].command!r}); the rest did not run",
                        host=self.host, machine=self.machine)
                limit = item.timeout if item.timeout is not None else timeout
                limit = self.default_timeout if limit is None else limit
                result = self._collect(cid, item.command, limit, stream)
                if result is None:  # skipped after an earlier failure
                    continue
                results.append(result)
            return results

    def close(self) -> None:
        """End the remote shell and refuse further use."""
        with self._lock:
            self._closed = True
            self._drop()

    def __enter__(self) -> "ShellSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shell lifecycle -------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._chan is not None and not self._chan.closed:
            return
        self._drop()
        try:
            chan = self._open_channel()
            chan.exec_command(f"exec {self.shell}")
        except TransportError:
            raise
        except Exception as exc:  # paramiko's SSHException, socket errors
            raise TransportError(f"cannot start a shell session on {self.host}: {exc}",
                                 host=self.host, machine=self.machine) from exc
        self._chan = chan
        self._chan.fileno()  # makes a pipe that select() sees for stdout and stderr data
        self._token = secrets.token_hex(16).encode()
        self._out.clear()
        self._err.clear()
        self._pid = None
        self._ready = False
        self.starts += 1
        # The ready line is read lazily, ahead of the first command's output: no extra round trip.
        self._send((_DRIVER % {"token": self._token.decode()}).encode())

    def _drop(self) -> None:
        chan, self._chan = self._chan, None
        self._pid = None
        self._ready = False
        if chan is not None:
            try:
                chan.close()
            except Exception:  # already gone: nothing to clean up
                pass

    def _kill(self) -> None:
        """Kill the shell and everything it started, then forget it."""
        pid = self._pid
        self._drop()
        if pid is not None and self._kill_group is not None:
            try:
                self._kill_group(pid)
            except Exception:  # the connection may be gone too; the channel is closed anyway
                pass

    def _send(self, data: bytes) -> None:
        try:
            assert self._chan is not None  # _start opened it
            self._chan.sendall(data)
        except Exception as exc:
            self._drop()
            raise TransportError(f"shell session on {self.host} broke while sending: {exc}",
                                 host=self.host, machine=self.machine) from exc

    # -- reading ---------------------------------------------------------------------------
    def _wrap(self, item: SessionCommand) -> str:
        text = item.command
        if item.env:
            exports = []
            for key, value in item.env.items():
                if not _ENV_NAME.match(key):
                    raise ValueError(f"environment variable name {key!r} is not a valid shell name")
                exports.append(f"export {key}={shlex.quote(str(value))}; ")
            text = "".join(exports) + text
        if item.sudo:
            text = f"{self.sudo_prefix} sh -c {shlex.quote(text)}"
        return text

    def _pump(self, deadline: float) -> bool:
        """Move whatever arrived into the buffers; False when the deadline passed first."""
        chan = self._chan
        assert chan is not None  # _start opened it
        while True:
            got = False
            if chan.recv_ready():
                self._out += chan.recv(1 << 20)
                got = True
            if chan.recv_stderr_ready():
                self._err += chan.recv_stderr(1 << 20)
                got = True
            if got:
                return True
            if chan.exit_status_ready() or chan.closed or chan.eof_received:
                if not chan.recv_ready() and not chan.recv_stderr_ready():
                    raise _Dead()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([chan], [], [], min(left, 5.0))
            # drain the wake-up pipe's state: paramiko resets it when buffers empty on recv

    def _read_ready(self, deadline: float) -> None:
        marker = self._token + b":ready:"
        while True:
            at = self._out.find(marker)
            if at >= 0:
                end = self._out.find(b"\n", at)
                if end >= 0:
                    self._pid = int(self._out[at + len(marker):end])
                    del self._out[:end + 1]
                    self._ready = True
                    return
            if not self._pump(deadline):
                raise TransportError(f"shell session on {self.host} did not start within "
                                     f"{START_TIMEOUT:g} s; check that /bin/sh runs there",
                                     host=self.host, machine=self.machine)

    def _collect(self, cid: int, command: str, limit: float,
                 stream: StreamCallback | None) -> CommandResult | None:
        started = time.monotonic()
        out_mark = self._token + b":%d:" % cid
        err_mark = self._token + b":%d\n" % cid
        out_done = err_done = None
        status: str | None = None
        decoders = {name: codecs.getincrementaldecoder("utf-8")("replace")
                    for name in ("stdout", "stderr")} if stream else {}
        sent = {"stdout": 0, "stderr": 0}
        try:
            if not self._ready:
                self._read_ready(time.monotonic() + START_TIMEOUT)
                started = time.monotonic()
            deadline = started + limit
            while True:
                if out_done is None:
                    at = self._out.find(out_mark)
                    if at >= 0:
                        end = self._out.find(b"\n", at)
                        if end >= 0:
                            out_done = at
                            status = self._out[at + len(out_mark):end].decode()
                            out_cut = end + 1
                if err_done is None:
                    at = self._err.find(err_mark)
                    if at >= 0:
                        err_done = at
                if stream is not None:
                    self._stream(stream, decoders, sent, out_done, err_done, len(out_mark))
                if out_done is not None and err_done is not None:
                    break
                if not self._pump(deadline):
                    stdout = bytes(self._out[:out_done] if out_done is not None else self._out)
                    stderr = bytes(self._err[:err_done] if err_done is not None else self._err)
                    self._kill()
                    raise CommandTimeout(command, limit, host=self.host, machine=self.machine,
                                         stdout=stdout.decode(errors="replace"),
                                         stderr=stderr.decode(errors="replace"))
        except _Dead:
            # The shell itself ended (the command killed it, or the connection dropped). With an
            # exit status, that is the command's outcome; the next command starts a new shell.
            chan, was_ready = self._chan, self._ready
            code = chan.recv_exit_status() if chan is not None and chan.exit_status_ready() else -1
            stdout, stderr = bytes(self._out), bytes(self._err)
            self._drop()
            if not was_ready:
                raise TransportError(
                    f"shell session on {self.host} ended before it was ready (exit status "
                    f"{code}): {stderr.decode(errors='replace')[-500:]}",
                    host=self.host, machine=self.machine) from None
            if code < 0:  # killed by a signal (sshd sends no status then), like ssh's 255
                code = 255
            return CommandResult(command=command, exit_status=code,
                                 stdout=stdout.decode(errors="replace"),
                                 stderr=stderr.decode(errors="replace"), host=self.host,
                                 duration=time.monotonic() - started)
        stdout = bytes(self._out[:out_done])
        del self._out[:out_cut]
        stderr = bytes(self._err[:err_done])
        del self._err[:err_done + len(err_mark)]
        if status == "skip":
            return None
        return CommandResult(command=command, exit_status=int(status or 0),
                             stdout=stdout.decode(errors="replace"),
                             stderr=stderr.decode(errors="replace"), host=self.host,
                             duration=time.monotonic() - started)

    def _stream(self, stream: StreamCallback, decoders: dict, sent: dict,
                out_done: int | None, err_done: int | None, hold: int) -> None:
        """Hand the callback the bytes that surely belong to the command: everything before a
        found marker, or all but the last few bytes (which might be a marker's start)."""
        for name, buf, done in (("stdout", self._out, out_done), ("stderr", self._err, err_done)):
            upto = done if done is not None else max(0, len(buf) - hold)
            if upto > sent[name]:
                text = decoders[name].decode(bytes(buf[sent[name]:upto]), final=done is not None)
                sent[name] = upto
                if text:
                    stream(name, text)

