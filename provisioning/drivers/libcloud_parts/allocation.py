"""Allocating ``libcloud:`` nodes through the warehouse hooks (``provisioning.driver.resources``):
the contract owns adopt-or-create, why-run, the fault points and the saves; this mixin keeps
what is the cloud's own.

- A node is found again by its tags (``provisioning:name``, ``provisioning:store``); extra
  tagged nodes are reported, and a node adopted after a crash keeps the host key its userdata
  carries (``pinning.py``).
- ``prepare_create`` checks the options and readies SSH access (key pair, security group: the
  key pair cache spares a batch one look-up per machine) before the create action.
- ``create_resources`` saves a *pending* reference (token, host key, batch id) before the
  request, so a crash during it leaves a trace. Machines whose requests differ only by name
  share one request (EC2: RunInstances with MinCount=MaxCount=N); each node is then tagged
  with its machine, and after a crash inside such a request a re-run of the batch claims the
  batch's unnamed nodes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from provisioning.driver.resources import Creation, ResourceContract
from provisioning.drivers.libcloud_parts.access import ensure_key_pair, ensure_ssh_group
from provisioning.drivers.libcloud_parts.part import LibcloudPart
from provisioning.drivers.libcloud_parts.providers import CreatePlan
from provisioning.drivers.libcloud_parts.userdata import render_userdata
from provisioning.drivers.libcloud_parts.windows import transport_kind
from provisioning.errors import ConfigError, ProviderError
from provisioning.keys import random_hex

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.parallel import BatchResult, Parallelizer
    from provisioning.spec import MachineSpec

__all__ = ["LibcloudAllocation", "TAG_NAME", "TAG_STORE", "TAG_BATCH"]

TAG_NAME = "provisioning:name"
TAG_STORE = "provisioning:store"
TAG_BATCH = "provisioning:batch"
#: reference fields the base class adds itself
_BASE_FIELDS = ("driver_url", "driver_version")


class LibcloudAllocation(LibcloudPart, ResourceContract):
    """Mixed into ``LibcloudDriver`` (whose look-ups, errors and host key pinning it uses)."""

    config: Any
    _local: Any
    _node: Any
    _tagged: Any
    _node_fields: Any
    _userdata_and_host_key: Any
    _pending_host_key_fields: Any
    _batch: Any

    # -- the machine's node, or another one --------------------------------------------------
    def resource_label(self, reference: Mapping[str, Any]) -> str:
        node_id = reference.get("node_id")
        return f"node {node_id}" if node_id else "node"

    def report_lost(self, action_handler: "ActionHandler", machine_spec: "MachineSpec") -> None:
        node_id = machine_spec.reference.get("node_id")
        if node_id:  # a pending reference (the create never answered) records none
            action_handler.report_progress(
                f"node {node_id} recorded for this machine no longer exists (deleted outside "
                "provisioning?); creating a new one", data={"lost_node": node_id})

    def compare_with_wish(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                          machine_options: Mapping[str, Any]) -> None:
        node, self._local.read = getattr(self._local, "read", None), None
        if node is None or node.id != machine_spec.reference.get("node_id"):
            node = self._node(machine_spec)  # not just read by resource_state
        if node is not None:
            self._report_differences(action_handler, node, self._opts(machine_options))

    def _report_differences(self, handler: "ActionHandler", node: Any,
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

    def find_resource(self, machine_spec: "MachineSpec") -> dict[str, Any] | None:
        """The oldest node tagged for the machine; in a batch (which lists each store's nodes
        once), else a node of the machine's interrupted batch that no machine claimed yet."""
        listed = getattr(self._local, "listed", None)
        if listed is None:
            tagged = self._tagged(machine_spec.name, machine_spec.store_id)
        else:
            tagged = sorted(listed.get((machine_spec.name, machine_spec.store_id or ""), []),
                            key=lambda n: str((n.extra or {}).get("launch_time") or n.id))
        self._local.found = tagged
        if tagged:
            return {"node_id": tagged[0].id}
        batch = machine_spec.reference.get("batch")
        if listed is None or not batch or machine_spec.reference.get("node_id"):
            return None  # claiming is safe only one machine after another
        with self._errors(f"list nodes of batch {batch}", machine_spec):
            self._local.found = [
                n for n in self.ops.tagged_nodes({TAG_BATCH: batch,
                                                  TAG_STORE: machine_spec.store_id or ""})
                if not self.ops.node_tags(n).get(TAG_NAME)]
        return {"node_id": self._local.found[0].id, "batch": batch} if self._local.found else None

    def adopt_resource(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any], found: dict[str, Any]) -> None:
        opts = self._opts(machine_options)
        nodes: list[Any] = self._local.found
        node, extra = nodes[0], nodes[1:]
        if found.get("batch"):
            def claim() -> None:
                self._tag_with_name(machine_spec, node)
                self.save_reference(machine_spec, {**self._own_fields(machine_spec),
                                                   **self._node_fields(node, opts)})
            action_handler.perform_action(
                f"claim node {node.id} of interrupted batch {found['batch']}", claim)
            return
        if extra:
            action_handler.report_progress(
                f"{len(nodes)} nodes are tagged for this machine ({', '.join(n.id for n in nodes)});"
                f" adopting {node.id}; destroy the others ({', '.join(n.id for n in extra)}) if "
                "they are not needed", data={"extra_nodes": [n.id for n in extra]})

        def adopt() -> None:
            self.save_reference(machine_spec, {
                "provider": self.provider, "region": self.region,
                **self._kept_on_adopt(machine_spec.reference, node),
                **self._node_fields(node, opts)})
        action_handler.perform_action(f"adopt node {node.id} already tagged for this machine",
                                      adopt)
        self._report_differences(action_handler, node, opts)

    def _tag_with_name(self, spec: "MachineSpec", node: Any) -> None:
        with self._errors(f"tag node {node.id}", spec):
            self.ops.set_tags(node, {TAG_NAME: spec.name, "Name": spec.name})

    @staticmethod
    def _own_fields(spec: "MachineSpec") -> dict[str, Any]:
        return {k: v for k, v in spec.reference.items() if k not in _BASE_FIELDS}

    # -- a new node --------------------------------------------------------------------------
    def prepare_create(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any]) -> Creation:
        opts = self._opts(machine_options)
        cache = getattr(self._local, "plan_cache", None)
        plan = self._plan(action_handler, machine_spec, opts, {} if cache is None else cache)
        return Creation(machine_spec, opts, action_handler,
                        f"create node ({plan.size}, {plan.image}) at {self.driver_url}",
                        group=plan.group_key, plan=plan)

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
            token = (pending and spec.reference.get("client_token")) or random_hex()
        return CreatePlan(name=spec.name, image=str(opts["image"]), size=str(opts["size"]),
                          location=opts.get("location"), key_pair=key_pair,
                          security_groups=tuple(groups), subnet=opts.get("subnet"),
                          userdata=userdata, tags=tuple(sorted(tags.items())),
                          client_token=token, host_key=host_key,
                          create_args=tuple(sorted((opts.get("create_args") or {}).items())))

    def _pending_fields(self, plan: "CreatePlan", **extra: Any) -> dict[str, Any]:
        """Saved before the create request: a crash from here on leaves a findable trace."""
        return {"provider": self.provider, "region": self.region, "node_id": None,
                "image": plan.image, "size": plan.size, "key_pair": plan.key_pair,
                **self._pending_host_key_fields(plan.host_key),
                **({"client_token": plan.client_token} if plan.client_token else {}), **extra}

    def create_resources(self, action_handler: "ActionHandler",
                         creations: Sequence[Creation]) -> list[Any]:
        """One request: one node, or (a group of several) ``count`` nodes named and tagged for
        the batch, each tagged with its machine by ``record_created``."""
        if len(creations) == 1:
            creation = creations[0]
            self.save_pending_reference(creation.machine_spec, self._pending_fields(creation.plan))
            with self._errors("create a node", creation.machine_spec, creation.machine_options):
                return [(self.ops.create(creation.plan)[0], None)]
        batch = random_hex(16)
        first = creations[0].plan
        tags = {k: v for k, v in first.tags if k != TAG_NAME}
        tags[TAG_BATCH] = batch
        plan = replace(first, name=f"provisioning-batch-{batch}", tags=tuple(sorted(tags.items())),
                       client_token=batch)
        for creation in creations:
            self.save_pending_reference(creation.machine_spec,
                                        self._pending_fields(creation.plan, batch=batch))
        with self._errors(f"create {len(creations)} nodes in one request"):
            nodes = self.ops.create(plan, count=len(creations))
        if len(nodes) != len(creations):
            raise ProviderError(f"asked {self.provider} for {len(creations)} nodes in batch "
                                f"{batch}, got {len(nodes)}", provider=self.provider)
        return [(node, batch) for node in nodes]

    def record_created(self, creation: Creation, made: Any) -> dict[str, Any]:
        node, batch = made
        spec = creation.machine_spec
        if batch:
            self._tag_with_name(spec, node)
        fields = {**self._own_fields(spec), **self._node_fields(node, creation.machine_options)}
        if batch:
            creation.action_handler.report_progress(f"node {node.id} created in batch {batch}",
                                                    data={"node_id": node.id, "batch": batch})
        return fields

    def describe_creations(self, creations: Sequence[Creation]) -> str:
        plan = creations[0].plan
        names = ", ".join(c.machine_spec.name for c in creations)
        return f"create {len(creations)} nodes ({plan.size}, {plan.image}) in one request: {names}"

    def allocate_machines(self, action_handler: "ActionHandler",
                          specs_and_options: Sequence[tuple["MachineSpec", Mapping[str, Any]]],
                          parallelizer: "Parallelizer | None" = None) -> "BatchResult":
        """Machines whose create requests differ only by name share one bulk request
        (``allocate_together``); each store's nodes are listed once for all of them."""
        specs_and_options = list(specs_and_options)
        if len(specs_and_options) < 2 or not self.ops.supports_bulk:
            result: BatchResult = self._batch("allocate_machine", action_handler,
                                              specs_and_options, parallelizer)
            return result
        listed: dict[tuple[str, str], list[Any]] = {}
        for store_id in {spec.store_id for spec, _ in specs_and_options}:
            with self._errors("list nodes of this state store"):
                for node in self.ops.tagged_nodes({TAG_STORE: store_id or ""}):
                    key = (self.ops.node_tags(node).get(TAG_NAME, ""), store_id or "")
                    listed.setdefault(key, []).append(node)
        self._local.listed, self._local.plan_cache = listed, {}
        try:
            return self.allocate_together(action_handler, specs_and_options)
        finally:
            self._local.listed = self._local.plan_cache = None
