"""Readying Windows nodes: the machine key must be RSA, and the Administrator password comes from
the config when given there, else from the provider (EC2: ``GetPasswordData``).

EC2 encrypts the password Windows generates at first boot with the RSA public key of the node's
key pair (PKCS#1 v1.5) and serves it base64-encoded, empty until the node's launch agent has
posted it (a few minutes after boot). The decrypted password lives only in memory: it is handed
to the WinRM transport and never put into the reference, state, events or logs.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from provisioning.errors import ConfigError, ProviderError, UnsupportedOperation
from provisioning.keys import find_private_key

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.config import Config
    from provisioning.drivers.libcloud_parts.providers import ProviderOps
    from provisioning.keys import PrivateKey
    from provisioning.spec import MachineSpec

__all__ = ["WINDOWS_KEY_NAME", "transport_kind", "require_rsa", "password_configured",
           "decrypt_password_data", "fetch_windows_password"]

#: default key_name for Windows nodes: an RSA key, apart from the (ed25519) SSH default key
WINDOWS_KEY_NAME = "provisioning-rsa"
#: EC2 documents 2048-bit RSA keys for Windows instances
WINDOWS_KEY_BITS = 2048


def transport_kind(options: Mapping[str, Any]) -> str:
    transport = options.get("transport") or {}
    return str(transport.get("kind", "ssh")) if isinstance(transport, Mapping) else "ssh"


def require_rsa(key: "PrivateKey", machine: str | None = None) -> "PrivateKey":
    """Windows nodes need an RSA key pair (the provider encrypts the password with it)."""
    if key.kind != "rsa":
        raise ConfigError(
            f"key {key.name!r} is {key.kind}, but a Windows node (transport kind winrm) needs an "
            "RSA key: the provider encrypts the Administrator password with its public key and "
            f"EC2 refuses other key types for Windows; name an RSA key in key_name, or leave "
            f"key_name unset to use (and generate) {WINDOWS_KEY_NAME!r}",
            key="machine_options.key_name", machine=machine)
    return key


def password_configured(transport: Mapping[str, Any], spec: "MachineSpec", config: "Config",
                        host: str | None) -> bool:
    """True when the user supplies the password (``password_env`` or config credentials under
    the driver URL or ``winrm:HOST``): then it wins and nothing is fetched. Mirrors where
    ``winrm_transport_from_options`` looks."""
    if transport.get("password_env"):
        return True
    host = transport.get("host") or host
    urls = [u for u in (spec.reference.get("driver_url"), f"winrm:{host}" if host else None) if u]
    found = config.credentials_for(*urls) if config is not None and urls else {}
    return any(found.get(key) for key in ("winrm_password", "password"))


def decrypt_password_data(password_data: str, key: "PrivateKey") -> str:
    """The password inside EC2's base64 ``PasswordData`` (RSA PKCS#1 v1.5 with ``key``)."""
    from cryptography.hazmat.primitives.asymmetric import padding

    require_rsa(key)
    try:
        encrypted = base64.b64decode("".join(password_data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderError(f"the provider's password data is not base64 ({exc})") from exc
    try:
        return key.key.decrypt(encrypted, padding.PKCS1v15()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(
            f"cannot decrypt the node's Windows password with key {key.name!r} "
            f"({key.path or 'from private_keys'}): the node's key pair holds a different public "
            "key; set key_name to the private key of the node's key pair, or give the password "
            "with password_env / config credentials", key="machine_options.key_name") from None


def fetch_windows_password(ops: "ProviderOps", node_id: str, key: "PrivateKey", *,
                           deadline: float, interval: float, sleep: Callable[[float], None],
                           errors: Callable[[str], Any],
                           handler: "ActionHandler | None" = None,
                           machine: str | None = None) -> str:
    """Ask the provider until it has the password (it posts it minutes after boot), then
    decrypt it. Past ``deadline`` a ``ProviderError`` says how long it waited."""
    if not ops.supports_password:
        raise UnsupportedOperation(
            f"libcloud's {ops.url.provider} driver offers no way to fetch a Windows node's "
            "password; set transport.password_env, or put the password in the config's "
            "credentials (winrm_password)", machine=machine)
    require_rsa(key, machine)
    started = time.monotonic()
    reported = False
    while True:
        with errors(f"get the Windows password data of node {node_id}"):
            data = ops.password_data(node_id)
        if data.strip():
            password = decrypt_password_data(data, key)
            if handler is not None:
                handler.report_progress(
                    f"fetched the Administrator password of node {node_id} from "
                    f"{ops.url.provider} (kept in memory only)", data={"node_id": node_id})
            return password
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProviderError(
                f"the Windows password of node {node_id} is still not available after "
                f"{time.monotonic() - started:.0f} s (Windows posts it a few minutes after the "
                "first boot, and never for images that do not generate one); raise wait_timeout, "
                "or give the password with password_env / config credentials",
                provider=ops.url.provider, machine=machine)
        if not reported and handler is not None:
            handler.report_progress(
                f"waiting for node {node_id} to post its Windows password",
                data={"node_id": node_id})
            reported = True
        sleep(min(interval, remaining))


def provider_password(driver: Any, spec: "MachineSpec", opts: Mapping[str, Any],
                      transport: Mapping[str, Any], address: str,
                      action_handler: "ActionHandler | None", deadline: float | None) -> str | None:
    """The Administrator password from the provider, or None when the config supplies one
    (password_env or credentials win: the transport reads them itself). Memory only.
    ``driver``: the ``LibcloudDriver`` asking (its config, provider ops, poll interval)."""
    if password_configured(transport, spec, driver.config, address):
        return None
    if not opts.get("key_name"):
        raise ConfigError("a Windows node's password is decrypted with the private key of its "
                          "key pair: set key_name (or give the password with "
                          "transport.password_env or config credentials)",
                          key="machine_options.key_name", machine=spec.name)
    key = find_private_key(driver.config, str(opts["key_name"]))
    return fetch_windows_password(
        driver.ops, str(spec.reference["node_id"]), key,
        deadline=deadline if deadline is not None else time.monotonic(),
        interval=driver._interval, sleep=driver.sleep,
        errors=lambda action: driver._errors(action, spec), handler=action_handler,
        machine=spec.name)
