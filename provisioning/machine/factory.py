"""machine_for: the Machine a driver hands back, picked by ``machine_options["transport"]["kind"]``.

``ssh`` (the default) gives an ``SSHTransport`` inside a ``UnixMachine``; ``winrm`` gives a
``WinRMTransport`` inside a ``WindowsMachine``. A host key (or WinRM certificate) seen on first
use is reported by the transport; ``pin_on_first_use`` records it in the machine's reference and
saves it as an action, so the transport never touches state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from provisioning.errors import ConfigError
from provisioning.keys import fingerprint
from provisioning.machine.base import Machine
from provisioning.machine.unix import UnixMachine
from provisioning.machine.windows import WindowsMachine
from provisioning.transports.base import HostKeyCallback, NewHostKey
from provisioning.transports.ssh import ssh_transport_from_options
from provisioning.transports.winrm import winrm_transport_from_options

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.config import Config
    from provisioning.spec import MachineSpec

__all__ = ["machine_for", "pin_on_first_use", "TRANSPORT_KINDS"]

TRANSPORT_KINDS = ("ssh", "winrm")


def pin_on_first_use(spec: "MachineSpec", action_handler: "ActionHandler | None", *,
                     reason: str = "first connection") -> HostKeyCallback:
    """The callback that pins a first-seen host key (or certificate) in ``spec.reference`` and
    saves the spec, as an action (so why-run reports it and saves nothing). ``reason`` says in
    the event why the key is trusted."""

    def pin(seen: NewHostKey) -> None:
        reference = spec.reference
        if seen.kind == "certificate":
            reference["cert_thumbprint"] = seen.key
            text = f"trust WinRM certificate of {seen.host} on first use (SHA-256 {seen.key})"
            data: dict[str, Any] = {"host": seen.host, "port": seen.port, "sha256": seen.key}
        else:
            if seen.gateway:
                reference.setdefault("gateway_host_keys", {})[f"{seen.host}:{seen.port}"] = seen.key
            else:
                reference["host_key"] = seen.key
            text = (f"pin host key {fingerprint(seen.key)} of {seen.host}:{seen.port} "
                    f"({'gateway, ' if seen.gateway else ''}{reason})")
            data = {"host": seen.host, "port": seen.port, "fingerprint": fingerprint(seen.key),
                    "reason": reason}

        def save() -> None:
            if spec.reference.get("driver_url"):
                spec.save()

        if action_handler is not None:
            action_handler.perform_action(text, save, machine=spec.name, data=data)
        else:
            save()

    return pin


def machine_for(spec: "MachineSpec", machine_options: Mapping[str, Any], config: "Config", *,
                action_handler: "ActionHandler | None" = None,
                sock_factory: Callable[[float], Any] | None = None,
                default_host: str | None = None, password: str | None = None,
                on_new_host_key: HostKeyCallback | None = None) -> Machine:
    """Build (without connecting) the machine a driver hands back. ``password`` (winrm only):
    one the driver fetched from the provider, kept in memory by the transport.
    ``on_new_host_key`` defaults to ``pin_on_first_use(spec, action_handler)``."""
    transport_options = machine_options.get("transport") or {}
    if not isinstance(transport_options, Mapping):
        raise ConfigError("must be a mapping of transport options", key="machine_options.transport",
                          machine=spec.name)
    pin = on_new_host_key or pin_on_first_use(spec, action_handler)
    kind = transport_options.get("kind", "ssh")
    if kind == "ssh":
        transport = ssh_transport_from_options(machine_options, spec, config, on_new_host_key=pin,
                                               sock_factory=sock_factory, default_host=default_host)
        return UnixMachine(spec.name, transport, action_handler=action_handler, spec=spec,
                           options={"sudo": transport.sudo})
    if kind == "winrm":
        winrm = winrm_transport_from_options(machine_options, spec, config, on_new_host_key=pin,
                                             default_host=default_host, password=password)
        return WindowsMachine(spec.name, winrm, action_handler=action_handler, spec=spec)
    raise ConfigError(f"unknown transport kind {kind!r}; use one of {', '.join(TRANSPORT_KINDS)}",
                      key="machine_options.transport.kind", machine=spec.name)
