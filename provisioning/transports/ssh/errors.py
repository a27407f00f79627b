"""SSH errors: paramiko and socket exceptions become ``provisioning.errors`` here, in one table
(most specific first, ``raise ... from``), naming the host and what to check."""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING, Iterator

from provisioning.errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    HostKeyMismatch,
    ProvisioningError,
    TransferError,
    TransportError,
)
from provisioning.keys import fingerprint

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

__all__ = ["map_ssh_errors", "translate_ssh_error", "host_key_line", "mismatch_message", "HINTS",
           "describe_error",
           "CommandDeadline"]


class CommandDeadline(Exception):
    """Internal: a command passed its deadline (turned into CommandTimeout by the transport)."""


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

HINTS: dict[type[ProvisioningError], str] = {
    ConnectError: "check that the machine is up, the address and port are right, and no firewall "
                  "or security group drops SSH",
    AuthenticationError: "check the username, that the key's public half is in the user's "
                         "authorized_keys (or the password), and that the key is the one configured",
    TransferError: "check free space, permissions and that the directory exists on the machine",
    TransportError: "check the server's SSH configuration (algorithms) and its log",
    ConfigError: "check your OpenSSH client config",
}


def describe_error(exc: BaseException) -> str:
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

    default: type[ProvisioningError] = _PHASE_DEFAULT.get(phase, TransportError)
    target = default
    for backend, ours in _error_table():
        if isinstance(exc, backend):
            target = ours or default
            break
    detail = describe_error(exc)
    if target is HostKeyMismatch and isinstance(exc, se.BadHostKeyException):
        seen, expected = host_key_line(exc.key), host_key_line(exc.expected_key)
        return HostKeyMismatch(mismatch_message(host, expected, seen), host=host,
                               expected=expected, seen=seen, machine=machine)
    if target is HostKeyMismatch:
        return HostKeyMismatch(f"{what}: host key of {host} was refused ({detail})", host=host,
                               machine=machine)
    message = f"{what}: {detail}; {HINTS.get(target, '')}".rstrip("; ")
    if issubclass(target, TransportError):
        return target(message, host=host, machine=machine)
    return target(message, machine=machine)


def mismatch_message(host: str, expected: str | None, seen: str) -> str:
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
    except (ProvisioningError, CommandDeadline):
        raise
    except Exception as exc:
        raise translate_ssh_error(exc, host=host, phase=phase, what=what,
                                  machine=machine) from exc


def host_key_line(key: "paramiko.PKey | None") -> str:
    """``ssh-ed25519 AAAA...``: the OpenSSH public line of a paramiko key."""
    if key is None:
        return ""
    return f"{key.get_name()} {key.get_base64()}"

