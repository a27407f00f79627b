"""WinRM plumbing: loading pywinrm, certificate fingerprints, and the requests adapter that
gives every request our connect timeout and checks a pinned certificate on its own connection."""

from __future__ import annotations

import hashlib
import socket
import ssl
from typing import Any

from provisioning.errors import ConfigError, MissingExtra

__all__ = ["import_pywinrm", "certificate_thumbprints", "normalize_thumbprint", "peer_certificate",
           "adapter_class"]


def import_pywinrm() -> Any:
    try:
        import winrm.exceptions  # noqa: F401
        import winrm.protocol
    except ImportError as exc:
        raise MissingExtra("the WinRM transport", "winrm", "pywinrm") from exc
    return winrm


def certificate_thumbprints(der: bytes) -> dict[str, str]:
    """SHA-1 (what Windows shows as ``Thumbprint``) and SHA-256 of a DER certificate."""
    return {"sha1": hashlib.sha1(der).hexdigest().upper(),
            "sha256": hashlib.sha256(der).hexdigest().upper()}


def normalize_thumbprint(value: str) -> str:
    text = "".join(ch for ch in str(value) if ch not in ": \t").lower()
    if len(text) not in (40, 64) or any(ch not in "0123456789abcdef" for ch in text):
        raise ConfigError(f"cert_thumbprint must be a SHA-1 (40 hex digits, as Windows shows it) or "
                          f"SHA-256 (64 hex digits) certificate fingerprint; got {value!r}",
                          key="machine_options.transport.cert_thumbprint")
    return text


def peer_certificate(host: str, port: int, timeout: float) -> bytes | None:
    """The DER certificate the endpoint presents, fetched without trusting it (for messages
    and for trust on first use)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


_ADAPTER_CLASS: Any = None


def adapter_class() -> Any:
    """requests HTTPAdapter giving every request our connect timeout and, when pinned,
    checking the certificate's fingerprint on the very connection that carries the request."""
    global _ADAPTER_CLASS
    if _ADAPTER_CLASS is None:
        from requests.adapters import HTTPAdapter

        class _WinRMAdapter(HTTPAdapter):
            def __init__(self, connect_timeout: float, fingerprint: str | None) -> None:
                self._connect_timeout = connect_timeout
                self._fingerprint = fingerprint
                super().__init__()

            def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
                if self._fingerprint:
                    pool_kwargs["assert_fingerprint"] = self._fingerprint
                super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

            def send(self, request, stream=False, timeout=None, verify=True, cert=None,
                     proxies=None):
                read = timeout[1] if isinstance(timeout, tuple) else timeout
                return super().send(request, stream=stream, timeout=(self._connect_timeout, read),
                                    verify=verify, cert=cert, proxies=proxies)

        _ADAPTER_CLASS = _WinRMAdapter
    return _ADAPTER_CLASS
