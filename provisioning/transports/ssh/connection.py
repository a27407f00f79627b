"""SSHConnection: one paramiko connection per machine, and the commands that run over it.

- **One connection**, opened lazily by ``_client()`` (under a lock), reused by every command and
  transfer from any thread; re-opened once if the server dropped it; refused after
  ``disconnect()``.
- **Host keys are verified, never blindly added**: the key pinned in ``host_key`` (an OpenSSH
  public line) or found in a ``known_hosts`` file must match, else ``HostKeyMismatch``. With
  neither, the first key seen goes to ``on_new_host_key(line)`` (the caller records it in the
  machine's reference); without that callback, connecting is refused. Nothing writes any
  known_hosts file.
- **Every wait has a deadline**: ``connect_timeout`` (TCP, banner, auth), ``command_timeout``
  (per command; past it the remote process group is killed, ``CommandTimeout`` is raised and the
  connection stays usable).

Files, directories and forwarding are added by ``SSHTransport`` (transport.py).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import re
import secrets
import select
import shlex
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Mapping

from provisioning.errors import (
    AuthenticationError,
    CommandResult,
    CommandTimeout,
    ConfigError,
    ConnectError,
    HostKeyMismatch,
    TransferError,
    TransportError,
)
from provisioning.transports.base import DEFAULT_COMMAND_TIMEOUT, SSHLogin, StreamCallback, Transport
from provisioning.transports.ssh.errors import (
    CommandDeadline,
    describe_error,
    host_key_line,
    map_ssh_errors,
    mismatch_message,
)
from provisioning.transports.ssh.session import SessionCommand, ShellSession
from provisioning.transports.ssh.wire import (
    CHUNK,
    MAX_PACKET_SIZE,
    WINDOW_SIZE,
    ChannelWriter,
    fast_cipher_transport,
    paramiko_key,
    quick_ack,
    send_eof,
)

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

    from provisioning.keys import PrivateKey

__all__ = ["SSHConnection", "InputSource"]

#: exported to each remote command, so a timed-out command's processes can be found and killed
_MARK = "PROVISIONING_COMMAND_ID"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: what ``input`` may be: bytes, text, a binary file, or a function writing to the remote stdin
InputSource = bytes | str | BinaryIO | Callable[[BinaryIO], None] | None


class _HostKeyPolicy:
    """paramiko calls this when the server's key is not among the known ones."""

    def __init__(self, transport: "SSHConnection") -> None:
        self.transport = transport

    def missing_host_key(self, client: Any, hostname: str, key: "paramiko.PKey") -> None:
        t = self.transport
        seen = host_key_line(key)
        if t.pinned_host_key:
            raise HostKeyMismatch(mismatch_message(t.host, t.pinned_host_key, seen), host=t.host,
                                  expected=t.pinned_host_key, seen=seen, machine=t.machine)
        if t.known_hosts:
            raise HostKeyMismatch(
                f"{t.host} is not in the known_hosts file {t.known_hosts} (it offers "
                f"{seen.split()[0]}); add '{hostname} {seen}' there after checking it out of band",
                host=t.host, seen=seen, machine=t.machine)
        if t.on_new_host_key is None:
            raise HostKeyMismatch(
                f"no host key is pinned for {t.host} and no known_hosts file is set; pin its key "
                "(host_key) or allow recording it on first use", host=t.host, seen=seen,
                machine=t.machine)
        t.on_new_host_key(seen)
        t.pinned_host_key = seen



