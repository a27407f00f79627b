"""WinRM errors: pywinrm, requests and spnego exceptions become ``provisioning.errors`` here
and nowhere else (one table, most specific first, ``raise ... from``)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from provisioning.errors import AuthenticationError, ConfigError, ConnectError, TransportError

__all__ = ["map_winrm_errors", "translate_winrm_error", "root_cause"]

#: WS-Management fault codes we react to
FAULT_SHELL_NOT_FOUND = 2150858843
FAULT_ACCESS_DENIED = 5


@contextlib.contextmanager
def map_winrm_errors(transport: Any, what: str) -> Iterator[None]:
    """Translate pywinrm/requests/spnego exceptions into ours, most specific first.
    ``transport`` is the ``WinRMTransport`` at work (its address, user and auth name the error)."""
    if transport._closed:
        raise TransportError(f"{what}: the WinRM transport to {transport.host} was disconnected; "
                             "ask the driver for a new machine", host=transport.host,
                             machine=transport.machine)
    try:
        yield
    except TransportError:
        raise
    except Exception as exc:  # the table below decides; anything unknown is re-raised as is
        mapped = translate_winrm_error(transport, what, exc)
        if mapped is None:
            raise
        raise mapped from exc


def translate_winrm_error(transport: Any, what: str, exc: BaseException) -> Exception | None:
    import requests.exceptions as rex
    from winrm import exceptions as wex

    host, machine = transport.host, transport.machine
    kind = type(exc).__name__
    if isinstance(exc, (wex.AuthenticationError, PermissionError)) or kind in (
            "KerberosExchangeError", "MutualAuthenticationError", "AuthenticationException") or (
            type(exc).__module__.startswith("spnego")):
        return AuthenticationError(
            f"{what}: {host} refused the {transport.auth} credentials of user "
            f"{transport.username!r} ({exc}); check the username and password (or password_env), "
            "and that the auth method is enabled on the host (winrm get winrm/config/service/auth)",
            host=host, machine=machine)
    if isinstance(exc, rex.SSLError):
        return transport._certificate_error(what, exc)
    if isinstance(exc, rex.ConnectTimeout):
        return ConnectError(f"{what}: no answer from {host} within {transport.connect_timeout:g} s; "
                            "is the machine up, WinRM listening on that port, and the firewall open?",
                            host=host, machine=machine)
    if isinstance(exc, rex.ReadTimeout):
        return ConnectError(f"{what}: {host} stopped answering (no reply within "
                            f"{transport.read_timeout:g} s)", host=host, machine=machine)
    if isinstance(exc, rex.ConnectionError):
        return ConnectError(f"{what}: cannot connect to {host}: {root_cause(exc)}; is the machine up, "
                            "the WinRM service running and the port open?", host=host, machine=machine)
    if isinstance(exc, (rex.InvalidURL, rex.MissingSchema, rex.InvalidSchema, rex.URLRequired)):
        return ConfigError(f"{what}: invalid WinRM endpoint {transport.endpoint}: {exc}",
                           key="machine_options.transport.host")
    if isinstance(exc, rex.RequestException):
        return TransportError(f"{what}: HTTP request to {host} failed: {exc}", host=host,
                              machine=machine)
    if isinstance(exc, wex.WSManFaultError):
        if exc.wsman_fault_code == FAULT_ACCESS_DENIED:
            return AuthenticationError(f"{what}: {host} denied access to user {transport.username!r}: "
                                       f"{exc.reason}", host=host, machine=machine)
        return TransportError(f"{what}: {host} answered with a WS-Management fault "
                              f"{exc.wsman_fault_code or exc.fault_subcode or ''}: {exc.reason}",
                              host=host, machine=machine)
    if isinstance(exc, wex.WinRMTransportError):
        return TransportError(f"{what}: {host} answered HTTP {exc.code}: "
                              f"{(exc.response_text or '')[:200]}", host=host, machine=machine)
    if isinstance(exc, wex.WinRMOperationTimeoutError):
        return ConnectError(f"{what}: {host} did not complete a WS-Management operation in time",
                            host=host, machine=machine)
    if isinstance(exc, wex.WinRMError):
        text = str(exc)
        if "not installed" in text or "requires" in text or "unsupported auth" in text:
            return ConfigError(f"{what}: {text}", key="machine_options.transport.auth")
        return TransportError(f"{what}: {text}", host=host, machine=machine)
    return None


def root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__context__ is not None and seen.__context__ is not seen:
        seen = seen.__context__
    text = str(seen)
    return text.split("] ", 1)[-1] if text else type(seen).__name__
