"""The ``ssh:`` driver: machines that already exist and are reached over SSH (bare metal,
pre-made VMs), in the spirit of chef-provisioning-ssh.

URL: ``ssh:`` or ``ssh:POOL`` (a name for a group of hosts; letters, digits, ``.``, ``_``, ``-``).
The machine is named by ``machine_options.transport`` (host, port, username, key_name, ...).

Built on the warehouse hooks (``provisioning.driver.resources``), which own why-run, the fault
points and the save of the reference:

- allocate creates nothing: ``create_resource`` returns where the machine is (host, port,
  username, key name, jump host) and the contract saves it. A changed address is reported and
  re-recorded (``compare_with_wish``), and the pinned host key of the old address is dropped
  (it belongs to another machine).
- ready waits (the contract's ``wait_for_machine``: ``ready_timeout``, with backoff) until the
  host accepts SSH. "Not reachable yet" is retried; a refused key or a changed host key fails
  at once. Whether a host runs cannot be told without reaching it: its state is "unknown".
- ``stop_machine`` shuts the host down only when ``allow_shutdown`` is set (it is someone else's
  box); otherwise it reports that it left it running.
- ``destroy_machine`` forgets the machine, after running ``cleanup_commands`` if any. The host
  itself is left as it is.
- ``import_machine`` (``converge import NAME HOST[:PORT]``) records a host that accepts TCP
  connections on its SSH port, with the user and key of the machine's transport options; its
  host key is pinned at the first connection, as for any host this driver registers.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from provisioning.driver import Capabilities, Driver
from provisioning.driver.options import OptionField
from provisioning.errors import ConfigError, ConfigProblem, InvalidDriverURL, MachineNotFound, TransportError
from provisioning.machine.factory import machine_for
from provisioning.transports.ssh.option_keys import TRANSPORT_KEYS, check_transport_options

__all__ = ["SSHDriver"]

_POOL = re.compile(r"^[A-Za-z0-9._-]*$")
#: what the reference records about where the machine is (and the jump host, if any)
_WHERE = ("host", "port", "username", "key_name", "gateway")
#: the transport keys that give a way to log in
_LOGINS = ("key_name", "password_env", "use_agent", "ssh_config")


def _transport_fields() -> tuple[OptionField, ...]:
    kinds = {int: "int", float: "float", bool: "bool", str: "str", dict: "dict"}
    fields = []
    for key, (types, help_text) in TRANSPORT_KEYS.items():
        kind = "float" if float in types else (kinds[types[0]] if len(types) == 1 else "any")
        fields.append(OptionField(f"transport.{key}", type=kind, help=help_text,
                                  required=key == "host"))
    return tuple(fields)


class SSHDriver(Driver):
    scheme = "ssh"
    # existing hosts: nothing is created, so a crash leaves nothing behind; a host that vanished
    # cannot be told apart from one that is down, so "lost" is not detected
    capabilities = Capabilities(connectable=True, stoppable=True, cross_process=True,
                                crash_safe=True, detects_lost=False,
                                crash_safe_destroy=True, imports=True)
    driver_option_fields = (
        OptionField("allow_shutdown", type="bool", default=False,
                    help="let stop shut hosts of this pool down"),
        OptionField("ready_timeout", type="float", default=120.0,
                    help="seconds ready waits for SSH"),
    )
    machine_option_fields = (
        OptionField("transport", type="dict", required=True,
                    help="where and how to reach the host (host, port, username, key_name...)"),
        *_transport_fields(),
        OptionField("ready_timeout", type="float", default=120.0,
                    help="seconds ready waits for the host to accept SSH"),
        OptionField("allow_shutdown", type="bool", default=False,
                    help="stop shuts the host down (otherwise stop leaves it running)"),
        OptionField("shutdown_command", default="shutdown -h now",
                    help="command stop runs (with sudo) when allow_shutdown is set"),
        OptionField("cleanup_commands", type="list", default=[],
                    help="commands destroy runs (with sudo) before forgetting the machine"),
    )

    @classmethod
    def canonicalize_url(cls, url: str, config) -> str:
        pool = url.split(":", 1)[1].strip() if ":" in url else ""
        if not _POOL.match(pool):
            raise InvalidDriverURL(url, "use 'ssh:' or 'ssh:POOL' where POOL is letters, digits, "
                                        "'.', '_' or '-'")
        return f"ssh:{pool}"

    def validate_machine_options(self, machine_options: Mapping[str, Any], *, where: str,
                                 file: str | None = None) -> list[ConfigProblem]:
        """Also: a host with no way to log in (no key, password, agent or ssh_config) is
        refused with the file, before the state records it; at connect it was too late."""
        found = super().validate_machine_options(machine_options, where=where, file=file)
        transport = machine_options.get("transport")
        if isinstance(transport, Mapping) and transport.get("kind", "ssh") == "ssh" and \
                not any(transport.get(k) for k in _LOGINS):
            found.append(ConfigProblem(
                f"no way to log in to {transport.get('host')!r}: give a key (key_name), a "
                "password (password_env), use_agent: true or ssh_config",
                key=f"{where}.transport.key_name", file=file))
        return found

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _transport_options(machine_options: Mapping[str, Any]) -> dict[str, Any]:
        value = machine_options.get("transport") or {}
        if not isinstance(value, Mapping):
            raise ConfigError("must be a mapping (host, port, username, key_name...)",
                              key="machine_options.transport")
        return dict(value)

    def _wanted(self, machine_options: Mapping[str, Any]) -> dict[str, Any]:
        options = self._transport_options(machine_options)
        check_transport_options(options, "machine_options.transport")
        if not options.get("host"):
            raise ConfigError("the ssh: driver needs the host's address",
                              key="machine_options.transport.host")
        return self._where(options, options["host"], int(options.get("port", 22)))

    @staticmethod
    def _where(options: Mapping[str, Any], host: str, port: int) -> dict[str, Any]:
        """The ``_WHERE`` fields of ``host:port`` reached with the transport ``options``."""
        gateway = options.get("gateway")
        return {"host": host, "port": port, "username": options.get("username", "root"),
                "key_name": options.get("key_name"), "gateway": dict(gateway) if gateway else None}

    @staticmethod
    def _fields(where: Mapping[str, Any]) -> dict[str, Any]:
        """What the reference records of ``where`` (no gateway key without a jump host)."""
        return {k: v for k, v in where.items() if v is not None or k != "gateway"}

    def _option(self, machine_options: Mapping[str, Any], name: str, default: Any) -> Any:
        if name in machine_options:
            return machine_options[name]
        return self.driver_options.get(name, default)

    def _machine(self, spec, machine_options, action_handler=None):
        """The machine at the recorded address (options may add or override transport keys)."""
        recorded = {k: spec.reference[k] for k in _WHERE if spec.reference.get(k) is not None}
        options = dict(machine_options)
        options["transport"] = {**recorded, **self._transport_options(machine_options)}
        return machine_for(spec, options, self.config, action_handler=action_handler)

    @staticmethod
    def _address(where: Mapping[str, Any]) -> str:
        return f"{where.get('username') or 'root'}@{where.get('host')}:{where.get('port') or 22}"

    # -- the warehouse hooks: the host exists already, so "create" registers it -------------
    resource_kind = "host"

    def resource_state(self, machine_spec) -> str:
        # a host that vanished cannot be told apart from one that is down
        return "unknown" if machine_spec.reference.get("host") else "missing"

    def describe_create(self, machine_spec, machine_options) -> str:
        return f"register existing host {self._address(self._wanted(machine_options))}"

    def create_event_data(self, machine_spec, machine_options) -> dict[str, Any]:
        wanted = self._wanted(machine_options)
        return {"host": wanted["host"], "port": wanted["port"]}

    def create_resource(self, action_handler, machine_spec, machine_options) -> dict[str, Any]:
        return self._fields(self._wanted(machine_options))

    def compare_with_wish(self, action_handler, machine_spec, machine_options) -> None:
        """A changed address is re-recorded; the pinned host keys of the old one belong to
        another machine, so they are dropped."""
        wanted = self._wanted(machine_options)
        current = {k: machine_spec.reference.get(k) for k in _WHERE}
        if current == wanted:
            return
        kept = {k: v for k, v in machine_spec.reference.items()
                if k not in (*_WHERE, "host_key", "gateway_host_keys", "driver_url",
                             "driver_version")}
        action_handler.perform_action(
            f"move machine from {self._address(current)} to {self._address(wanted)} "
            "(the old pinned host key is dropped)",
            lambda: self.save_reference(machine_spec, {**kept, **self._fields(wanted)}))

    def describe_ready(self, machine_spec, machine_options) -> str:
        return f"{self._address(self._wanted(machine_options))} to accept SSH"

    def open_machine(self, machine_spec, machine_options, action_handler=None):
        return self._machine(machine_spec, machine_options, action_handler)

    def describe_delete(self, machine_spec) -> str:
        return f"forget {self._address(machine_spec.reference)} (the host itself is left as it is)"

    def delete_resource(self, action_handler, machine_spec) -> None:
        """Nothing to remove: the state forgets the host, which stays as it is."""

    def stop_machine(self, action_handler, machine_spec, machine_options):
        where = self._address(machine_spec.reference)
        if not self._option(machine_options, "allow_shutdown", False):
            action_handler.report_progress(
                f"left {where} running: the ssh: driver shuts hosts down only with "
                "allow_shutdown: true")
            return
        command = str(self._option(machine_options, "shutdown_command", "shutdown -h now"))

        def shutdown() -> None:
            machine = self._machine(machine_spec, machine_options, action_handler)
            try:
                machine.execute_always(command, sudo=True, check=False, timeout=60)
            except TransportError:
                pass  # the host going away under the command is the expected outcome
            finally:
                machine.disconnect()
        action_handler.perform_action(f"shut down {where} ({command})", shutdown)

    def destroy_machine(self, action_handler, machine_spec, machine_options):
        """``cleanup_commands`` (if any) on the host, then the contract forgets it."""
        where = self._address(machine_spec.reference)
        commands = list(self._option(machine_options, "cleanup_commands", []) or [])
        if commands:
            def cleanup() -> None:
                machine = self._machine(machine_spec, machine_options, action_handler)
                try:
                    for command in commands:
                        machine.execute_always(str(command), sudo=True, timeout=600)
                except TransportError as exc:
                    action_handler.report_progress(
                        f"cleanup commands not run on {where}: {exc}; forgetting it anyway")
                finally:
                    machine.disconnect()
            action_handler.perform_action(f"run {len(commands)} cleanup commands on {where}",
                                          cleanup)
        super().destroy_machine(action_handler, machine_spec, machine_options)

    # -- import ------------------------------------------------------------------------------
    @staticmethod
    def _host_port(resource_id: str) -> tuple[str, int]:
        host, port = resource_id, 22
        head, sep, tail = resource_id.rpartition(":")
        if sep and tail.isdigit() and (":" not in head or head.startswith("[")):
            host, port = head, int(tail)
        host = host.strip("[]")
        if not host or not 0 < port < 65536:
            raise ConfigError(f"{resource_id!r} is not HOST or HOST:PORT", key="import")
        return host, port

    def resolve_resource_id(self, resource_id: str, machine: str) -> str:
        host, port = self._host_port(resource_id)
        return f"{host}:{port}"  # "web.example" is "web.example:22"

    def import_machine(self, action_handler, machine_spec, machine_options, resource_id):
        host, port = self._host_port(resource_id)
        wanted = self._where(self._transport_options(machine_options), host, port)
        if not wanted["gateway"]:  # through a jump host the address is not ours to reach
            try:
                self.open_connection(machine_spec, host, port, timeout=10.0).close()
            except OSError as exc:
                raise MachineNotFound(f"no SSH host answers at {host}:{port} ({exc}); check the "
                                      "address, or start its sshd", machine=machine_spec.name) from exc

        def record() -> None:
            machine_spec.reference = self.base_reference(**self._fields(wanted))
        action_handler.perform_action(f"import existing host {self._address(wanted)} (its host "
                                      "key is pinned at the first connection)", record,
                                      data={"host": host, "port": port})

    def resource_id(self, reference):
        host = reference.get("host")
        return f"{host}:{reference.get('port') or 22}" if host else None
