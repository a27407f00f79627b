"""SHA-256 of the small texts a command's start hashes (a run's key, the cluster file, a machine's
reference), without importing ``hashlib``.

``hashlib`` loads OpenSSL's digests: about 4 ms (12 M instructions) of every runner's start,
paid by N runners together on the same cores. CPython's own SHA-256 gives the same digests
and loads in a fraction of that. Bulk data (files sent to machines, images) keeps ``hashlib``:
OpenSSL's SHA-256 is several times faster per byte.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sha256_hex"]


def _implementation() -> Any:
    import importlib

    for module in ("_sha256", "_sha2"):  # CPython 3.11; 3.12 on
        try:
            return importlib.import_module(module).sha256
        except ImportError:
            continue
    from hashlib import sha256  # an interpreter without them: OpenSSL's

    return sha256


_SHA256 = _implementation()


def sha256_hex(data: bytes) -> str:
    """The hexadecimal SHA-256 digest of ``data`` (``hashlib.sha256(data).hexdigest()``)."""
    return str(_SHA256(data).hexdigest())
