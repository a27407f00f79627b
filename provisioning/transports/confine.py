"""Paths of a machine whose whole filesystem is one directory of this host (``fake:``).

``/etc/motd`` is ``ROOT/etc/motd``, ``../../x`` is ``ROOT/x``: ``..`` never climbs above the
root, as on a real machine. A symbolic link inside the root that points outside it is refused
rather than followed, so no file step can write on the real host.
"""

from __future__ import annotations

import os
import posixpath

from provisioning.errors import TransportError

__all__ = ["confined_path"]


def confined_path(root: str, path: str, *, host: str | None = None) -> str:
    """The host path of ``path`` on the machine rooted at ``root`` (relative paths start at
    the root). Raises TransportError when a symbolic link would lead outside the root."""
    if "\x00" in path:
        raise TransportError(f"path {path!r} contains a NUL byte", host=host)
    root = os.path.realpath(root)
    inside = posixpath.normpath("/" + path).lstrip("/")
    full = os.path.join(root, inside) if inside else root
    probe = full
    while not os.path.lexists(probe) and probe != root:
        probe = os.path.dirname(probe)
    real = os.path.realpath(probe)
    if real != root and not real.startswith(root + os.sep):
        raise TransportError(f"path {path!r} leads outside the machine's root {root} (through "
                             f"the symbolic link {probe}); fake machines cannot touch the host",
                             host=host)
    return full
