"""SSHTransport: commands and files over one paramiko connection per machine.

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
  connection stays usable), ``transfer_timeout`` (per file).
- **Files** stream over exec channels with 16 MiB windows (directories as one tar stream) to a
  temporary name beside the target, are checked with sha256 on both sides, then renamed into
  place, all in one remote step (one round trip). Logged in as non-root with ``sudo=True``, that
  step runs under ``sudo -n``, so root-owned paths work too. (Faster than paramiko's SFTP: see
  the measurements above ``_write_script``.)
- **Errors**: paramiko and socket exceptions become ``provisioning.errors`` in one place,
  ``map_ssh_errors`` (one table, most specific first, ``raise ... from``), naming the host and what
  to check.

paramiko is imported only when a connection is made, so importing this module stays cheap.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import os
import posixpath
import re
import secrets
import select
import shlex
import socket
import tarfile
import threading
import time
from typing import (TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, Mapping, Union)

from provisioning.errors import (AuthenticationError, CommandTimeout, ConfigError, ConnectError,
                                 HostKeyMismatch, ProvisioningError, TransferError, TransportError)
from provisioning.machine.result import CommandResult
from provisioning.transports.base import (DEFAULT_COMMAND_TIMEOUT, StreamCallback, Transport,
                                          check_sha256, sha256_file)

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

    from provisioning.keys import PrivateKey
    from provisioning.transports.shell_session import ShellSession

__all__ = ["SSHTransport", "map_ssh_errors", "translate_ssh_error", "host_key_line",
           "ssh_transport_from_options", "wait_until_connectable"]

#: receive window per channel: big enough that loopback and LAN transfers never stall on it
WINDOW_SIZE = 16 * 1024 * 1024
#: the largest packet OpenSSH accepts on a session channel
MAX_PACKET_SIZE = 32 * 1024
_CHUNK = 1024 * 1024
#: exit status the remote write script uses for "sha256 differs"
_SHA_MISMATCH = 97
#: exit status the remote read script uses for "no such file"
_MISSING = 44
#: exported to each remote command, so a timed-out command's processes can be found and killed
_MARK = "PROVISIONING_COMMAND_ID"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: what ``input`` may be: bytes, text, a binary file, or a function writing to the remote stdin
InputSource = Union[bytes, str, BinaryIO, Callable[[BinaryIO], None], None]


class _Timeout(Exception):
    """Internal: a command passed its deadline (turned into CommandTimeout by ``_run``)."""


# -- errors: the one translation table ------------------------------------------------------------
def _error_table() -> list[tuple[type[BaseException], type[ProvisioningError] | None]]:
    """(backend exception, our error) most specific first; None means "the phase's default"
    (ConnectError while connecting or running a command, TransferError while moving files)."""
    import paramiko
    from paramiko import ssh_exception as se

    return [
        (se.BadHostKeyException, HostKeyMismatch),
        (se.AuthenticationException, AuthenticationError),  # also PasswordRequired, BadAuthType...
        (se.NoValidConnectionsError, ConnectError),
        (se.ChannelException, ConnectError),               # jump host refused the tunnel
        (se.ProxyCommandFailure, ConnectError),
        (se.IncompatiblePeer, TransportError),             # no common algorithm: not transient
        (se.MessageOrderError, TransportError),
        (se.ConfigParseError, ConfigError),
        (se.CouldNotCanonicalize, ConfigError),
        (paramiko.hostkeys.InvalidHostKey, ConfigError),   # a bad line in a known_hosts file
        (socket.timeout, None),
        (paramiko.SSHException, None),
        (EOFError, None),
        (OSError, None),
    ]


_PHASE_DEFAULT: dict[str, type[TransportError]] = {
    "connect": ConnectError, "command": ConnectError, "transfer": TransferError,
}

_HINTS: dict[type[ProvisioningError], str] = {
    ConnectError: "check that the machine is up, the address and port are right, and no firewall "
                  "or security group drops SSH",
    AuthenticationError: "check the username, that the key's public half is in the user's "
                         "authorized_keys (or the password), and that the key is the one configured",
    TransferError: "check free space, permissions and that the directory exists on the machine",
    TransportError: "check the server's SSH configuration (algorithms) and its log",
    ConfigError: "check your OpenSSH client config",
}


def _send_eof(channel: "paramiko.Channel") -> None:
    """Tell the far side we send no more input. paramiko's ``shutdown_write`` builds the EOF
    under the channel lock but sends it after releasing it, so a fast command's CLOSE, handled
    in between, can go out first; OpenSSH then sees EOF on a freed channel and drops the whole
    connection ("ieof packet referred to nonexistent channel"). Sending under the lock, and
    not at all once closed, keeps EOF before CLOSE."""
    with channel.lock:
        if channel.closed or channel.transport is None:
            return
        message = channel._send_eof()
        if message is not None:
            channel.transport._send_user_message(message)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    if isinstance(exc, socket.timeout):
        return "no answer before the timeout"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def translate_ssh_error(exc: BaseException, *, host: str, phase: str, what: str,
                        machine: str | None = None) -> ProvisioningError:
    """Our error for a paramiko/socket exception (the table above, first match wins)."""
    from paramiko import ssh_exception as se

    target: type[ProvisioningError] | None = _PHASE_DEFAULT.get(phase, TransportError)
    for backend, ours in _error_table():
        if isinstance(exc, backend):
            target = ours or _PHASE_DEFAULT.get(phase, TransportError)
            break
    detail = _describe(exc)
    if target is HostKeyMismatch and isinstance(exc, se.BadHostKeyException):
        seen, expected = host_key_line(exc.key), host_key_line(exc.expected_key)
        return HostKeyMismatch(_mismatch_message(host, expected, seen), host=host,
                               expected=expected, seen=seen, machine=machine)
    if target is HostKeyMismatch:
        return HostKeyMismatch(f"{what}: host key of {host} was refused ({detail})", host=host,
                               machine=machine)
    message = f"{what}: {detail}; {_HINTS.get(target, '')}".rstrip("; ")
    if issubclass(target, TransportError):
        return target(message, host=host, machine=machine)
    return target(message, machine=machine)  # type: ignore[call-arg]


def _mismatch_message(host: str, expected: str | None, seen: str) -> str:
    from provisioning.keys import fingerprint

    want = fingerprint(expected) if expected else "(none)"
    return (f"host key of {host} changed: expected {want}, got {fingerprint(seen)}. If the machine "
            "was really rebuilt, remove the pinned host_key from its state (or known_hosts entry) "
            "and connect again; otherwise someone may be intercepting the connection")


@contextlib.contextmanager
def map_ssh_errors(host: str, *, phase: str, what: str,
                   machine: str | None = None) -> Iterator[None]:
    """Translate backend exceptions raised inside the block; ours pass through unchanged."""
    try:
        yield
    except (ProvisioningError, _Timeout):
        raise
    except Exception as exc:
        raise translate_ssh_error(exc, host=host, phase=phase, what=what,
                                  machine=machine) from exc


def host_key_line(key: "paramiko.PKey | None") -> str:
    """``ssh-ed25519 AAAA...``: the OpenSSH public line of a paramiko key."""
    if key is None:
        return ""
    return f"{key.get_name()} {key.get_base64()}"


def _paramiko_key(private_key: "PrivateKey") -> "paramiko.PKey":
    import paramiko

    classes = {"ed25519": paramiko.Ed25519Key, "rsa": paramiko.RSAKey,
               "ecdsa": paramiko.ECDSAKey}
    cls = classes.get(private_key.kind)
    if cls is None:
        raise ConfigError(f"key {private_key.name!r} is of type {private_key.kind}, which SSH "
                          "cannot use; use an ed25519, RSA or ECDSA key", key="private_keys")
    return cls.from_private_key(io.StringIO(private_key.private_openssh().decode()))


#: ciphers tried first when the server offers them: AES-GCM is one pass (no separate HMAC) and
#: uses AES-NI; paramiko's own order starts with aes128-ctr + hmac-sha2
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _fast_cipher_transport(sock: Any, **kwargs: Any) -> "paramiko.Transport":
    """paramiko ``transport_factory``: a Transport preferring AES-GCM (others stay as fallback)."""
    import paramiko

    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in _FAST_CIPHERS if c in offered) + tuple(
        c for c in offered if c not in _FAST_CIPHERS)
    return transport


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it received at once (Linux ``TCP_QUICKACK``).

    sshd leaves Nagle on for non-interactive sessions. Right after authentication it sends a
    segment the client has no reply to; the client's kernel delays that ACK (~40 ms), and sshd's
    answer to our first channel open waits behind it: every fresh connection lost ~40 ms before
    its first command. Pushing the ACK after each read removes the stall (one cheap syscall)."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # type: ignore[override]
        data = super().recv(bufsize, flags)
        with contextlib.suppress(OSError):
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        return data


_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _quick_ack(sock: Any) -> Any:
    """``sock`` as a _QuickAckSocket when it is a plain TCP socket on a system with QUICKACK."""
    if (_TCP_QUICKACK is None or type(sock) is not socket.socket
            or sock.family not in (socket.AF_INET, socket.AF_INET6)
            or sock.type != socket.SOCK_STREAM):
        return sock
    timeout = sock.gettimeout()
    wrapped = _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    wrapped.settimeout(timeout)
    return wrapped


class _HostKeyPolicy:
    """paramiko calls this when the server's key is not among the known ones."""

    def __init__(self, transport: "SSHTransport") -> None:
        self.transport = transport

    def missing_host_key(self, client: Any, hostname: str, key: "paramiko.PKey") -> None:
        t = self.transport
        seen = host_key_line(key)
        if t.pinned_host_key:
            raise HostKeyMismatch(_mismatch_message(t.host, t.pinned_host_key, seen), host=t.host,
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


class _ChannelWriter(io.RawIOBase):
    """A write-only file over a channel's stdin (for streaming tar and file input)."""

    def __init__(self, channel: "paramiko.Channel") -> None:
        self.channel = channel

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.channel.sendall(bytes(data))
        return len(data)


# -- the transport --------------------------------------------------------------------------------
class SSHTransport(Transport):
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
        gateway: "SSHTransport | None" = None,
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
        return _quick_ack(sock)

    def _known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def _connect(self, timeout: float) -> "paramiko.SSHClient":
        import paramiko

        deadline = time.monotonic() + timeout
        if self.private_key is not None and self._pkey is None:
            self._pkey = _paramiko_key(self.private_key)
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
        client.set_missing_host_key_policy(_HostKeyPolicy(self))  # type: ignore[arg-type]
        sock = self._open_socket(timeout)
        remaining = max(0.1, deadline - time.monotonic())
        try:
            client.connect(self.hostname, self.port, self.username, pkey=self._pkey,
                           password=self._password, sock=sock, timeout=remaining,
                           banner_timeout=remaining, auth_timeout=remaining,
                           channel_timeout=timeout, allow_agent=self.use_agent,
                           look_for_keys=False, compress=False,
                           transport_factory=_fast_cipher_transport)
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
                take("stdout", channel.recv(_CHUNK))
            while channel.recv_stderr_ready():
                take("stderr", channel.recv_stderr(_CHUNK))

        try:
            with self._errors("command", f"run {command!r} on {self.host}"):
                if pty:
                    channel.get_pty(term="xterm", width=200, height=50)
                channel.exec_command(line)
                writer = None
                if input is None:
                    _send_eof(channel)
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
                        raise _Timeout()
                    if channel.eof_received:
                        channel.status_event.wait(min(remaining, 1.0))
                    else:
                        select.select([fd], [], [], min(remaining, 1.0))
                drain()
                status = channel.recv_exit_status()
                if writer is not None:
                    writer.join(timeout=max(0.1, deadline - time.monotonic()))
        except _Timeout:
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
                                f"{_describe(writer_error[0])}", host=self.host,
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
                for start in range(0, len(view), _CHUNK):
                    channel.sendall(view[start:start + _CHUNK])
            elif callable(source):
                with io.BufferedWriter(_ChannelWriter(channel), buffer_size=_CHUNK) as sink:
                    source(sink)
            else:
                for block in iter(lambda: source.read(_CHUNK), b""):  # type: ignore[union-attr]
                    channel.sendall(block)
        except BaseException as exc:  # reported by _run once the command has finished
            errors.append(exc)
        finally:
            with contextlib.suppress(Exception):
                _send_eof(channel)

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

    # -- many commands: one persistent shell (shell_session.py) --------------------------------------
    def shell_session(self) -> "ShellSession":
        """This machine's persistent remote shell, started on first use and reused: a command
        through it costs a round trip instead of a new channel and login shell. Commands run
        under /bin/sh, one at a time, each with its own exit status, output and timeout."""
        with self._lock:
            self._check_open()
            if self._shell is None:
                from provisioning.transports.shell_session import ShellSession

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
        from provisioning.transports.shell_session import SessionCommand

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

    # -- files -----------------------------------------------------------------------------------
    # Files move as byte streams on exec channels (``tee`` into a temporary name, ``cat`` out).
    # Measured on loopback against paramiko's SFTP with pipelining, 128 KiB requests and 16 MiB
    # windows: upload 144 vs 88 MiB/s, download 276 vs 20 MiB/s; and a whole upload (stream,
    # remote sha256, mode, rename) is one round trip instead of SFTP's open/write/close/rename.
    def _write_script(self, target: str, sha: str, mode: int | str | None, token: str) -> str:
        """Shell that creates a temporary file beside ``target`` with its final mode (given, else
        the old file's, and the old owner) before any byte is written (a 0600 secret is never
        readable by others, not even for a moment), stores stdin in it, checks its sha256 and
        renames it over the target. Exit 97 with the seen sha256 on stderr when it differs."""
        q = shlex.quote
        directory, base = posixpath.split(target)
        staged = posixpath.join(directory, f".{base}.provisioning-{token}.tmp")
        lines = [f"d={q(target)}", f"s={q(staged)}",
                 'mkdir -p -- "$(dirname -- "$d")" || exit 1',
                 # the file gets its final mode and owner while still empty: created owner-only,
                 # then given the old file's (or the umask's, or the asked) mode, then filled
                 'u=$(umask)',
                 '(umask 077 && : > "$s") || exit 1',
                 'if [ -e "$d" ]; then chown --reference="$d" -- "$s" 2>/dev/null; '
                 'chmod --reference="$d" -- "$s" 2>/dev/null; '
                 'else chmod "$(printf %o $((0666 & ~0$u)))" -- "$s"; fi']
        if mode is not None:
            value = mode if isinstance(mode, str) else f"{mode:o}"
            if not re.fullmatch(r"[0-7]{3,4}", value):
                raise ConfigError(f"mode must be octal like '0644', got {mode!r}", key="mode")
            lines.append(f'chmod {value} -- "$s" || {{ rm -f -- "$s"; exit 1; }}')
        lines += [  # store first, then hash what landed (a pipe through tee costs ~25% more
                    # CPU); openssl's sha256 uses the CPU's SHA instructions, if present
                  'cat > "$s" || { rm -f -- "$s"; exit 1; }',
                  'set -- $(openssl dgst -sha256 -r < "$s" 2>/dev/null || sha256sum < "$s")',
                  f'if [ "$1" != {q(sha)} ]; then rm -f -- "$s"; echo "sha256 $1" >&2; '
                  f'exit {_SHA_MISMATCH}; fi',
                  'mv -f -- "$s" "$d" || { rm -f -- "$s"; exit 1; }']
        return "\n".join(lines)

    def _upload_stream(self, source: InputSource, sha: str, remote_path: str, what: str,
                       mode: int | str | None) -> None:
        self._check_open()
        script = self._write_script(remote_path, sha, mode, secrets.token_hex(6))
        try:
            status, _, err, _ = self._run(script, timeout=self.transfer_timeout,
                                          sudo=self.sudo, input=source)
        except CommandTimeout as exc:
            raise TransferError(f"{what}: timed out after {self.transfer_timeout:g} s; raise "
                                "transfer_timeout or check the link", host=self.host,
                                machine=self.machine) from exc
        except ConnectError as exc:
            raise TransferError(f"{what}: {exc.message}", host=self.host,
                                machine=self.machine) from exc
        if status == 0:
            return
        if self._file_sudo():
            self._check_sudo(what, status, err)
        text = err.decode(errors="replace").strip()
        if status == _SHA_MISMATCH:
            seen = text.split()[-1] if text.split() else None
            raise TransferError(f"{what}: sha256 differs after transfer (local {sha}, remote "
                                f"{seen}); the copy was discarded. {text[-300:]}", host=self.host,
                                machine=self.machine)
        raise TransferError(f"{what}: {text[-500:] or f'exit status {status}'}; "
                            f"{_HINTS[TransferError]}", host=self.host, machine=self.machine)

    def upload_file(self, local_path: str, remote_path: str, *, mode: int | str | None = None,
                    skip_unchanged: bool = False) -> bool:
        """Upload atomically, verified by sha256 on both sides; with ``skip_unchanged`` do
        nothing when the remote file already has the same sha256. True when it copied."""
        what = f"upload {local_path} -> {self.host}:{remote_path}"
        try:
            sha = sha256_file(local_path)
            source = open(local_path, "rb")
        except OSError as exc:
            raise TransferError(f"{what}: cannot read the local file: {exc.strerror}",
                                host=self.host, machine=self.machine) from exc
        with source:
            if skip_unchanged and self.remote_sha256(remote_path) == sha:
                return False
            self._upload_stream(source, sha, remote_path, what, mode)
        return True

    def write_file(self, path: str, content: bytes, *, mode: int | str | None = None) -> None:
        data = content.encode() if isinstance(content, str) else bytes(content)
        self._upload_stream(data, hashlib.sha256(data).hexdigest(), path,
                            f"write {self.host}:{path}", mode)

    def remote_sha256(self, path: str) -> str | None:
        result = self.execute(f"sha256sum -- {shlex.quote(path)} 2>/dev/null",
                              timeout=self.transfer_timeout, sudo=self.sudo)
        if not result.ok or not result.stdout.strip():
            return None
        return result.stdout.split()[0]

    def _read_stream(self, path: str, sink: Callable[[bytes], None], what: str,
                     with_sha: bool) -> tuple[bool, str | None]:
        """Stream a remote file into ``sink``: (existed, remote sha256 when asked). The remote
        sha256 is computed while the file is sent."""
        q = shlex.quote(path)
        sha = f"sha256sum -- {q} >&2 & " if with_sha else ""
        script = f"{sha}cat -- {q}; s=$?; wait; exit $s"
        try:
            status, _, err, _ = self._run(script, timeout=self.transfer_timeout, sudo=self.sudo,
                                          stdout_sink=sink)
        except CommandTimeout as exc:
            raise TransferError(f"{what}: timed out after {self.transfer_timeout:g} s",
                                host=self.host, machine=self.machine) from exc
        text = err.decode(errors="replace")
        if status != 0 and "No such file" in text and "ermission denied" not in text:
            return False, None
        if status != 0:
            if self._file_sudo():
                self._check_sudo(what, status, err)
            hint = "; set transport.sudo to read it with sudo" if (
                "permission denied" in text.lower() and not self._file_sudo()) else ""
            raise TransferError(f"{what}: {text.strip()[-500:] or f'exit status {status}'}{hint}",
                                host=self.host, machine=self.machine)
        seen = None
        if with_sha:
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                    seen = parts[0]
        return True, seen

    def read_file(self, path: str) -> bytes | None:
        chunks: list[bytes] = []
        existed, _ = self._read_stream(path, chunks.append, f"read {self.host}:{path}", False)
        return b"".join(chunks) if existed else None

    def download_file(self, remote_path: str, local_path: str) -> None:
        what = f"download {self.host}:{remote_path} -> {local_path}"
        self._check_open()
        target = os.path.abspath(local_path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.provisioning-tmp-{os.getpid()}-{secrets.token_hex(4)}"
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb") as sink:
                def keep(block: bytes) -> None:
                    digest.update(block)
                    sink.write(block)

                existed, seen = self._read_stream(remote_path, keep, what, True)
            if not existed:
                raise TransferError(f"{what}: no such file on the machine", host=self.host,
                                    machine=self.machine)
            check_sha256(digest.hexdigest(), seen, what=what, host=self.host)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- directories -------------------------------------------------------------------------------
    def _remote_manifest(self, directory: str) -> dict[str, str] | None:
        q = shlex.quote(directory)
        result = self._script(
            f"cd {q} 2>/dev/null || exit {_MISSING}; find . -type f -exec sha256sum -- {{}} +",
            what=f"list {directory}")
        if result.exit_status == _MISSING:
            return None
        if not result.ok:
            raise TransferError(f"checking {self.host}:{directory} failed: "
                                f"{result.stderr.strip()[-300:]}", host=self.host,
                                machine=self.machine)
        manifest = {}
        for line in result.stdout.splitlines():
            digest, _, name = line.partition("  ")
            if name:
                manifest[posixpath.normpath(name)] = digest
        return manifest

    def upload_directory(self, local_dir: str, remote_dir: str, *,
                         skip_unchanged: bool = True) -> bool:
        """Make ``remote_dir`` a copy of ``local_dir``: one tar stream into a staging directory
        beside it, every file's sha256 checked there, then swapped into place (the old tree is
        removed). Skipped when every file already matches. Returns True when it copied."""
        what = f"upload directory {local_dir} -> {self.host}:{remote_dir}"
        if not os.path.isdir(local_dir):
            raise TransferError(f"{what}: {local_dir} is not a local directory", host=self.host,
                                machine=self.machine)
        wanted: dict[str, str] = {}
        for root, _dirs, files in os.walk(local_dir):
            for name in files:
                path = os.path.join(root, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
                    wanted[posixpath.normpath("./" + rel)] = sha256_file(path)
        if skip_unchanged and self._remote_manifest(remote_dir) == wanted:
            return False
        remote_dir = remote_dir.rstrip("/") or "/"
        parent, base = posixpath.split(remote_dir)
        token = secrets.token_hex(6)
        staging = posixpath.join(parent, f".{base}.provisioning-{token}")
        old = posixpath.join(parent, f".{base}.provisioning-old-{token}")
        q = shlex.quote

        def tar_stream(sink: BinaryIO) -> None:
            def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                return info

            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as archive:
                archive.add(local_dir, arcname=".", filter=owner)

        result = self.execute(
            f"mkdir -p -- {q(staging)} && tar -x -f - -C {q(staging)} --no-same-owner",
            timeout=self.transfer_timeout, sudo=self.sudo, input=tar_stream)
        try:
            if not result.ok:
                raise TransferError(f"{what}: unpacking failed: {result.stderr.strip()[-500:]}",
                                    host=self.host, machine=self.machine)
            seen = self._remote_manifest(staging) or {}
            if seen != wanted:
                differ = sorted(k for k in set(seen) | set(wanted) if seen.get(k) != wanted.get(k))
                raise TransferError(f"{what}: sha256 differs after transfer for "
                                    f"{', '.join(differ[:5])}; the copy was discarded, retry",
                                    host=self.host, machine=self.machine)
            swap = self._script(
                f"set -e; if [ -e {q(remote_dir)} ]; then mv -- {q(remote_dir)} {q(old)}; fi; "
                f"mv -- {q(staging)} {q(remote_dir)}; rm -rf -- {q(old)}",
                what=what)
            if not swap.ok:
                raise TransferError(f"{what}: could not move the copy into place: "
                                    f"{swap.stderr.strip()[-500:]}", host=self.host,
                                    machine=self.machine)
        except BaseException:
            with contextlib.suppress(Exception):
                self._script(f"rm -rf -- {q(staging)}", what=what)
            raise
        return True

    # -- forwarding ------------------------------------------------------------------------------
    def forward_remote(self, local_url: str) -> str:
        """Listen on the machine's 127.0.0.1 and tunnel each connection back to ``local_url``'s
        host and port here; returns the URL to use on the machine."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(local_url)
        if not parts.hostname:
            raise ConfigError(f"cannot forward {local_url!r}: it has no host", key="url")
        port = parts.port or {"http": 80, "https": 443, "ftp": 21}.get(parts.scheme)
        if port is None:
            raise ConfigError(f"cannot forward {local_url!r}: give a port", key="url")
        local = (parts.hostname, port)
        with self._lock:
            remote_port = self._forwards.get(local)
            if remote_port is None:
                transport = self._client().get_transport()

                def handler(channel, origin, server) -> None:
                    threading.Thread(target=_pump, args=(channel, local), daemon=True).start()

                with self._errors("connect", f"forward {local_url} to {self.host}"):
                    remote_port = transport.request_port_forward("127.0.0.1", 0, handler=handler)
                if not remote_port:
                    raise ConnectError(f"{self.host} refused remote port forwarding; set "
                                       "AllowTcpForwarding yes in its sshd_config",
                                       host=self.host, machine=self.machine)
                self._forwards[local] = remote_port
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo + '@' if userinfo else ''}127.0.0.1:{remote_port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _pump(channel: "paramiko.Channel", local: tuple[str, int]) -> None:
    """Copy bytes both ways between a forwarded channel and a local socket until either closes."""
    try:
        sock = socket.create_connection(local, timeout=10)
    except OSError:
        channel.close()
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            ready, _, _ = select.select([sock, channel], [], [], 60)
            if not ready and channel.closed:
                break
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    break
                channel.sendall(data)
            if channel in ready:
                data = channel.recv(65536)
                if not data:
                    break
                sock.sendall(data)
    except (OSError, EOFError):
        pass
    finally:
        sock.close()
        channel.close()


def __getattr__(name: str) -> Any:
    """``ssh_transport_from_options`` and ``wait_until_connectable`` live in ssh_options
    (building from options is its own job) but are part of this module's API."""
    if name in ("ssh_transport_from_options", "wait_until_connectable"):
        from provisioning.transports import ssh_options

        return getattr(ssh_options, name)
    raise AttributeError(name)
