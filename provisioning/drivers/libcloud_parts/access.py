"""SSH access for new nodes: the machine's key pair at the provider, a security group for SSH.

A private key named ``key_name`` (found through ``keys.py``, generated when it exists nowhere) is
imported as key pair ``KEYNAME-FPRINT``: the fingerprint suffix means a regenerated local key
never silently reuses an old provider key pair of the same name.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import TYPE_CHECKING, Any

from provisioning.drivers.libcloud_parts.windows import WINDOWS_KEY_BITS, require_rsa
from provisioning.errors import ConfigError
from provisioning.keys import ensure_private_key, find_private_key

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.config import Config
    from provisioning.drivers.libcloud_parts.providers import ProviderOps

__all__ = ["key_pair_name", "ensure_key_pair", "ensure_ssh_group", "default_key_directory"]


def default_key_directory(config: "Config") -> str:
    paths = config.private_key_paths
    return paths[0] if paths else os.path.join(config.base_dir, ".provisioning", "keys")


def key_pair_name(key_name: str, public_openssh: str) -> str:
    blob = base64.b64decode(public_openssh.split()[1])
    return f"{key_name}-{hashlib.sha256(blob).hexdigest()[:10]}"


def ensure_key_pair(ops: "ProviderOps", handler: "ActionHandler", config: "Config",
                    key_name: str, cache: dict[Any, Any], *, rsa: bool = False) -> str | None:
    """The provider key pair holding ``key_name``'s public key, imported if missing. None only
    under why-run when the key would first be generated. ``rsa`` (Windows nodes): generate an
    RSA key, and refuse an existing key of another type."""
    if ("key", key_name) in cache:
        return cache[("key", key_name)]
    try:
        key = find_private_key(config, key_name)
    except ConfigError:
        directory = default_key_directory(config)
        kind: dict[str, Any] = {"kind": "rsa", "bits": WINDOWS_KEY_BITS} if rsa else {}
        made = handler.perform_action(
            f"generate {'RSA ' if rsa else ''}private key {key_name} in {directory}",
            lambda: ensure_private_key(config, key_name, directory, **kind))
        if made is None:  # why-run
            handler.perform_action(f"import the new key {key_name} as a provider key pair")
            return None
        key = made
    if rsa:
        require_rsa(key)
    public = key.public_openssh
    name = key_pair_name(key_name, public)
    existing = cache.get("key_pairs")
    if existing is None:
        existing = cache["key_pairs"] = set(ops.key_pair_names())
    if name not in existing:
        def do_import() -> None:
            try:
                ops.import_key_pair(name, " ".join(public.split()[:2]))
            except Exception:
                if name not in ops.key_pair_names():  # not a race with another runner: fail
                    raise
        handler.perform_action(f"import public key {key_name} as key pair {name}", do_import)
        existing.add(name)
    cache[("key", key_name)] = name
    return name


def ensure_ssh_group(ops: "ProviderOps", handler: "ActionHandler", name: str, cidr: str,
                     cache: dict[Any, Any]) -> None:
    """Create or reuse security group ``name`` and make sure it lets SSH in from ``cidr``."""
    if ("group", name, cidr) in cache:
        return
    group_id, opened = ops.ssh_group_state(name, cidr)
    if group_id is None:
        def create() -> str:
            try:
                return ops.create_security_group(name)
            except Exception:
                found, _ = ops.ssh_group_state(name, cidr)  # another runner made it first
                if found is None:
                    raise
                return found
        group_id = handler.perform_action(f"create security group {name}", create)
        opened = False
    if not opened:
        def open_port() -> None:
            try:
                ops.open_ssh(group_id, cidr)  # type: ignore[arg-type]
            except Exception:
                if not ops.ssh_group_state(name, cidr)[1]:
                    raise
        handler.perform_action(f"open TCP 22 from {cidr} in security group {name}", open_port)
    cache[("group", name, cidr)] = True
