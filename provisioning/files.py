"""Writing files that hold secrets or state: atomically, and private from the first byte."""

from __future__ import annotations

import os

__all__ = ["write_private_file"]


def write_private_file(path: str, data: bytes, *, create_dirs: bool = True) -> None:
    """Write a secret atomically with mode 0600 from the first byte (parent directories made
    0700 when ``create_dirs``)."""
    if create_dirs:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