class SSHConnection(Transport):
    """A machine reached over SSH (see the module docstring). ``host`` is the display address
    ``user@host:port``; ``hostname`` and ``port`` are where it connects."""

    def __init__(
        self,
        host: str,
        port: int = 22,
        username: str = "root",
        *,
        private_key: "PrivateKey | None" = None,
        password: str | None = None,
        host_key: str | None = None,
        known_hosts: str | None = None,
        on_new_host_key: Callable[[str], None] | None = None,
        sock_factory: Callable[[float], socket.socket] | None = None,
        gateway: "SSHConnection | None" = None,
        connect_timeout: float = 10.0,
        command_timeout: float = 600.0,
        transfer_timeout: float = 600.0,
        keepalive: float = 15.0,
        use_agent: bool = False,
        machine: str | None = None,
        sudo: bool = False,
        owns_gateway: bool = False,
    ) -> None:
        self.hostname = host
        self.port = int(port)
        self.username = username
        self.host = f"{username}@{host}:{self.port}"
        self.private_key = private_key
        self._password = password
        self.pinned_host_key = " ".join(host_key.split()[:2]) if host_key else None
        self.known_hosts = os.path.expanduser(known_hosts) if known_hosts else None
        self.on_new_host_key = on_new_host_key
        self.sock_factory = sock_factory
        self.gateway = gateway
        self.owns_gateway = owns_gateway
        self.connect_timeout = float(connect_timeout)
        self.command_timeout = float(command_timeout or DEFAULT_COMMAND_TIMEOUT)
        self.transfer_timeout = float(transfer_timeout)
        self.keepalive = float(keepalive)
        self.use_agent = use_agent
        self.machine = machine
        #: file operations (writes, reads, sha256) go through ``sudo -n`` when not root
        self.sudo = sudo
        self._lock = threading.RLock()
        self._ssh: "paramiko.SSHClient | None" = None
        self._pkey: "paramiko.PKey | None" = None
        self._forwards: dict[tuple[str, int], int] = {}
        self._closed = False
        self._shell: "ShellSession | None" = None  # see shell_session()

    def __repr__(self) -> str:
        return f"<SSHTransport {self.host}{' via ' + self.gateway.host if self.gateway else ''}>"

    # -- connection ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"the SSH transport to {self.host} was disconnected; ask the "
                                 "driver for the machine again", host=self.host,
                                 machine=self.machine)

    def _errors(self, phase: str, what: str):
        return map_ssh_errors(self.host, phase=phase, what=what, machine=self.machine)

    def _client(self, *, timeout: float | None = None) -> "paramiko.SSHClient":
        """The connected paramiko client: opened on first use, re-opened if it died."""
        with self._lock:
            self._check_open()
            client = self._ssh
            if client is not None:
                active = client.get_transport()
                if active is not None and active.is_active():
                    return client
                self._drop()
            with self._errors("connect", f"connect to {self.host}"):
                self._ssh = self._connect(self.connect_timeout if timeout is None else timeout)
            return self._ssh

    def connect(self, *, timeout: float | None = None) -> None:
        """Connect and log in now (instead of on first use); raises our typed errors."""
        self._client(timeout=timeout)

    def _open_socket(self, timeout: float) -> Any:
        if self.gateway is not None:
            hop = self.gateway._client().get_transport()
            return hop.open_channel("direct-tcpip", (self.hostname, self.port), ("127.0.0.1", 0),
                                    timeout=timeout)
        if self.sock_factory is not None:
            sock = self.sock_factory(timeout)
        else:
            sock = socket.create_connection((self.hostname, self.port), timeout=timeout)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return quick_ack(sock)

    def _known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def _connect(self, timeout: float) -> "paramiko.SSHClient":
        import paramiko

        deadline = time.monotonic() + timeout
        if self.private_key is not None and self._pkey is None:
            self._pkey = paramiko_key(self.private_key)
        if self._pkey is None and self._password is None and not self.use_agent:
            raise ConfigError(f"no way to log in to {self.host}: give a key (key_name), a password "
                              "(password_env) or use_agent", key="transport.key_name",
                              machine=self.machine)
        client = paramiko.SSHClient()
        known = client.get_host_keys()
        name = self._known_hosts_name()
        if self.pinned_host_key:
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(f"{name} {self.pinned_host_key}")
            except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError,
                    TypeError):
                entry = None
            if entry is None or entry.key is None:
                raise ConfigError(f"pinned host key for {self.host} is not an OpenSSH public key "
                                  f"line: {self.pinned_host_key[:40]!r}", key="reference.host_key",
                                  machine=self.machine)
            known.add(name, entry.key.get_name(), entry.key)
        elif self.known_hosts:
            if not os.path.isfile(self.known_hosts):
                raise ConfigError(f"known_hosts file {self.known_hosts} does not exist",
                                  key="transport.known_hosts", machine=self.machine)
            known.load(self.known_hosts)
        client.set_missing_host_key_policy(_HostKeyPolicy(self))
        sock = self._open_socket(timeout)
        remaining = max(0.1, deadline - time.monotonic())
        try:
            client.connect(self.hostname, self.port, self.username, pkey=self._pkey,
                           password=self._password, sock=sock, timeout=remaining,
                           banner_timeout=remaining, auth_timeout=remaining,
                           channel_timeout=timeout, allow_agent=self.use_agent,
                           look_for_keys=False, compress=False,
                           transport_factory=fast_cipher_transport)
        except BaseException:
            client.close()
            with contextlib.suppress(Exception):
                sock.close()
            raise
        transport = client.get_transport()
        if self.keepalive > 0:
            transport.set_keepalive(max(1, int(self.keepalive)))
        return client

    def _drop(self) -> None:
        """Forget a dead connection so the next call reconnects."""
        if self._ssh is not None:
            with contextlib.suppress(Exception):
                self._ssh.close()
        self._ssh = None
        self._forwards.clear()

    def _open_session_channel(self) -> "paramiko.Channel":
        """A new session channel on the shared connection (reconnecting once if it died)."""
        for attempt in (1, 2):
            client = self._client()
            try:
                with self._errors("command", f"open a session on {self.host}"):
                    return client.get_transport().open_session(
                        window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE,
                        timeout=self.connect_timeout)
            except ConnectError:
                with self._lock:
                    if self._ssh is client:
                        self._drop()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def ssh_login(self) -> SSHLogin:
        return SSHLogin(host=self.hostname, port=self.port, username=self.username,
                        private_key=self.private_key, host_key=self.pinned_host_key)

    def available(self) -> bool:
        try:
            return self.execute("true", timeout=max(5.0, self.connect_timeout)).ok
        except TransportError:
            return False

    def disconnect(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._shell is not None:
                self._shell.close()
                self._shell = None
            if self._ssh is not None:
                transport = self._ssh.get_transport()
                for port in list(self._forwards.values()):
                    with contextlib.suppress(Exception):
                        transport.cancel_port_forward("127.0.0.1", port)
            self._drop()
            self._closed = True
        if self.gateway is not None and self.owns_gateway:
            self.gateway.disconnect()

    # -- commands --------------------------------------------------------------------------------
    def _needs_sudo(self, sudo: bool) -> bool:
        return bool(sudo) and self.username != "root"

    def _command_line(self, command: str, env: Mapping[str, str] | None, sudo: bool,
                      token: str) -> str:
        exports = ""
        if env:
            bad = [k for k in env if not _ENV_NAME.match(str(k))]
            if bad:
                raise ConfigError(f"environment variable names must match [A-Za-z_][A-Za-z0-9_]*: "
                                  f"{', '.join(map(repr, bad))}", key="env")
            exports = "export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items()) + "; "
        # the mark is exported, so every process of the command inherits it (even after exec):
        # a timed-out command's processes are found by it in /proc/*/environ and killed
        mark = f"export {_MARK}={token}; "
        if self._needs_sudo(sudo):
            return f"{mark}sudo -n -- sh -c {shlex.quote(mark + exports + command)}"
        return f"{mark}{exports}{command}"

    def _run(self, command: str, *, timeout: float | None, stream: StreamCallback | None = None,
             env: Mapping[str, str] | None = None, sudo: bool = False, input: InputSource = None,
             pty: bool = False, stdout_sink: Callable[[bytes], None] | None = None,
             ) -> tuple[int, bytes, bytes, float]:
        """Run one command; returns (exit status, stdout, stderr, seconds). With ``stdout_sink``
        stdout goes there instead of being kept (for downloads through ``sudo cat``)."""
        timeout = self.command_timeout if timeout is None else float(timeout)
        token = secrets.token_hex(8)
        line = self._command_line(command, env, sudo, token)
        started = time.monotonic()
        deadline = started + timeout
        channel = self._open_session_channel()
        out: list[bytes] = []
        err: list[bytes] = []
        decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace")
                    for name in ("stdout", "stderr")}
        writer_error: list[BaseException] = []

        def take(name: str, data: bytes) -> None:
            if name == "stdout" and stdout_sink is not None:
                stdout_sink(data)
            else:
                (out if name == "stdout" else err).append(data)
            if stream is not None:
                text = decoders[name].decode(data)
                if text:
                    stream(name, text)

        def drain() -> None:
            while channel.recv_ready():
                take("stdout", channel.recv(CHUNK))
            while channel.recv_stderr_ready():
                take("stderr", channel.recv_stderr(CHUNK))

        try:
            with self._errors("command", f"run {command!r} on {self.host}"):
                if pty:
                    channel.get_pty(term="xterm", width=200, height=50)
                channel.exec_command(line)
                writer = None
                if input is None:
                    send_eof(channel)
                else:
                    writer = threading.Thread(target=self._feed, daemon=True,
                                              args=(channel, input, writer_error))
                    writer.start()
                fd = channel.fileno()
                while True:
                    drain()
                    if channel.closed or (channel.eof_received and channel.exit_status_ready()):
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise CommandDeadline()
                    if channel.eof_received:
                        channel.status_event.wait(min(remaining, 1.0))
                    else:
                        select.select([fd], [], [], min(remaining, 1.0))
                drain()
                status = channel.recv_exit_status()
                if writer is not None:
                    writer.join(timeout=max(0.1, deadline - time.monotonic()))
        except CommandDeadline:
            with contextlib.suppress(Exception):
                channel.close()
            self._kill_remote(token, sudo)
            raise CommandTimeout(command, timeout, host=self.host, machine=self.machine,
                                 stdout=b"".join(out).decode(errors="replace"),
                                 stderr=b"".join(err).decode(errors="replace")) from None
        finally:
            with contextlib.suppress(Exception):
                channel.close()
        if writer_error and status == 0:
            raise TransferError(f"sending input to {command!r} on {self.host} failed: "
                                f"{describe_error(writer_error[0])}", host=self.host,
                                machine=self.machine) from writer_error[0]
        if stream is not None:
            for name, decoder in decoders.items():
                tail = decoder.decode(b"", final=True)
                if tail:
                    stream(name, tail)
        return status, b"".join(out), b"".join(err), time.monotonic() - started

    @staticmethod
    def _feed(channel: "paramiko.Channel", source: InputSource,
              errors: list[BaseException]) -> None:
        """Send ``source`` to the command's stdin, then EOF (runs in its own thread)."""
        try:
            if isinstance(source, str):
                source = source.encode()
            if isinstance(source, (bytes, bytearray, memoryview)):
                view = memoryview(source)
                for start in range(0, len(view), CHUNK):
                    channel.sendall(view[start:start + CHUNK])
            elif callable(source):
                with io.BufferedWriter(ChannelWriter(channel), buffer_size=CHUNK) as sink:
                    source(sink)
            else:
                for block in iter(lambda: source.read(CHUNK), b""):  # type: ignore[union-attr]
                    channel.sendall(block)
        except BaseException as exc:  # reported by _run once the command has finished
            errors.append(exc)
        finally:
            with contextlib.suppress(Exception):
                send_eof(channel)

    def _kill_remote(self, token: str, sudo: bool) -> None:
        """Kill the processes (and their groups) of a timed-out command: those whose environment
        holds its mark. This killer's own environment does not, so it spares itself."""
        script = (f"for f in $(grep -lF -- {_MARK}={token} /proc/[0-9]*/environ 2>/dev/null); do "
                  "p=${f#/proc/}; p=${p%/environ}; "
                  "kill -KILL -- -$p 2>/dev/null || kill -KILL $p 2>/dev/null; done; true")
        if self._needs_sudo(sudo):
            script = f"sudo -n sh -c {shlex.quote(script)}"
        with contextlib.suppress(Exception):
            channel = self._open_session_channel()
            try:
                channel.settimeout(10)
                channel.exec_command(script)
                channel.recv_exit_status()
            finally:
                channel.close()

    def _check_sudo(self, command: str, status: int, stderr: bytes) -> None:
        text = stderr.decode(errors="replace")
        if status == 1 and ("a password is required" in text or "a terminal is required" in text):
            raise AuthenticationError(
                f"sudo on {self.host} needs a password for {self.username} (running {command!r}); "
                f"allow it without one (a NOPASSWD rule in /etc/sudoers.d) or log in as root",
                host=self.host, machine=self.machine)
        if status == 1 and "is not in the sudoers file" in text:
            raise AuthenticationError(
                f"{self.username} may not use sudo on {self.host}; add a NOPASSWD rule for it in "
                "/etc/sudoers.d or log in as root", host=self.host, machine=self.machine)
        if status == 127 and "sudo" in text and "not found" in text:
            raise TransportError(f"sudo is not installed on {self.host}; install it or log in as "
                                 "root", host=self.host, machine=self.machine)

    def execute(self, command, *, timeout=None, stream=None, env=None, sudo=False, input=None,
                pty=False) -> CommandResult:
        status, out, err, took = self._run(command, timeout=timeout, stream=stream, env=env,
                                           sudo=sudo, input=input, pty=pty)
        if status != 0 and self._needs_sudo(sudo):
            self._check_sudo(command, status, err)
        return CommandResult(command=command, exit_status=status,
                             stdout=out.decode(errors="replace"),
                             stderr=err.decode(errors="replace"), host=self.host, duration=took)

    # -- many commands: one persistent shell (session.py) --------------------------------------
    def shell_session(self) -> "ShellSession":
        """This machine's persistent remote shell, started on first use and reused: a command
        through it costs a round trip instead of a new channel and login shell. Commands run
        under /bin/sh, one at a time, each with its own exit status, output and timeout."""
        with self._lock:
            self._check_open()
            if self._shell is None:
                self._shell = ShellSession(
                    self._open_session_channel, host=self.host, machine=self.machine,
                    kill_group=self._kill_group, default_timeout=self.command_timeout)
            return self._shell

    def _kill_group(self, pid: int) -> None:
        """Kill a timed-out shell session's process group (sudo'd commands in it too)."""
        kill = f"kill -KILL -- -{int(pid)}"
        self.execute(f"{kill} 2>/dev/null || sudo -n {kill} 2>/dev/null; true", timeout=10)

    def execute_many(self, commands, *, timeout=None, env=None, sudo=False,
                     stop_on_error=False) -> list[CommandResult]:
        need = self._needs_sudo(sudo)
        items = [SessionCommand(c, timeout, env, need) for c in commands]
        results = self.shell_session().run_many(items, stop_on_error=stop_on_error)
        if need:
            for result in results:
                if not result.ok:
                    self._check_sudo(result.command, result.exit_status, result.stderr.encode())
        return results

    def _file_sudo(self) -> bool:
        return self._needs_sudo(self.sudo)

    def _script(self, script: str, *, what: str, timeout: float | None = None,
                input: InputSource = None) -> CommandResult:
        """Run a helper script for a file operation (with sudo when file ops need it)."""
        result = self.execute(script, timeout=timeout or self.transfer_timeout,
                              sudo=self.sudo, input=input)
        return result

