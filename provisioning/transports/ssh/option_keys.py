"""The keys of ``machine_options["transport"]`` for SSH and their check: what the cluster loader
and the ssh driver validate before anything is written, without loading the transport itself
(``options.py`` builds the transport from the same keys)."""

from __future__ import annotations

from typing import Any, Mapping, cast

from provisioning.errors import ConfigError, ConfigProblem
from provisioning.inputs.schema import closest

__all__ = ["TRANSPORT_KEYS", "GATEWAY_KEYS", "check_transport_options"]

#: option key -> (accepted types, help); the SSH driver declares its option fields from this
TRANSPORT_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "kind": ((str,), "transport kind: ssh (default) or winrm"),
    "host": ((str,), "address or name of the machine"),
    "port": ((int,), "SSH port (22)"),
    "username": ((str,), "login user (root)"),
    "key_name": ((str,), "private key by name (config private_keys or private_key_paths)"),
    "password_env": ((str,), "environment variable holding the login password"),
    "sudo": ((bool,), "run changes through sudo -n (default: when username is not root)"),
    "gateway": ((dict,), "jump host: {host, port, username, key_name}"),
    "ssh_config": ((bool, str), "apply your OpenSSH client config: true or a path"),
    "use_agent": ((bool,), "offer keys from a running ssh-agent"),
    "known_hosts": ((str,), "verify host keys against this known_hosts file"),
    "host_key": ((str,), "pinned host key line (ssh-ed25519 AAAA...)"),
    "connect_timeout": ((int, float), "seconds to connect and log in (10)"),
    "command_timeout": ((int, float), "seconds one command may run (600)"),
    "transfer_timeout": ((int, float), "seconds one file transfer may take (600)"),
    "keepalive": ((int, float), "seconds between keepalives (15; 0: off)"),
}
GATEWAY_KEYS = ("host", "port", "username", "key_name", "password_env", "known_hosts", "host_key")


def check_transport_options(options: Mapping[str, Any], where: str) -> None:
    """Raise ConfigError naming every unknown or ill-typed key of a transport mapping."""
    problems: list[ConfigProblem] = []
    if not isinstance(options, Mapping):
        raise ConfigError(f"must be a mapping of transport options, got {type(options).__name__}",
                          key=where)
    for key, value in options.items():
        if key not in TRANSPORT_KEYS:
            close = closest(key, TRANSPORT_KEYS)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(TRANSPORT_KEYS)}"
            problems.append(ConfigProblem(f"unknown transport option {key!r}; {hint}",
                                          key=f"{where}.{key}"))
            continue
        types, help_text = TRANSPORT_KEYS[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            problems.append(ConfigProblem(f"expected {'/'.join(t.__name__ for t in types)} "
                                          f"({help_text}), got {value!r}", key=f"{where}.{key}"))
        elif key == "port" and not 0 < cast(int, value) < 65536:
            problems.append(ConfigProblem(f"port must be 1-65535, got {value}", key=f"{where}.{key}"))
        elif key.endswith("_timeout") and cast(float, value) <= 0:
            problems.append(ConfigProblem("must be more than 0 seconds", key=f"{where}.{key}"))
    gateway = options.get("gateway")
    if isinstance(gateway, Mapping):
        for key in gateway:
            if key not in GATEWAY_KEYS:
                problems.append(ConfigProblem(f"unknown gateway option {key!r}; known: "
                                              f"{', '.join(GATEWAY_KEYS)}",
                                              key=f"{where}.gateway.{key}"))
        if "host" not in gateway:
            problems.append(ConfigProblem("a gateway needs a host", key=f"{where}.gateway.host"))
    if problems:
        raise ConfigError(problems=problems)
