"""What differs between libcloud providers, behind one small interface (``ProviderOps``).

``ProviderOps`` works for any libcloud compute driver through its standard calls (tags through
``ex_metadata`` where ``create_node`` takes it). ``EC2Ops`` adds what EC2 offers: tags in the
create request itself (so a node is never untagged, even after a crash), an idempotency token
(``ClientToken``), bulk create (``MinCount``/``MaxCount``), server-side filters, stop/start, key pair
import and security groups. Callers wrap every call in ``map_libcloud_errors``.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import field, replace
from typing import Any, Mapping, Sequence, cast

from provisioning.drivers.libcloud_parts.credentials import Credentials
from provisioning.drivers.libcloud_parts.hostkeys import GeneratedHostKey
from provisioning.drivers.libcloud_parts.urls import CloudURL
from provisioning.errors import ConfigError, MissingExtra, UnsupportedOperation
from provisioning.inputs.records import record

__all__ = ["CreatePlan", "ProviderOps", "EC2Ops", "ops_for", "import_libcloud", "ALIVE"]

#: our status vocabulary; a node in one of ALIVE counts as existing
ALIVE = frozenset({"pending", "running", "stopping", "stopped", "unknown", "error"})


def import_libcloud() -> Any:
    """libcloud's compute providers module, or MissingExtra naming ``provisioning[cloud]``."""
    try:
        return importlib.import_module("libcloud.compute.providers")
    except ImportError as exc:
        raise MissingExtra("the libcloud: driver", "cloud", "apache-libcloud") from exc


@record(frozen=True)
class CreatePlan:
    """Everything one create request needs. Machines whose plans differ only by name can share
    one bulk request (``group_key``)."""

    name: str
    image: str
    size: str
    location: str | None = None
    key_pair: str | None = None
    security_groups: tuple[str, ...] = ()
    subnet: str | None = None
    userdata: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    client_token: str | None = None
    create_args: tuple[tuple[str, Any], ...] = ()
    #: the host key handed to the node in ``userdata`` (machines with one are never batched)
    host_key: GeneratedHostKey | None = None

    @property
    def group_key(self) -> tuple:
        return replace(self, name="", client_token=None,
                       tags=tuple(t for t in self.tags if t[0] not in
                                  ("provisioning:name", "Name"))).__repr__(),

    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)


def _libcloud_class(path: str) -> type:
    module_name, _, attr = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"driver_class {path!r} cannot be imported ({exc}); give "
                          "'package.module:ClassName' of a libcloud NodeDriver subclass",
                          key="driver_options.driver_class") from exc
    from libcloud.compute.base import NodeDriver

    if not (isinstance(cls, type) and issubclass(cls, NodeDriver)):
        raise ConfigError(f"driver_class {path!r} is not a libcloud NodeDriver subclass",
                          key="driver_options.driver_class")
    return cls


