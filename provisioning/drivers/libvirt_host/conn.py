"""The libvirt-python boundary: importing it lazily, opening connections, and mapping its errors.

Nothing outside ``libvirt_host`` and the driver module touches ``libvirt``; every
``libvirtError`` is translated by ``mapped()`` (one table, most specific code first, always
``raise ... from``) into the one error hierarchy of ``provisioning.errors``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

from provisioning.drivers.libvirt_host.host import PROVIDER
from provisioning.errors import ConnectError, MachineNotFound, MissingExtra, ProviderError

__all__ = ["libvirt_module", "open_connection", "mapped", "ERROR_TABLE", "is_local_uri",
           "is_alive"]

_lock = threading.Lock()
_quiet = False

#: libvirt error code name -> (our class, what to tell the user); first match wins
ERROR_TABLE: tuple[tuple[str, type[Exception], str], ...] = (
    ("VIR_ERR_NO_DOMAIN", MachineNotFound, "the domain does not exist (destroyed behind our "
                                           "back?); run up to re-create the machine"),
    ("VIR_ERR_NO_DOMAIN_SNAPSHOT", MachineNotFound, "no such snapshot; list them with "
                                                    "converge snapshot list"),
    ("VIR_ERR_NO_CONNECT", ConnectError, "cannot reach libvirt; is libvirtd (or virtqemud) "
                                         "running and is the URI right?"),
    ("VIR_ERR_AUTH_FAILED", ConnectError, "libvirt refused our credentials; check the URI's "
                                          "user and libvirt's access rules"),
    ("VIR_ERR_OPERATION_INVALID", ProviderError, "libvirt refused this in the domain's "
                                                 "current state"),
)


def libvirt_module() -> Any:
    """``import libvirt``, or MissingExtra naming the pip extra."""
    global _quiet
    try:
        import libvirt
    except ImportError as exc:
        raise MissingExtra("the libvirt: driver", "libvirt", "libvirt-python") from exc
    with _lock:
        if not _quiet:  # libvirt prints every error to stderr unless a handler takes them
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _quiet = True
    return libvirt


def is_local_uri(uri: str) -> bool:
    """qemu:///system, qemu:///session: no host part, no transport."""
    scheme, _, rest = uri.partition("://")
    return "+" not in scheme and rest.startswith("/")


@contextlib.contextmanager
def mapped(what: str, *, machine: str | None = None) -> Iterator[None]:
    """Translate a libvirtError raised inside into our error for ``what`` (a short phrase)."""
    libvirt = libvirt_module()
    try:
        yield
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        message = exc.get_error_message() or str(exc)
        for name, cls, hint in ERROR_TABLE:
            if code == getattr(libvirt, name, object()):
                text = f"{what}: {message}; {hint}"
                if cls is ConnectError:
                    raise ConnectError(text, host=what, machine=machine) from exc
                if cls is MachineNotFound:
                    raise MachineNotFound(text, machine=machine) from exc
                raise ProviderError(text, provider=PROVIDER, provider_message=message,
                                    machine=machine) from exc
        raise ProviderError(f"{what}: libvirt said: {message}", provider=PROVIDER,
                            provider_message=message, machine=machine) from exc


def is_alive(conn: Any) -> bool:
    try:  # a dead connection raises instead of answering
        return bool(conn.isAlive())
    except Exception:
        return False


def open_connection(uri: str) -> Any:
    libvirt = libvirt_module()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        message = exc.get_error_message() or str(exc)
        raise ConnectError(f"cannot connect to libvirt at {uri}: {message}; start libvirtd "
                           "(or virtqemud) there, or fix the URI (libvirt:qemu:///system)",
                           host=uri) from exc
