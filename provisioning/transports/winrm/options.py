"""winrm_transport_from_options: a ``WinRMTransport`` from ``machine_options["transport"]``,
with the password from the environment or config credentials and the pinned certificate from
the machine's reference. A certificate trusted on first use is only reported (``on_new_host_key``);
the driver or provisioner records and saves it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

from provisioning.errors import ConfigError
from provisioning.inputs.schema import closest
from provisioning.transports.base import DEFAULT_COMMAND_TIMEOUT, HostKeyCallback, NewHostKey
from provisioning.transports.winrm.connection import DEFAULT_PORTS
from provisioning.transports.winrm.transport import WinRMTransport

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.config import Config
    from provisioning.spec import MachineSpec

__all__ = ["winrm_transport_from_options", "OPTION_KEYS"]

OPTION_KEYS = {
    "kind": "transport kind (winrm)",
    "host": "address of the machine (default: the driver's address)",
    "port": "WinRM port (5985 http, 5986 https)",
    "scheme": "http or https",
    "auth": "basic, ntlm, kerberos or credssp",
    "username": "login (DOMAIN\\user or user@domain for domain accounts)",
    "password_env": "name of an environment variable holding the password",
    "ca_bundle": "PEM file of the CA(s) that signed the listener's certificate",
    "cert_thumbprint": "pinned certificate fingerprint (SHA-1 or SHA-256 hex)",
    "cert_trust": "validate (default) or first_use: pin the certificate seen first",
    "message_encryption": "auto, always or never",
    "allow_unencrypted": "allow basic auth or unencrypted messages over http",
    "connect_timeout": "seconds to wait for a TCP/TLS connection",
    "operation_timeout": "seconds one WS-Management operation may take",
    "command_timeout": "default seconds a command may run",
    "transfer_timeout": "seconds a file transfer may take",
    "shell": "powershell (default) or cmd for execute()",
    "path": "URL path of the endpoint (/wsman)",
    "chunk_size": "raw bytes per base64 line in file transfers",
    "proxy": "HTTP proxy URL (default: none, environment proxies are ignored)",
    "kerberos_hostname_override": "host name for the Kerberos SPN",
    "kerberos_delegation": "forward the Kerberos ticket (double hop)",
    "sudo": "ignored on Windows",
}

_PASSWORD_KEYS = ("password", "winrm_password")


def winrm_transport_from_options(
    options: Mapping[str, Any],
    spec: "MachineSpec",
    config: "Config",
    *,
    on_new_host_key: HostKeyCallback | None = None,
    default_host: str | None = None,
    password: str | None = None,
) -> WinRMTransport:
    """Build a ``WinRMTransport`` from ``machine_options["transport"]``.

    The password comes from, in order: ``password`` (a driver that fetched it from the
    provider), the environment variable named by ``password_env``, or the config's
    ``credentials`` under the machine's driver URL or ``winrm:HOST`` (key ``password``). It is
    never read from machine options and never saved in state. A pinned certificate thumbprint is
    read from ``spec.reference["cert_thumbprint"]`` when the options do not give one; with
    ``cert_trust: first_use`` the first one seen goes to ``on_new_host_key`` (kind
    ``certificate``), which records it there.
    """
    where = "machine_options.transport"
    raw = options.get("transport") or {}
    if not isinstance(raw, Mapping):
        raise ConfigError("must be a mapping of transport settings", key=where)
    problems = []
    for key in raw:
        if key in _PASSWORD_KEYS:
            raise ConfigError("refusing a password in machine options (they end up in files and "
                              "logs); name an environment variable with password_env, or put it in "
                              "the config's credentials", key=f"{where}.{key}")
        if key not in OPTION_KEYS:
            close = closest(key, OPTION_KEYS)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"unknown WinRM option {key!r}{hint}")
    if problems:
        raise ConfigError("; ".join(problems) + f" (known: {', '.join(sorted(OPTION_KEYS))})",
                          key=where)
    reference = spec.reference if spec is not None else {}
    host = raw.get("host") or reference.get("address") or default_host
    if not host:
        raise ConfigError("no host to reach over WinRM; set machine_options.transport.host or use "
                          "a driver that records the machine's address", key=f"{where}.host")
    auth = raw.get("auth", "ntlm")
    username = raw.get("username", "Administrator")
    if password is None and raw.get("password_env"):
        name = raw["password_env"]
        password = os.environ.get(name)
        if password is None:
            raise ConfigError(f"environment variable {name} (named by password_env) is not set",
                              key=f"{where}.password_env")
    if password is None:
        urls = [u for u in (reference.get("driver_url"), f"winrm:{host}") if u]
        creds = config.credentials_for(*urls) if config is not None else {}
        for key in ("winrm_password", "password"):
            if creds.get(key):
                password = str(creds[key])
                break
    if password is None and auth != "kerberos":
        raise ConfigError(f"no password for {username}@{host} ({auth} auth); set password_env to "
                          "the name of an environment variable holding it, or put it in the "
                          f"config under credentials: {{'winrm:{host}': {{password: ...}}}}",
                          key=f"{where}.password_env")
    ca_bundle = raw.get("ca_bundle")
    if ca_bundle and config is not None:
        ca_bundle = os.path.join(config.base_dir, os.path.expanduser(str(ca_bundle)))
    thumbprint = raw.get("cert_thumbprint") or reference.get("cert_thumbprint")
    cert_trust = raw.get("cert_trust", "validate")
    if cert_trust not in ("validate", "first_use"):
        raise ConfigError("cert_trust must be validate or first_use", key=f"{where}.cert_trust")
    on_new_certificate = None
    if cert_trust == "first_use" and on_new_host_key is not None:
        scheme = raw.get("scheme") or ("https" if auth == "basic" else "http")
        port = int(raw.get("port") or DEFAULT_PORTS.get(scheme, 5986))
        on_new_certificate = _reporter(on_new_host_key, str(host), port)

    def number(key: str, default: float) -> Any:
        return raw.get(key, default)

    kwargs: dict[str, Any] = {}
    for key in ("port", "scheme", "path", "chunk_size", "proxy", "kerberos_hostname_override",
                "shell", "message_encryption"):
        if raw.get(key) is not None:
            kwargs[key] = raw[key]
    return WinRMTransport(
        str(host), username=username, password=password, auth=auth, ca_bundle=ca_bundle,
        cert_thumbprint=thumbprint, on_new_certificate=on_new_certificate,
        allow_unencrypted=bool(raw.get("allow_unencrypted", False)),
        kerberos_delegation=bool(raw.get("kerberos_delegation", False)),
        connect_timeout=number("connect_timeout", 10.0),
        operation_timeout=number("operation_timeout", 20.0),
        command_timeout=number("command_timeout", DEFAULT_COMMAND_TIMEOUT),
        transfer_timeout=number("transfer_timeout", 600.0),
        machine=spec.name if spec is not None else None, **kwargs)


def _reporter(report: HostKeyCallback, host: str, port: int) -> Callable[[str], None]:
    """The transport's first-use callback: hands the certificate to the caller's."""
    return lambda seen: report(NewHostKey(host=host, port=port, key=seen, kind="certificate"))