@record
class ProviderOps:
    url: CloudURL
    driver: Any
    supports_bulk: bool = field(default=False, init=False)
    supports_client_token: bool = field(default=False, init=False)
    #: the provider serves a Windows node's generated password (``password_data``)
    supports_password: bool = field(default=False, init=False)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def constructor_args(cls, url: CloudURL, options: Mapping[str, Any],
                         creds: Credentials) -> dict[str, Any]:
        args: dict[str, Any] = {}
        endpoint = options.get("endpoint") or {}
        for key in ("host", "port", "secure", "path"):
            if key in endpoint:
                args[key] = endpoint[key]
        if url.provider == "gce" and url.place:
            args["project"] = url.place
        elif url.provider.startswith("openstack") and url.place:
            args["ex_force_auth_url"] = url.place
        elif url.place:
            args["region"] = url.place
        if options.get("signature_version"):
            args["signature_version"] = str(options["signature_version"])
        args.update(options.get("driver_args") or {})
        return args

    @classmethod
    def build(cls, url: CloudURL, options: Mapping[str, Any], creds: Credentials) -> "ProviderOps":
        providers = import_libcloud()
        if options.get("driver_class"):
            driver_cls = _libcloud_class(str(options["driver_class"]))
        else:
            driver_cls = providers.get_driver(url.provider)
        args = cls.constructor_args(url, options, creds)
        accepted = inspect.signature(cast(Any, driver_cls).__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            args = {k: v for k, v in args.items() if k in accepted}
        positional = [creds.key] + ([creds.secret] if creds.secret is not None else [])
        return cls(url, driver_cls(*positional, **args))

    # -- capabilities ----------------------------------------------------------------------
    def implements(self, method: str) -> bool:
        """True when the libcloud driver really implements ``method`` (not the base stub)."""
        from libcloud.compute.base import NodeDriver

        mine = getattr(type(self.driver), method, None)
        return mine is not None and mine is not getattr(NodeDriver, method, None)

    @property
    def can_stop(self) -> bool:
        return self.implements("stop_node") and self.implements("start_node")

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def node_tags(node: Any) -> dict[str, str]:
        extra = node.extra or {}
        for key in ("tags", "metadata", "labels"):
            if isinstance(extra.get(key), Mapping):
                return {str(k): str(v) for k, v in extra[key].items()}
        return {}

    def status(self, node: Any) -> str:
        from libcloud.compute.types import NodeState

        state = node.state
        if state == NodeState.RUNNING:
            return "running"
        if state in (NodeState.PENDING, NodeState.STARTING, NodeState.REBOOTING,
                     NodeState.RECONFIGURING, NodeState.MIGRATING, NodeState.UPDATING):
            return "pending"
        if state == NodeState.STOPPING:
            return "stopping"
        if state in (NodeState.STOPPED, NodeState.SUSPENDED, NodeState.PAUSED):
            return "stopped"
        if state == NodeState.TERMINATED:
            return "terminated"
        if state == NodeState.ERROR:
            return "error"
        return "unknown"

    def alive(self, node: Any) -> bool:
        return self.status(node) in ALIVE

    def get_node(self, node_id: str) -> Any | None:
        for node in self.driver.list_nodes():
            if node.id == node_id:
                return node
        return None

    def tagged_nodes(self, tags: Mapping[str, str]) -> list[Any]:
        """Existing (not terminated) nodes carrying all ``tags``."""
        return [n for n in self.driver.list_nodes() if self.alive(n)
                and all(self.node_tags(n).get(k) == v for k, v in tags.items())]

    @staticmethod
    def node_size(node: Any) -> str | None:
        extra = node.extra or {}
        return getattr(node.size, "id", None) or extra.get("instance_type") or \
            extra.get("flavorId") or extra.get("machineType") or extra.get("size")

    @staticmethod
    def node_image(node: Any) -> str | None:
        extra = node.extra or {}
        return getattr(node.image, "id", None) or extra.get("image_id") or \
            extra.get("imageId") or extra.get("image")

    # -- changing --------------------------------------------------------------------------
    def _find(self, kind: str, wanted: str, items: Sequence[Any]) -> Any:
        for item in items:
            if str(item.id) == wanted or getattr(item, "name", None) == wanted:
                return item
        shown = ", ".join(str(i.id) for i in list(items)[:20])
        raise ConfigError(f"unknown {kind} {wanted!r} at {self.url}; choices: {shown}",
                          key=f"machine_options.{kind}")

    def create(self, plan: CreatePlan, count: int = 1) -> list[Any]:
        if count != 1:
            raise UnsupportedOperation(f"libcloud's {self.url.provider} driver has no bulk create")
        kwargs: dict[str, Any] = {
            "name": plan.name,
            "image": self._find("image", plan.image, self.driver.list_images()),
            "size": self._find("size", plan.size, self.driver.list_sizes()),
        }
        if plan.location:
            kwargs["location"] = self._find("location", plan.location,
                                            self.driver.list_locations())
        accepted = inspect.signature(self.driver.create_node).parameters
        if plan.tags and "ex_metadata" in accepted:
            kwargs["ex_metadata"] = plan.tag_dict()
        if plan.key_pair and "ex_keyname" in accepted:
            kwargs["ex_keyname"] = plan.key_pair
        if plan.userdata and "ex_userdata" in accepted:
            kwargs["ex_userdata"] = plan.userdata
        if plan.security_groups and "ex_security_groups" in accepted:
            kwargs["ex_security_groups"] = list(plan.security_groups)
        kwargs.update(dict(plan.create_args))
        return [self.driver.create_node(**kwargs)]

    def start(self, node: Any) -> None:
        self.driver.start_node(node)

    def stop(self, node: Any) -> None:
        self.driver.stop_node(node)

    def destroy(self, node: Any) -> None:
        self.driver.destroy_node(node)

    def set_tags(self, node: Any, tags: Mapping[str, str]) -> None:
        if hasattr(self.driver, "ex_create_tags"):
            self.driver.ex_create_tags(node, dict(tags))
        elif hasattr(self.driver, "ex_set_metadata"):
            self.driver.ex_set_metadata(node, {**self.node_tags(node), **tags})
        else:
            raise UnsupportedOperation(f"libcloud's {self.url.provider} driver cannot tag nodes")

    @property
    def takes_userdata(self) -> bool:
        """The create request carries userdata (how cloud-init gets the generated host key)."""
        return "ex_userdata" in inspect.signature(self.driver.create_node).parameters

    @property
    def has_console(self) -> bool:
        """The provider serves what the node printed to its console."""
        return callable(getattr(self.driver, "ex_get_console_output", None))

    def console_output(self, node: Any) -> str:
        """The node's console text so far ('' when the provider has none yet)."""
        got = self.driver.ex_get_console_output(node)
        text = got.get("output") if isinstance(got, Mapping) else got
        return str(text or "")

    def node_userdata(self, node: Any) -> str | None:
        """The userdata the node was created with, when the provider serves it back."""
        return None

    def password_data(self, node_id: str) -> str:
        raise UnsupportedOperation(f"libcloud's {self.url.provider} driver cannot fetch a Windows "
                                   "node's password")

    # -- key pairs and security groups -----------------------------------------------------
    def key_pair_names(self) -> list[str]:
        return [k.name for k in self.driver.list_key_pairs()]

    def import_key_pair(self, name: str, public_openssh: str) -> None:
        self.driver.import_key_pair_from_string(name, public_openssh)

    def security_group_names(self) -> list[str]:
        if hasattr(self.driver, "ex_list_security_groups"):
            return [g.name for g in self.driver.ex_list_security_groups()]
        raise UnsupportedOperation(f"libcloud's {self.url.provider} driver has no security groups")

    def ssh_group_state(self, name: str, cidr: str) -> tuple[str | None, bool]:
        """(id of security group ``name`` or None, whether it already lets TCP 22 in from cidr)."""
        raise UnsupportedOperation(f"opening SSH through a security group is implemented for EC2 "
                                   f"only, not {self.url.provider}; open it yourself and name "
                                   "the group in security_groups")

    def create_security_group(self, name: str) -> str:
        raise UnsupportedOperation("creating security groups is implemented for EC2 only")

    def open_ssh(self, group_id: str, cidr: str) -> None:
        raise UnsupportedOperation("opening SSH is implemented for EC2 only")

    # -- describe --------------------------------------------------------------------------
    def choices(self, options: Mapping[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            "images": [_brief(i) for i in self.driver.list_images()],
            "sizes": [_brief(s, "ram", "disk", "price") for s in self.driver.list_sizes()],
            "locations": [_brief(loc, "country") for loc in self.driver.list_locations()],
        }
        for method in ("ex_list_networks", "list_networks"):
            if hasattr(self.driver, method):
                out["networks"] = [_brief(n) for n in getattr(self.driver, method)()]
                break
        if hasattr(self.driver, "ex_list_security_groups"):
            out["security_groups"] = [_brief(g) for g in self.driver.ex_list_security_groups()]
        return out


def _brief(item: Any, *fields: str) -> dict[str, Any]:
    out = {"id": str(getattr(item, "id", "")), "name": getattr(item, "name", None)}
    for name in fields:
        value = getattr(item, name, None)
        if value is not None:
            out[name] = value
    return out


_EC2_STATUS = {"pending": "pending", "running": "running", "stopping": "stopping",
               "stopped": "stopped", "shutting-down": "terminating", "terminated": "terminated"}
_EC2_ALIVE_STATES = ["pending", "running", "stopping", "stopped"]


@record
class EC2Ops(ProviderOps):
    def __post_init__(self) -> None:
        self.supports_bulk = True
        self.supports_client_token = True
        self.supports_password = True

    @classmethod
    def constructor_args(cls, url, options, creds):
        args = super().constructor_args(CloudURL("ec2"), options, creds)
        args["region"] = url.place
        if creds.token:
            args["token"] = creds.token
        return args

    @property
    def can_stop(self) -> bool:
        return True

    @property
    def takes_userdata(self) -> bool:
        return True

    def status(self, node: Any) -> str:
        raw = (node.extra or {}).get("status")
        return _EC2_STATUS.get(str(raw)) or super().status(node)

    def get_node(self, node_id: str) -> Any | None:
        # a filter (unlike InstanceId.N) answers an empty list for an unknown id, not an error
        nodes = self.driver.list_nodes(ex_filters={"instance-id": node_id})
        return nodes[0] if nodes else None

    def password_data(self, node_id: str) -> str:
        """``GetPasswordData``: the base64 password encrypted with the key pair's public key,
        empty until Windows has posted it (libcloud has no call for it, so the request is ours)."""
        from libcloud.compute.drivers.ec2 import NAMESPACE

        reply = self.driver.connection.request(
            self.driver.path, params={"Action": "GetPasswordData", "InstanceId": node_id}).object
        found = reply.find(f"{{{NAMESPACE}}}passwordData")
        return (found.text or "").strip() if found is not None else ""

    def node_userdata(self, node: Any) -> str | None:
        """``DescribeInstanceAttribute`` ``userData``, decoded (libcloud has no call for it)."""
        import base64

        from libcloud.compute.drivers.ec2 import NAMESPACE

        reply = self.driver.connection.request(self.driver.path, params={
            "Action": "DescribeInstanceAttribute", "InstanceId": node.id,
            "Attribute": "userData"}).object
        found = reply.find(f"{{{NAMESPACE}}}userData/{{{NAMESPACE}}}value")
        if found is None or not (found.text or "").strip():
            return None
        return base64.b64decode(found.text).decode("utf-8", "replace")

    def tagged_nodes(self, tags: Mapping[str, str]) -> list[Any]:
        filters: dict[str, Any] = {f"tag:{k}": v for k, v in tags.items()}
        filters["instance-state-name"] = list(_EC2_ALIVE_STATES)
        return [n for n in self.driver.list_nodes(ex_filters=filters) if self.alive(n)
                and all(self.node_tags(n).get(k) == v for k, v in tags.items())]

    def create(self, plan: CreatePlan, count: int = 1) -> list[Any]:
        from libcloud.compute.base import NodeImage, NodeSize

        unknown: Any = None  # what libcloud's own lookups leave unset
        kwargs: dict[str, Any] = {
            "name": plan.name,
            "image": NodeImage(id=plan.image, name=unknown, driver=self.driver),
            "size": NodeSize(id=plan.size, name=plan.size, ram=unknown, disk=unknown,
                             bandwidth=None, price=unknown, driver=self.driver),
            "ex_metadata": plan.tag_dict(),
            "ex_mincount": count,
            "ex_maxcount": count,
        }
        if plan.location:
            kwargs["location"] = self._find("location", plan.location,
                                            self.driver.list_locations())
        if plan.key_pair:
            kwargs["ex_keyname"] = plan.key_pair
        if plan.userdata:
            kwargs["ex_userdata"] = plan.userdata
        if plan.client_token:
            kwargs["ex_clienttoken"] = plan.client_token
        if plan.subnet:
            subnets = self.driver.ex_list_subnets(filters={"subnet-id": plan.subnet})
            if not subnets:
                raise ConfigError(f"subnet {plan.subnet!r} not found in {self.url}",
                                  key="machine_options.subnet")
            kwargs["ex_subnet"] = subnets[0]
            if plan.security_groups:
                kwargs["ex_security_group_ids"] = self._group_ids(plan.security_groups)
        elif plan.security_groups:
            kwargs["ex_security_groups"] = list(plan.security_groups)
        kwargs.update(dict(plan.create_args))
        made = self.driver.create_node(**kwargs)
        return list(made) if isinstance(made, list) else [made]

    def _group_ids(self, names: Sequence[str]) -> list[str]:
        groups = {g.name: g.id for g in self.driver.ex_get_security_groups()}
        return [groups.get(n, n) for n in names]

    def security_group_names(self) -> list[str]:
        return [g.name for g in self.driver.ex_get_security_groups()]

    def ssh_group_state(self, name: str, cidr: str) -> tuple[str | None, bool]:
        group = {g.name: g for g in self.driver.ex_get_security_groups()}.get(name)
        if group is None:
            return None, False
        opened = any(str(r.get("protocol")) in ("tcp", "-1") and _port_in(r, 22)
                     and cidr in (r.get("cidr_ips") or []) for r in group.ingress_rules or [])
        return group.id, opened

    def create_security_group(self, name: str) -> str:
        created = self.driver.ex_create_security_group(
            name, "SSH access for machines made by provisioning")
        return created["group_id"]

    def open_ssh(self, group_id: str, cidr: str) -> None:
        self.driver.ex_authorize_security_group_ingress(group_id, 22, 22, cidr_ips=[cidr])

    def choices(self, options: Mapping[str, Any]) -> dict[str, list[Any]]:
        images: dict[str, Any] = {}
        for owner in options.get("image_owners") or ["self", "amazon"]:
            for image in self.driver.list_images(ex_owner=str(owner)):
                images.setdefault(image.id, image)
        return {
            "images": [_brief(i) for i in images.values()],
            "sizes": [_brief(s, "ram", "disk", "price") for s in self.driver.list_sizes()],
            "locations": [{"id": loc.name, "name": loc.name,
                           "region": getattr(loc.availability_zone, "region_name", None)}
                          for loc in self.driver.list_locations()],
            "networks": [_brief(n) for n in self.driver.ex_list_networks()]
                        + [_brief(s) for s in self.driver.ex_list_subnets()],
            "security_groups": [_brief(g) for g in self.driver.ex_get_security_groups()],
        }


def _port_in(rule: Mapping[str, Any], port: int) -> bool:
    try:
        return int(rule.get("from_port")) <= port <= int(rule.get("to_port"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(rule.get("protocol")) == "-1"


def ops_for(url: CloudURL, options: Mapping[str, Any], creds: Credentials) -> ProviderOps:
    cls = EC2Ops if url.provider == "ec2" else ProviderOps
    return cls.build(url, options, creds)
