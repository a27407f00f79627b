"""Machine images of the nspawn: driver: a converged builder machine's layer, frozen.

A builder machine boots on an overlay of its base image like any machine; everything converge
changed is in its upper layer. Freezing stops it, moves that layer (a rename: no copy) to
``DIR/machine-images/NAME-TOKEN/layer``, strips what belongs to one machine (host keys,
machine-id, hostname, authorized_keys, apt lists and caches, logs) and records the lower chain in
``image.json``: ``[layer, *the builder's lower layers]``. Machines booted from the image get
``lowerdir=layer:base`` and their own upper layer, as today: nothing is copied per machine.
Whiteouts and opaque directories in the layer keep working as a lower layer (overlayfs reads
them in every lower layer).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from typing import Any

__all__ = ["IMAGES_DIR", "MANIFEST", "freeze", "manifest", "is_image_dir", "remove"]

IMAGES_DIR = "machine-images"
MANIFEST = "image.json"
#: what belongs to the builder machine, not to the image (paths inside the layer)
_MACHINE_OWN = ("etc/ssh/ssh_host_*", "etc/machine-id", "var/lib/dbus/machine-id",
                "etc/hostname", "etc/hosts", "root/.ssh/authorized_keys",
                "var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                "var/log/journal/*", "var/log/apt/*", "tmp/*", "var/tmp/*", "run/*")


def is_image_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST))


def manifest(image_dir: str) -> dict[str, Any] | None:
    """The image's recorded facts (name, lowers, base, built_at), or None when it is gone."""
    try:
        with open(os.path.join(image_dir, MANIFEST), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def freeze(upper: str, image_dir: str, lowers: list[str], **facts: Any) -> list[str]:
    """Move a stopped machine's upper layer into ``image_dir`` as the image's top layer; return
    the image's lower chain (top first)."""
    os.makedirs(image_dir, exist_ok=True)
    layer = os.path.join(image_dir, "layer")
    os.rename(upper, layer)
    for pattern in _MACHINE_OWN:
        for path in glob.glob(os.path.join(layer, pattern)):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
    chain = [layer, *lowers]
    body = dict(facts, lowers=chain, built_at=time.time())
    temporary = os.path.join(image_dir, MANIFEST + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(body, handle, indent=1)
    os.replace(temporary, os.path.join(image_dir, MANIFEST))
    return chain


def remove(image_dir: str) -> None:
    """Delete the image directory (the manifest first, so a half-deleted image is never used)."""
    try:
        os.unlink(os.path.join(image_dir, MANIFEST))
    except FileNotFoundError:
        pass
    shutil.rmtree(image_dir, ignore_errors=True)
