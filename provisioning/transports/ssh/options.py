"""Building an ``SSHTransport`` (and its gateways) from ``machine_options["transport"]``.

Option keys (all optional but a host from somewhere)::

    transport:
      host: 10.0.0.5            # else the driver's default_host, else reference["host"]
      port: 22
      username: root
      key_name: deploy          # a private key by name (config private_keys / private_key_paths)
      password_env: HOST_PW     # an environment variable holding the password (never in state)
      sudo: true                # default: true when username is not root
      gateway: {host: bastion, port: 22, username: jump, key_name: deploy}
      ssh_config: true          # or a path: apply HostName/Port/User/IdentityFile/ProxyJump
      use_agent: false          # also offer keys from $SSH_AUTH_SOCK
      known_hosts: ~/k          # verify against this file instead of pinning in state
      host_key: "ssh-ed25519 AAAA..."   # pin explicitly (else the reference's, else first use)
      connect_timeout: 10
      command_timeout: 600
      transfer_timeout: 600
      keepalive: 15

Precedence: explicit options > ``ssh_config`` > defaults. The pinned key is read from
``reference["host_key"]`` (gateways' from ``reference["gateway_host_keys"]["host:port"]``). A key
seen on first use is only *reported*, to the ``on_new_host_key`` callback the caller gives: the
driver or provisioner records and saves it (``provisioning.machine.factory.pin_on_first_use``);
without a callback, an unknown key is refused.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

from provisioning.errors import ConfigError
from provisioning.keys import find_private_key, load_private_key, read_key_file
from provisioning.transports.base import HostKeyCallback, NewHostKey
from provisioning.transports.ssh.option_keys import GATEWAY_KEYS, TRANSPORT_KEYS, check_transport_options
from provisioning.transports.ssh.transport import SSHTransport

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.config import Config
    from provisioning.keys import PrivateKey
    from provisioning.spec import MachineSpec

__all__ = ["ssh_transport_from_options", "check_transport_options", "TRANSPORT_KEYS",
           "GATEWAY_KEYS", "ssh_config_lookup"]

def ssh_config_lookup(setting: bool | str, host: str) -> dict[str, Any]:
    """What the user's OpenSSH client config says for ``host`` (``setting``: True for
    ~/.ssh/config, or a path). Only HostName, Port, User, IdentityFile and ProxyJump matter."""
    import paramiko

    path = os.path.expanduser("~/.ssh/config" if setting is True else str(setting))
    if not os.path.isfile(path):
        if setting is True:
            return {}
        raise ConfigError(f"ssh_config file {path} does not exist", key="transport.ssh_config")
    try:
        found = paramiko.SSHConfig.from_path(path).lookup(host)
    except (paramiko.ssh_exception.ConfigParseError, ValueError, OSError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}", key="transport.ssh_config") from exc
    out: dict[str, Any] = {}
    if found.get("hostname") and found["hostname"] != host:
        out["host"] = found["hostname"]
    if found.get("port"):
        out["port"] = int(found["port"])
    if found.get("user"):
        out["username"] = found["user"]
    if found.get("identityfile"):
        out["identity_files"] = [os.path.expanduser(p) for p in found["identityfile"]]
    if found.get("proxyjump") and found["proxyjump"].lower() != "none":
        out["proxyjump"] = found["proxyjump"]
    return out


def _parse_jump(text: str) -> dict[str, Any]:
    """``user@host:port`` (one ProxyJump hop) -> options."""
    user, _, rest = text.rpartition("@")
    host, port = rest, None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else None
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    out: dict[str, Any] = {"host": host}
    if user:
        out["username"] = user
    if port:
        out["port"] = int(port)
    return out


class _Builder:
    """Shared state for one machine's transport chain (target and its gateways)."""

    def __init__(self, spec: "MachineSpec", config: "Config",
                 on_new_host_key: HostKeyCallback | None, ssh_config: bool | str | None,
                 known_hosts: str | None, defaults: Mapping[str, Any]) -> None:
        self.spec = spec
        self.config = config
        self.on_new_host_key = on_new_host_key
        self.ssh_config = ssh_config
        self.known_hosts = known_hosts
        self.defaults = defaults

    def key(self, key_name: str | None, identity_files: list[str]) -> "PrivateKey | None":
        if key_name:
            return find_private_key(self.config, key_name)
        for path in identity_files:
            if os.path.lexists(path):
                return load_private_key(read_key_file(path, name=os.path.basename(path)),
                                        name=os.path.basename(path), path=path)
        return None

    def password(self, env_name: str | None, where: str) -> str | None:
        if not env_name:
            return None
        if env_name not in os.environ:
            raise ConfigError(f"environment variable {env_name} (the password) is not set",
                              key=f"{where}.password_env")
        return os.environ[env_name]

    def reporter(self, host: str, port: int, gateway: bool) -> Callable[[str], None] | None:
        """The transport's first-use callback for one hop: hands the key to the caller's."""
        report = self.on_new_host_key
        if report is None:
            return None
        return lambda line: report(NewHostKey(host=host, port=port, key=line, gateway=gateway))

    def build(self, options: Mapping[str, Any], *, where: str, gateway_hop: bool,
              sock_factory: Any = None, default_host: str | None = None,
              via: SSHTransport | None = None, depth: int = 0,
              fallback_key: "PrivateKey | None" = None) -> SSHTransport:
        if depth > 8:
            raise ConfigError("gateway chain is more than 8 hops deep (a ProxyJump loop?)",
                              key=f"{where}.gateway")
        reference = self.spec.reference
        host = options.get("host") or default_host or (None if gateway_hop else reference.get("host"))
        if not host:
            raise ConfigError("no host to connect to: set machine_options.transport.host",
                              key=f"{where}.host", machine=self.spec.name)
        found = ssh_config_lookup(self.ssh_config, host) if self.ssh_config else {}
        hostname = found.get("host", host)  # ssh_config's HostName resolves an alias
        port = int(options.get("port") or found.get("port") or 22)
        username = options.get("username") or found.get("username") or \
            self.defaults.get("username", "root")
        private_key = self.key(options.get("key_name"), found.get("identity_files", []))
        if private_key is None and gateway_hop:
            private_key = fallback_key  # a jump host without its own key uses the target's
        password = self.password(options.get("password_env"), where)
        if gateway_hop:
            pinned = options.get("host_key") or \
                reference.get("gateway_host_keys", {}).get(f"{hostname}:{port}")
        else:
            pinned = options.get("host_key") or reference.get("host_key")
        known_hosts = options.get("known_hosts") or self.known_hosts
        gateway = via
        gateway_options = options.get("gateway") if not gateway_hop else None
        if gateway is None and gateway_options:
            gateway = self.build(dict(gateway_options), where=f"{where}.gateway", gateway_hop=True,
                                 depth=depth + 1, fallback_key=private_key or fallback_key)
        elif gateway is None and found.get("proxyjump"):
            for hop in found["proxyjump"].split(","):
                gateway = self.build(_parse_jump(hop.strip()), where=f"{where}.ssh_config.ProxyJump",
                                     gateway_hop=True, via=gateway, depth=depth + 1,
                                     fallback_key=private_key or fallback_key)
        return SSHTransport(
            hostname, port, username, private_key=private_key, password=password,
            host_key=pinned, known_hosts=known_hosts,
            on_new_host_key=None if (pinned or known_hosts) else
            self.reporter(hostname, port, gateway_hop),
            sock_factory=sock_factory if gateway is None else None, gateway=gateway,
            owns_gateway=gateway is not None,
            connect_timeout=float(self.defaults.get("connect_timeout", 10.0)),
            command_timeout=float(self.defaults.get("command_timeout", 600.0)),
            transfer_timeout=float(self.defaults.get("transfer_timeout", 600.0)),
            keepalive=float(self.defaults.get("keepalive", 15.0)),
            use_agent=bool(self.defaults.get("use_agent", False)),
            machine=self.spec.name,
            sudo=bool(self.defaults.get("sudo", username != "root")) if not gateway_hop else False,
        )


def ssh_transport_from_options(options: Mapping[str, Any], spec: "MachineSpec", config: "Config",
                               *, on_new_host_key: HostKeyCallback | None = None,
                               sock_factory: Callable[[float], Any] | None = None,
                               default_host: str | None = None) -> SSHTransport:
    """The transport for one machine from ``machine_options`` (its ``transport`` mapping), the
    pinned key in ``spec.reference["host_key"]`` and the config's keys. ``spec`` is only read.
    A key seen on first use goes to ``on_new_host_key`` (without it, the key is refused)."""
    where = "machine_options.transport"
    transport_options = dict(options.get("transport") or {})
    check_transport_options(transport_options, where)
    builder = _Builder(spec, config, on_new_host_key, transport_options.get("ssh_config"),
                       transport_options.get("known_hosts"), transport_options)
    return builder.build(transport_options, where=where, gateway_hop=False,
                         sock_factory=sock_factory, default_host=default_host)
