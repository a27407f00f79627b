"""The ``libcloud:`` driver: machines at any Apache Libcloud compute provider.

``libcloud:PROVIDER[:REGION_OR_PROJECT]`` (``libcloud:ec2:us-east-1``, ``libcloud:gce:my-project``).
EC2 gets the full set (tags in the create request, ClientToken, bulk create, stop/start, key
pair import, SSH security groups); other providers get what libcloud's generic API offers, and
a clear ``UnsupportedOperation`` for the rest. Option declarations: ``libcloud_parts/options.py``.

Crash safety: allocate saves a *pending* reference (driver URL, region, idempotency token)
before the create request, the node id right after it; the node itself carries the tags
``provisioning:name`` and ``provisioning:store`` from its first moment. A re-run after a crash at
any point finds the tagged node and adopts it instead of creating a second.

libcloud is imported only inside functions (here and in ``libcloud_parts``).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

from provisioning.driver import Capabilities, Driver
from provisioning.drivers.libcloud_parts.access import ensure_key_pair, ensure_ssh_group
from provisioning.drivers.libcloud_parts.credentials import resolve_credentials
from provisioning.drivers.libcloud_parts.errors import map_libcloud_errors
from provisioning.drivers.libcloud_parts.images import LibcloudImages
from provisioning.drivers.libcloud_parts.importing import LibcloudImport
from provisioning.drivers.libcloud_parts.options import DRIVER_OPTION_FIELDS, MACHINE_OPTION_FIELDS
from provisioning.drivers.libcloud_parts.pinning import HostKeyPinning
from provisioning.drivers.libcloud_parts.providers import CreatePlan, import_libcloud, ops_for
from provisioning.drivers.libcloud_parts.urls import CloudURL, canonicalize, options_for, parse_cloud_url
from provisioning.drivers.libcloud_parts.userdata import render_userdata
from provisioning.drivers.libcloud_parts.windows import WINDOWS_KEY_NAME, provider_password, transport_kind
from provisioning.errors import ConfigError, MachineNotFound, ProviderError, UnsupportedOperation
from provisioning.faults import checkpoint
from provisioning.machine.factory import machine_for
from provisioning.parallel import BatchResult, Outcome
from provisioning.transports.wait import wait_until_connectable

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.drivers.libcloud_parts.credentials import Credentials
    from provisioning.drivers.libcloud_parts.providers import ProviderOps
    from provisioning.machine.base import Machine
    from provisioning.spec import MachineSpec

__all__ = ["LibcloudDriver", "TAG_NAME", "TAG_STORE", "TAG_BATCH"]

TAG_NAME = "provisioning:name"
TAG_STORE = "provisioning:store"
TAG_BATCH = "provisioning:batch"


class LibcloudDriver(LibcloudImport, HostKeyPinning, LibcloudImages, Driver):
    scheme = "libcloud"
    extra = "cloud"
    capabilities = Capabilities(images=True, imports=True)
    version = "1"

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

    def _record_node(self, spec: "MachineSpec", node: Any, opts: Mapping[str, Any]) -> None:
        spec.reference["node_id"] = node.id
        public, private = list(node.public_ips or []), list(node.private_ips or [])
        spec.reference["public_ips"] = public
        spec.reference["private_ips"] = private
        spec.reference["address"] = self._address(opts, public, private)

    @staticmethod
    def _address(opts: Mapping[str, Any], public: list[str], private: list[str]) -> str | None:
        choice = opts.get("address") or "public"
        if choice == "public":
            return next(iter(public or private), None)
        if choice == "private":
            return next(iter(private), None)
        return str(choice)

    # -- allocate ----------------------------------------------------------------------------
    def _settle_existing(self, handler: "ActionHandler", spec: "MachineSpec",
                         opts: Mapping[str, Any],
                         tagged: list[Any] | None = None) -> bool:
        """Deal with a machine that has (or had) a node. True when a new node is needed."""
        node = self._node(spec)
        if node is not None:
            self._report_differences(handler, spec, node, opts)
            return False
        if spec.reference.get("node_id"):
            handler.report_progress(
                f"node {spec.reference['node_id']} recorded for this machine no longer exists "
                "(deleted outside provisioning?); creating a new one",
                data={"lost_node": spec.reference["node_id"]})
        if tagged is None:
            tagged = self._tagged(spec.name, spec.store_id)
        if tagged:
            self._adopt(handler, spec, tagged, opts)
            return False
        return True

    def _report_differences(self, handler: "ActionHandler", spec: "MachineSpec", node: Any,
                            opts: Mapping[str, Any]) -> None:
        for option, actual in (("size", self.ops.node_size(node)),
                               ("image", self.ops.node_image(node))):
            wished = opts.get(option)
            if wished and actual and str(wished) != str(actual):
                handler.report_progress(
                    f"node {node.id} has {option} {actual}, but {wished} is wished; provisioning "
                    f"does not change the {option} of a running node: destroy and re-create the "
                    "machine to apply it",
                    data={"option": option, "wished": wished, "actual": actual,
                          "node_id": node.id})

    def _adopt(self, handler: "ActionHandler", spec: "MachineSpec", tagged: list[Any],
               opts: Mapping[str, Any]) -> None:
        node, extra = tagged[0], tagged[1:]
        if extra:
            handler.report_progress(
                f"{len(tagged)} nodes are tagged for this machine ({', '.join(n.id for n in tagged)});"
                f" adopting {node.id}; destroy the others ({', '.join(n.id for n in extra)}) if "
                "they are not needed", data={"extra_nodes": [n.id for n in extra]})

        def adopt() -> None:
            spec.reference = self.base_reference(provider=self.provider, region=self.region,
                                                 **self._kept_on_adopt(spec.reference, node))
            self._record_node(spec, node, opts)
            spec.save()
        handler.perform_action(f"adopt node {node.id} already tagged for this machine", adopt)
        self._report_differences(handler, spec, node, opts)

    def _plan(self, handler: "ActionHandler", spec: "MachineSpec", opts: Mapping[str, Any],
              cache: dict[str, Any]) -> "CreatePlan":
        for required in ("image", "size"):
            if not opts.get(required):
                raise ConfigError(f"machine_options.{required} is required to create a node at "
                                  f"{self.driver_url}; list choices with `converge drivers "
                                  f"describe {self.driver_url}`",
                                  key=f"machine_options.{required}", machine=spec.name)
        groups = [str(g) for g in opts.get("security_groups") or []]
        with self._errors("prepare SSH access", spec, opts):
            key_pair = opts.get("key_pair")
            if not key_pair and opts.get("key_name"):
                key_pair = ensure_key_pair(self.ops, handler, self.config, str(opts["key_name"]),
                                           cache, rsa=transport_kind(opts) == "winrm")
            if opts.get("open_ssh"):
                name = str(opts.get("ssh_security_group") or "provisioning-ssh")
                ensure_ssh_group(self.ops, handler, name, str(opts.get("ssh_cidr") or "0.0.0.0/0"),
                                 cache)
                if name not in groups:
                    groups.append(name)
            if groups and self.provider == "ec2":
                known = cache.get("groups")
                if known is None or not set(groups) <= known:
                    known = cache["groups"] = set(self.ops.security_group_names())
                missing = [g for g in groups if g not in known
                           and not (handler.why_run and g == opts.get("ssh_security_group"))]
                if missing:
                    raise ConfigError(f"security group(s) {', '.join(missing)} do not exist at "
                                      f"{self.driver_url}; create them, or use open_ssh",
                                      key="machine_options.security_groups", machine=spec.name)
        userdata, host_key = self._userdata_and_host_key(handler, spec, opts, render_userdata(
            opts.get("userdata"), name=spec.name, machine_options=opts,
            driver_url=self.driver_url, region=self.region, base_dir=self.config.base_dir))
        tags = {str(k): str(v) for k, v in (opts.get("tags") or {}).items()}
        tags.update({TAG_NAME: spec.name, TAG_STORE: spec.store_id or ""})
        token = None
        if self.ops.supports_client_token:
            pending = not spec.reference.get("node_id")
            token = (pending and spec.reference.get("client_token")) or uuid.uuid4().hex
        return CreatePlan(name=spec.name, image=str(opts["image"]), size=str(opts["size"]),
                          location=opts.get("location"), key_pair=key_pair,
                          security_groups=tuple(groups), subnet=opts.get("subnet"),
                          userdata=userdata, tags=tuple(sorted(tags.items())),
                          client_token=token, host_key=host_key,
                          create_args=tuple(sorted((opts.get("create_args") or {}).items())))

    def _pending_reference(self, spec: "MachineSpec", plan: "CreatePlan", **extra: Any) -> None:
        """Saved before the create request: a crash from here on leaves a findable trace."""
        spec.reference = self.base_reference(
            provider=self.provider, region=self.region, node_id=None, image=plan.image,
            size=plan.size, key_pair=plan.key_pair, **self._pending_host_key_fields(plan.host_key),
            **({"client_token": plan.client_token} if plan.client_token else {}), **extra)
        spec.save()

    @staticmethod
    def _forget_pending(spec: "MachineSpec", before: dict[str, Any]) -> None:
        if before:
            spec.reference = before
            spec.save()
        else:
            spec.delete()

    def allocate_machine(self, action_handler, machine_spec, machine_options):
        opts = self._opts(machine_options)
        if not self._settle_existing(action_handler, machine_spec, opts):
            return
        plan = self._plan(action_handler, machine_spec, opts, {})

        def create() -> None:
            before = dict(machine_spec.reference)
            self._pending_reference(machine_spec, plan)
            try:
                with self._errors("create a node", machine_spec, opts):
                    node = self.ops.create(plan)[0]
            except ConfigError:
                # refused outright: nothing was made, so forget the token (a fixed retry must
                # not reuse it: the provider would call that a mismatched idempotent request)
                self._forget_pending(machine_spec, before)
                raise
            checkpoint("after_create", machine=machine_spec.name)
            self._record_node(machine_spec, node, opts)
            checkpoint("before_save", machine=machine_spec.name)
            machine_spec.save()
        action_handler.perform_action(
            f"create node ({plan.size}, {plan.image}) at {self.driver_url}", create)

    def allocate_machines(self, action_handler, specs_and_options, parallelizer=None):
        """Machines whose create requests differ only by name share one bulk request (EC2:
        RunInstances with MinCount=MaxCount=N), then each node is tagged with its machine."""
        specs_and_options = list(specs_and_options)
        if len(specs_and_options) < 2 or not self.ops.supports_bulk:
            return super().allocate_machines(action_handler, specs_and_options, parallelizer)
        results = BatchResult((spec.name, Outcome(spec.name)) for spec, _ in specs_and_options)
        store_ids = {spec.store_id for spec, _ in specs_and_options}
        tagged_by_name: dict[tuple[str, str], list[Any]] = {}
        for store_id in store_ids:
            with self._errors("list nodes of this state store"):
                for node in self.ops.tagged_nodes({TAG_STORE: store_id or ""}):
                    key = (self.ops.node_tags(node).get(TAG_NAME, ""), store_id or "")
                    tagged_by_name.setdefault(key, []).append(node)
        groups: dict[Any, list[tuple[Any, "ActionHandler", "CreatePlan", dict]]] = {}
        cache: dict[str, Any] = {}
        for spec, options in specs_and_options:
            handler = action_handler.for_machine(spec.name)
            opts = self._opts(options)
            try:
                tagged = tagged_by_name.get((spec.name, spec.store_id or ""), [])
                if not self._settle_existing(handler, spec, opts, tagged):
                    continue
                if self._claim_from_batch(handler, spec, opts):
                    continue
                plan = self._plan(handler, spec, opts, cache)
                groups.setdefault(plan.group_key, []).append((spec, handler, plan, opts))
            except Exception as exc:  # every machine's outcome is reported, none hides others
                results[spec.name].error = exc
        for members in groups.values():
            try:
                self._create_group(action_handler, members)
            except Exception as exc:
                for spec, *_ in members:
                    if results[spec.name].error is None and not spec.reference.get("node_id"):
                        results[spec.name].error = exc
        return results

    def _create_group(self, action_handler, members) -> None:
        if len(members) == 1:
            spec, handler, plan, opts = members[0]
            self.allocate_machine(handler, spec, opts)
            return
        batch = uuid.uuid4().hex[:16]
        first = members[0][2]
        tags = {k: v for k, v in first.tags if k not in (TAG_NAME,)}
        tags[TAG_BATCH] = batch
        plan = replace(first, name=f"provisioning-batch-{batch}", tags=tuple(sorted(tags.items())),
                       client_token=batch)

        def create() -> None:
            before = [dict(spec.reference) for spec, *_ in members]
            for spec, _, member_plan, _ in members:
                self._pending_reference(spec, member_plan, batch=batch)
            try:
                with self._errors(f"create {len(members)} nodes in one request"):
                    nodes = self.ops.create(plan, count=len(members))
            except ConfigError:
                for (spec, *_), old in zip(members, before):
                    self._forget_pending(spec, old)
                raise
            checkpoint("after_create")
            if len(nodes) != len(members):
                raise ProviderError(f"asked {self.provider} for {len(members)} nodes in batch "
                                    f"{batch}, got {len(nodes)}", provider=self.provider)
            for (spec, handler, _, opts), node in zip(members, nodes):
                with self._errors(f"tag node {node.id}", spec):
                    self.ops.set_tags(node, {TAG_NAME: spec.name, "Name": spec.name})
                self._record_node(spec, node, opts)
                checkpoint("before_save", machine=spec.name)
                spec.save()
                handler.report_progress(f"node {node.id} created in batch {batch}",
                                        data={"node_id": node.id, "batch": batch})
        names = ", ".join(spec.name for spec, *_ in members)
        action_handler.perform_action(
            f"create {len(members)} nodes ({plan.size}, {plan.image}) in one request: {names}",
            create)

    def _claim_from_batch(self, handler, spec: "MachineSpec", opts: Mapping[str, Any]) -> bool:
        """After a crash inside a bulk create: take a node of the recorded batch that no machine
        has claimed yet (tagged with the batch but not yet with a name)."""
        batch = spec.reference.get("batch")
        if not batch or spec.reference.get("node_id"):
            return False
        with self._errors(f"list nodes of batch {batch}", spec):
            nodes = [n for n in self.ops.tagged_nodes({TAG_BATCH: batch, TAG_STORE: spec.store_id
                                                      or ""})
                     if not self.ops.node_tags(n).get(TAG_NAME)]
        if not nodes:
            return False
        node = nodes[0]

        def claim() -> None:
            with self._errors(f"tag node {node.id}", spec):
                self.ops.set_tags(node, {TAG_NAME: spec.name, "Name": spec.name})
            self._record_node(spec, node, opts)
            spec.save()
        handler.perform_action(f"claim node {node.id} of interrupted batch {batch}", claim)
        return True

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

    def ready_machine(self, action_handler, machine_spec, machine_options):
        opts = self._opts(machine_options)
        node_id = machine_spec.reference.get("node_id")
        if not node_id:
            if action_handler.why_run:
                action_handler.report_progress("would wait for the new node to run and answer "
                                               "SSH or WinRM")
                return None
            raise MachineNotFound(f"machine {machine_spec.name!r} has no node at "
                                  f"{self.driver_url}; allocate it first (converge up)",
                                  machine=machine_spec.name)
        deadline = time.monotonic() + self._timeout(opts)
        node = self._node(machine_spec)
        if node is None:
            raise MachineNotFound(f"node {node_id} of machine {machine_spec.name!r} no longer "
                                  "exists (deleted outside provisioning?); run up to re-create it",
                                  machine=machine_spec.name)
        status = self.ops.status(node)
        if status in ("stopped", "stopping"):
            if not self.ops.can_stop:
                raise UnsupportedOperation(f"node {node_id} is {status} and libcloud's "
                                           f"{self.provider} driver cannot start nodes",
                                           machine=machine_spec.name)

            def start() -> None:
                self._wait_for(machine_spec, node_id, {"stopped"}, "stopped", deadline)
                with self._errors(f"start node {node_id}", machine_spec):
                    self.ops.start(node)
            action_handler.perform_action(f"start node {node_id}", start)
        if action_handler.why_run and status != "running":
            action_handler.report_progress(f"would wait for node {node_id} to run")
            return None
        node = self._wait_for(machine_spec, node_id, {"running"}, "running", deadline)
        checkpoint("during_ready", machine=machine_spec.name)
        before = dict(machine_spec.reference)
        self._record_node(machine_spec, node, opts)
        if machine_spec.reference != before and not action_handler.why_run:
            machine_spec.save()
        machine = self._machine(machine_spec, opts, action_handler, deadline=deadline)
        if opts.get("wait_for_ssh", True):
            protocol = "WinRM" if transport_kind(opts) == "winrm" else "SSH"
            remaining = max(1.0, deadline - time.monotonic())
            wait_until_connectable(machine.transport, timeout=remaining,
                                   action_handler=action_handler, protocol=protocol,
                                   what=f"{protocol} on node {node_id} ({machine.transport.host})")
        return machine

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
