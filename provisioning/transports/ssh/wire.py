"""Socket and paramiko plumbing of the SSH transport: keys, fast ciphers, quick ACKs, EOF
ordering, stdin streaming and port-forward pumping. paramiko is imported only when used."""

from __future__ import annotations

import contextlib
import io
import select
import socket
from typing import TYPE_CHECKING, Any

from provisioning.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

    from provisioning.keys import PrivateKey

#: receive window per channel: big enough that loopback and LAN transfers never stall on it
WINDOW_SIZE = 16 * 1024 * 1024
#: the largest packet OpenSSH accepts on a session channel
MAX_PACKET_SIZE = 32 * 1024
#: bytes read or sent per call on a channel
CHUNK = 1024 * 1024


def send_eof(channel: "paramiko.Channel") -> None:
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



def paramiko_key(private_key: "PrivateKey") -> "paramiko.PKey":
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


def fast_cipher_transport(sock: Any, **kwargs: Any) -> "paramiko.Transport":
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

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        with contextlib.suppress(OSError):
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK or 0, 1)
        return data



_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def quick_ack(sock: Any) -> Any:
    """``sock`` as a _QuickAckSocket when it is a plain TCP socket on a system with QUICKACK."""
    if (_TCP_QUICKACK is None or type(sock) is not socket.socket
            or sock.family not in (socket.AF_INET, socket.AF_INET6)
            or sock.type != socket.SOCK_STREAM):
        return sock
    timeout = sock.gettimeout()
    wrapped = _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    wrapped.settimeout(timeout)
    return wrapped


class ChannelWriter(io.RawIOBase):
    """A write-only file over a channel's stdin (for streaming tar and file input)."""

    def __init__(self, channel: "paramiko.Channel") -> None:
        self.channel = channel

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.channel.sendall(bytes(data))
        return len(data)


def pump(channel: "paramiko.Channel", local: tuple[str, int]) -> None:
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

