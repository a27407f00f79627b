"""The ``libcloud:`` driver: machines at any Apache Libcloud compute provider.

``libcloud:PROVIDER[:REGION_OR_PROJECT]`` (``libcloud:ec2:us-east-1``, ``libcloud:gce:my-project``).
EC2 gets the full set (tags in the create request, ClientToken, bulk create, stop/start, key
pair import, SSH security groups); other providers get what libcloud's generic API offers, and
a clear ``UnsupportedOperation`` for the rest. Option declarations: ``libcloud_parts/options.py``.

Built on the warehouse hooks (``provisioning.driver.resources``), which own adopt-or-create,
why-run, the fault points and the saves of the reference; allocating is
``libcloud_parts/allocation.py``, host keys ``libcloud_parts/pinning.py``. Its own stop and
destroy (a destroy also removes tagged nodes a crashed run never recorded) stay here.

Crash safety: allocate saves a *pending* reference (driver URL, region, idempotency token)
before the create request, the node id right after it; the node itself carries the tags
``provisioning:name`` and ``provisioning:store`` from its first moment. A re-run after a crash at
any point finds the tagged node and adopts it instead of creating a second.

libcloud is imported only inside functions (here and in ``libcloud_parts``).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from provisioning.driver import Capabilities, Driver
from provisioning.drivers.libcloud_parts.allocation import (
    TAG_BATCH,
    TAG_NAME,
    TAG_STORE,
    LibcloudAllocation,
)
from provisioning.drivers.libcloud_parts.credentials import resolve_credentials
from provisioning.drivers.libcloud_parts.errors import map_libcloud_errors
from provisioning.drivers.libcloud_parts.images import LibcloudImages
from provisioning.drivers.libcloud_parts.importing import LibcloudImport
from provisioning.drivers.libcloud_parts.options import DRIVER_OPTION_FIELDS, MACHINE_OPTION_FIELDS
from provisioning.drivers.libcloud_parts.pinning import HostKeyPinning
from provisioning.drivers.libcloud_parts.providers import import_libcloud, ops_for
from provisioning.drivers.libcloud_parts.urls import CloudURL, canonicalize, options_for, parse_cloud_url
from provisioning.drivers.libcloud_parts.windows import WINDOWS_KEY_NAME, provider_password, transport_kind
from provisioning.errors import MachineNotFound, ProviderError, UnsupportedOperation
from provisioning.machine.factory import machine_for
from provisioning.transports.wait import wait_until_connectable

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.drivers.libcloud_parts.credentials import Credentials
    from provisioning.drivers.libcloud_parts.providers import ProviderOps
    from provisioning.machine.base import Machine
    from provisioning.spec import MachineSpec

__all__ = ["LibcloudDriver", "TAG_NAME", "TAG_STORE", "TAG_BATCH"]

#: what the contract makes of a node's status (a pending or rebooting node is on its way)
_STATES = {"running": "running", "stopped": "stopped", "stopping": "stopped"}


class LibcloudDriver(LibcloudImport, HostKeyPinning, LibcloudImages, LibcloudAllocation, Driver):
    scheme = "libcloud"
    extra = "cloud"
    capabilities = Capabilities(images=True, imports=True)
    version = "1"
    resource_kind = "node"

    driver_option_fields = DRIVER_OPTION_FIELDS
    machine_option_fields = MACHINE_OPTION_FIELDS

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def canonicalize_url(cls, url: str, config) -> str:
        import_libcloud()
        return canonicalize(url, config)

    def __init__(self, driver_url: str, config) -> None:
        super().__init__(driver_url, config)
        self.cloud: CloudURL = parse_cloud_url(driver_url)
        # options under libcloud: and libcloud:PROVIDER apply to every region of it
        self.driver_options = options_for(config, self.cloud.provider, driver_url)
        self._local = threading.local()
        #: injectable for tests: how waiting sleeps
        self.sleep: Callable[[float], None] = time.sleep

    @property
    def provider(self) -> str:
        return self.cloud.provider

    @property
    def region(self) -> str:
        return self.cloud.place

    def options_with_secrets(self) -> dict[str, Any]:
        secret = {f.name for f in self.driver_option_fields if f.secret}
        found = self.config.credentials_for("libcloud:", f"libcloud:{self.provider}",
                                            self.driver_url)
        return {**self.driver_options, **{k: v for k, v in found.items() if k in secret}}

    def _credentials(self) -> "Credentials":
        return resolve_credentials(self.provider, self.options_with_secrets(),
                                   key_id=self.cloud.key_id or None)

    @property
    def ops(self) -> "ProviderOps":
        """This thread's libcloud driver (libcloud connections are not shared across threads)."""
        ops = getattr(self._local, "ops", None)
        if ops is None:
            creds = self._credentials()
            self._local.credential_source = f"key {creds.key_hint} from {creds.source}"
            with self._errors("connect"):
                ops = self._local.ops = ops_for(self.cloud, self.driver_options, creds)
        return ops

    def _errors(self, action: str, spec: "MachineSpec | None" = None,
                options: Mapping[str, Any] | None = None):
        if action != "connect":
            self.ops  # noqa: B018 - resolve credentials first, so errors can name their source
        context = {"region": self.region, "driver_url": self.driver_url,
                   "credential_source": getattr(self._local, "credential_source", "unknown")}
        context.update({k: v for k, v in (options or {}).items() if isinstance(v, (str, list))})
        return map_libcloud_errors(self.provider, action,
                                   machine=spec.name if spec is not None else None,
                                   context=context)

    def _opts(self, machine_options: Mapping[str, Any]) -> dict[str, Any]:
        """Machine options with defaults filled in (Windows nodes default to an RSA key)."""
        out = {f.name: f.default for f in self.machine_option_fields if f.default is not None}
        if transport_kind(machine_options or {}) == "winrm":
            out["key_name"] = WINDOWS_KEY_NAME
        out.update(machine_options or {})
        return out

    def _timeout(self, opts: Mapping[str, Any]) -> float:
        return float(opts.get("wait_timeout") or self.driver_options.get("wait_timeout") or 600.0)

    @property
    def _interval(self) -> float:
        return float(self.driver_options.get("poll_interval") or 5.0)

    # -- looking things up -------------------------------------------------------------------
    def _node(self, spec: "MachineSpec") -> Any | None:
        """The recorded node if it still exists (not terminated), else None."""
        node_id = spec.reference.get("node_id")
        if not node_id:
            return None
        with self._errors(f"look up node {node_id}", spec):
            node = self.ops.get_node(node_id)
        return node if node is not None and self.ops.alive(node) else None

    def _tagged(self, name: str, store_id: str | None) -> list[Any]:
        tags = {TAG_NAME: name, TAG_STORE: store_id or ""}
        with self._errors(f"list nodes tagged for {name}"):
            nodes = self.ops.tagged_nodes(tags)
        return sorted(nodes, key=lambda n: str((n.extra or {}).get("launch_time") or n.id))

    def find_nodes(self, name: str, store_id: str | None = None) -> list[dict[str, Any]]:
        """Existing nodes tagged for machine ``name`` (and store, if given): id, status, tags."""
        with self._errors(f"list nodes tagged for {name}"):
            tags = {TAG_NAME: name, **({TAG_STORE: store_id} if store_id else {})}
            return [{"id": n.id, "status": self.ops.status(n), "tags": self.ops.node_tags(n)}
                    for n in self.ops.tagged_nodes(tags)]

    def machine_state(self, machine_spec: "MachineSpec") -> str:
        if not machine_spec.reference.get("node_id"):
            return "missing"
        node = self._node(machine_spec)
        if node is None:
            return "missing"
        status = self.ops.status(node)
        return status if status in ("running", "stopped") else "unknown"

    def _node_fields(self, node: Any, opts: Mapping[str, Any]) -> dict[str, Any]:
        """What a reference records of a node: its id and addresses."""
        public, private = list(node.public_ips or []), list(node.private_ips or [])
        return {"node_id": node.id, "public_ips": public, "private_ips": private,
                "address": self._address(opts, public, private)}

    def _record_node(self, spec: "MachineSpec", node: Any, opts: Mapping[str, Any]) -> None:
        spec.reference.update(self._node_fields(node, opts))

    @staticmethod
    def _address(opts: Mapping[str, Any], public: list[str], private: list[str]) -> str | None:
        choice = opts.get("address") or "public"
        if choice == "public":
            return next(iter(public or private), None)
        if choice == "private":
            return next(iter(private), None)
        return str(choice)

    # -- ready / connect ---------------------------------------------------------------------
    def _wait_for(self, spec: "MachineSpec", node_id: str, wanted: set[str], what: str,
                  deadline: float) -> Any | None:
        """Poll until the node's status is in ``wanted`` ('gone' means terminated or absent)."""
        started = time.monotonic()
        while True:
            with self._errors(f"look up node {node_id}", spec):
                node = self.ops.get_node(node_id)
            status = "gone" if node is None or not self.ops.alive(node) else self.ops.status(node)
            if status in wanted:
                return node
            if status == "gone":
                raise MachineNotFound(f"node {node_id} disappeared while waiting for it to be "
                                      f"{what}; run up again to re-create it", machine=spec.name)
            if time.monotonic() >= deadline:
                raise ProviderError(f"node {node_id} is still {status} after "
                                    f"{time.monotonic() - started:.0f} s of waiting for it to be "
                                    f"{what}; check it in the {self.provider} console, or raise "
                                    "wait_timeout", provider=self.provider, machine=spec.name)
            self.sleep(self._interval)

    def create_pending(self, machine_spec: "MachineSpec") -> bool:
        """Also a reference saved before the mark existed: one recording no node yet."""
        return super().create_pending(machine_spec) or (
            bool(machine_spec.reference) and not machine_spec.reference.get("node_id"))

    def resource_state(self, machine_spec: "MachineSpec") -> str:
        node = self._node(machine_spec)
        self._local.read = node  # allocate's compare_with_wish compares it, unlooked-up
        if node is None:
            return "missing"
        status = self.ops.status(node)
        return _STATES.get(status, "starting")

    def describe_ready(self, machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any]) -> str:
        node_id = machine_spec.reference.get("node_id")
        return f"node {node_id} to run" if node_id else \
            "the new node to run and answer SSH or WinRM"

    def start_resource(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any]) -> None:
        """Start a stopped node (one still stopping: once it has stopped)."""
        node_id = machine_spec.reference["node_id"]
        if not self.ops.can_stop:
            raise UnsupportedOperation(f"node {node_id} is stopped and libcloud's "
                                       f"{self.provider} driver cannot start nodes",
                                       machine=machine_spec.name)
        deadline = time.monotonic() + self._timeout(self._opts(machine_options))
        node = self._wait_for(machine_spec, node_id, {"stopped"}, "stopped", deadline)
        with self._errors(f"start node {node_id}", machine_spec):
            self.ops.start(node)

    def wait_for_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                         machine_options: Mapping[str, Any], *, started: bool = True,
                         ) -> "Machine":
        """Until the node runs (its addresses, which a start may change, are recorded), then
        until it answers SSH or WinRM (``wait_for_ssh``), all within ``wait_timeout``."""
        opts = self._opts(machine_options)
        node_id = machine_spec.reference["node_id"]
        deadline = time.monotonic() + self._timeout(opts)
        node = self._wait_for(machine_spec, node_id, {"running"}, "running", deadline)
        self.update_reference(action_handler, machine_spec, self._node_fields(node, opts))
        machine = self._machine(machine_spec, opts, action_handler, deadline=deadline)
        if opts.get("wait_for_ssh", True):
            protocol = "WinRM" if transport_kind(opts) == "winrm" else "SSH"
            remaining = max(1.0, deadline - time.monotonic())
            wait_until_connectable(machine.transport, timeout=remaining,
                                   action_handler=action_handler, protocol=protocol,
                                   what=f"{protocol} on node {node_id} ({machine.transport.host})")
        return machine

    def open_machine(self, machine_spec: "MachineSpec", machine_options: Mapping[str, Any],
                     action_handler: "ActionHandler | None" = None) -> "Machine":
        return self._machine(machine_spec, self._opts(machine_options), action_handler)

    def _machine(self, spec: "MachineSpec", opts: Mapping[str, Any],
                 action_handler: "ActionHandler | None" = None,
                 deadline: float | None = None) -> "Machine":
        """The machine for the node. Windows (transport kind winrm): unless the config gives the
        password, fetch it from the provider (waiting until ``deadline``; None asks once)."""
        address = spec.reference.get("address")
        if opts.get("address") not in (None, "public", "private"):
            address = str(opts["address"])
        if not address:
            raise MachineNotFound(f"node {spec.reference.get('node_id')} of {spec.name!r} has no "
                                  "address yet; ready it first, or set the address option",
                                  machine=spec.name)
        transport = dict(opts.get("transport") or {})
        if transport_kind(opts) == "winrm":
            password = provider_password(self, spec, opts, transport, address, action_handler,
                                         deadline)
            return machine_for(spec, {**opts, "transport": transport}, self.config,
                               action_handler=action_handler, default_host=address,
                               password=password)
        if opts.get("key_name") and not opts.get("key_pair"):
            transport.setdefault("key_name", opts["key_name"])
        return machine_for(spec, {**opts, "transport": transport}, self.config,
                           action_handler=action_handler, default_host=address,
                           on_new_host_key=self._host_key_check(spec, opts, action_handler, deadline))

    def connect_to_machine(self, machine_spec, machine_options):
        opts = self._opts(machine_options)
        if not machine_spec.reference.get("node_id"):
            raise MachineNotFound(f"machine {machine_spec.name!r} has no node at "
                                  f"{self.driver_url}; run up first", machine=machine_spec.name)
        if not machine_spec.reference.get("address") and \
                opts.get("address") in (None, "public", "private"):
            node = self._node(machine_spec)
            if node is None:
                raise MachineNotFound(f"node {machine_spec.reference['node_id']} no longer exists",
                                      machine=machine_spec.name)
            reference = dict(machine_spec.reference)
            self._record_node(machine_spec, node, opts)   # in memory only: connect saves nothing
            try:
                return self._machine(machine_spec, opts)
            finally:
                machine_spec.reference = reference
        return self._machine(machine_spec, opts)

    # -- stop / destroy ----------------------------------------------------------------------
    def stop_machine(self, action_handler, machine_spec, machine_options):
        opts = self._opts(machine_options)
        node = self._node(machine_spec)
        if node is None:
            action_handler.report_progress("node is gone: nothing to stop")
            return
        if not self.ops.can_stop:
            raise UnsupportedOperation(f"libcloud's {self.provider} driver cannot stop and start "
                                       "nodes; destroy the machine instead",
                                       machine=machine_spec.name)
        status = self.ops.status(node)
        if status == "stopped":
            return
        deadline = time.monotonic() + self._timeout(opts)

        def stop() -> None:
            if status != "stopping":
                with self._errors(f"stop node {node.id}", machine_spec):
                    self.ops.stop(node)
            self._wait_for(machine_spec, node.id, {"stopped"}, "stopped", deadline)
        action_handler.perform_action(f"stop node {node.id}", stop)

    def destroy_machine(self, action_handler, machine_spec, machine_options):
        opts = self._opts(machine_options)
        nodes = []
        node = self._node(machine_spec)
        if node is not None:
            nodes.append(node)
        if machine_spec.store_id is not None:
            # nodes a crashed run created for this machine but never recorded: no orphans
            nodes += [n for n in self._tagged(machine_spec.name, machine_spec.store_id)
                      if n.id not in {m.id for m in nodes}]
        if not nodes:
            action_handler.report_progress(
                f"node {machine_spec.reference.get('node_id') or '(none)'} is already gone")
            return
        deadline = time.monotonic() + self._timeout(opts)
        for target in nodes:
            def destroy(target=target) -> None:
                with self._errors(f"destroy node {target.id}", machine_spec):
                    self.ops.destroy(target)
                self._wait_for(machine_spec, target.id, {"gone"}, "gone", deadline)
            action_handler.perform_action(f"destroy node {target.id}", destroy)

    # -- describe ----------------------------------------------------------------------------
    def list_choices(self) -> dict[str, list[Any]]:
        """Ids under images, sizes, locations, networks, security_groups (what options accept),
        and the full entries (id, name, ...) under ``<key>_details``."""
        with self._errors("list images, sizes and locations"):
            detailed = self.ops.choices(self.driver_options)
        out: dict[str, list[Any]] = {}
        for key, items in detailed.items():
            out[key] = [item["id"] if key != "security_groups" else item["name"] for item in items]
            out[f"{key}_details"] = items
        return out
