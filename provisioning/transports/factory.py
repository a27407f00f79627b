"""machine_for: the Machine for a spec, picked by ``machine_options["transport"]["kind"]``.

``ssh`` (the default) gives an ``SSHTransport`` inside a ``UnixMachine``; ``winrm`` gives a
``WinRMTransport`` inside a ``WindowsMachine``. Each kind's modules are imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from provisioning.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.config import Config
    from provisioning.machine.base import Machine
    from provisioning.spec import MachineSpec

__all__ = ["machine_for", "TRANSPORT_KINDS"]

TRANSPORT_KINDS = ("ssh", "winrm")


def machine_for(spec: "MachineSpec", machine_options: Mapping[str, Any], config: "Config", *,
                action_handler: "ActionHandler | None" = None,
                sock_factory: Callable[[float], Any] | None = None,
                default_host: str | None = None, password: str | None = None) -> "Machine":
    """Build (without connecting) the machine a driver hands back. ``password`` (winrm only):
    one the driver fetched from the provider, kept in memory by the transport."""
    transport_options = machine_options.get("transport") or {}
    if not isinstance(transport_options, Mapping):
        raise ConfigError("must be a mapping of transport options", key="machine_options.transport",
                          machine=spec.name)
    kind = transport_options.get("kind", "ssh")
    if kind == "ssh":
        from provisioning.machine.unix import UnixMachine
        from provisioning.transports.ssh_options import ssh_transport_from_options

        transport = ssh_transport_from_options(machine_options, spec, config,
                                               action_handler=action_handler,
                                               sock_factory=sock_factory, default_host=default_host)
        return UnixMachine(spec.name, transport, action_handler=action_handler, spec=spec,
                           options={"sudo": transport.sudo})
    if kind == "winrm":
        from provisioning.machine.windows import WindowsMachine  # type: ignore[import-not-found]
        from provisioning.transports.winrm import \
            winrm_transport_from_options  # type: ignore[import-not-found]

        transport = winrm_transport_from_options(machine_options, spec, config,
                                                 action_handler=action_handler,
                                                 default_host=default_host,
                                                 password=password)
        return WindowsMachine(spec.name, transport, action_handler=action_handler, spec=spec)
    raise ConfigError(f"unknown transport kind {kind!r}; use one of {', '.join(TRANSPORT_KINDS)}",
                      key="machine_options.transport.kind", machine=spec.name)
