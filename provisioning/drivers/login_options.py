"""How ``nspawn:``, ``docker:`` and ``libvirt:`` log in to the machines they boot: the key
authorized for root, the ``transport`` machine option's user and timeouts, and how long ready
and stop wait. One reading of those options for the three drivers."""

from __future__ import annotations

from typing import Any, Mapping

from provisioning.inputs.records import record

__all__ = ["LoginOptions", "login_options"]


@record(frozen=True)
class LoginOptions:
    """The fields each of those drivers' own option class starts with."""

    hostname: str | None
    key_name: str
    username: str
    sudo: bool
    connect_timeout: float
    command_timeout: float
    transfer_timeout: float
    ready_timeout: float
    stop_timeout: float


def login_options(machine_options: Mapping[str, Any], driver_options: Mapping[str, Any], *,
                  default_key: str, ready_timeout: float, stop_timeout: float) -> dict[str, Any]:
    """``LoginOptions``' fields from one machine's options; ``ready_timeout`` and
    ``stop_timeout`` come from the machine, else the driver options, else the defaults given."""
    transport = dict(machine_options.get("transport") or {})
    return {
        "hostname": machine_options.get("hostname"),
        "key_name": (machine_options.get("key_name") or transport.get("key_name")
                     or default_key),
        "username": transport.get("username", "root"),
        "sudo": bool(transport.get("sudo", False)),
        "connect_timeout": float(transport.get("connect_timeout", 10.0)),
        "command_timeout": float(transport.get("command_timeout", 600.0)),
        "transfer_timeout": float(transport.get("transfer_timeout", 600.0)),
        "ready_timeout": float(machine_options.get("ready_timeout")
                               or driver_options.get("ready_timeout") or ready_timeout),
        "stop_timeout": float(machine_options.get("stop_timeout")
                              or driver_options.get("stop_timeout") or stop_timeout),
    }
