"""The driver contract's five methods, and the short path to them.

A driver implements either the *warehouse hooks* (find, create, read the state of, start, stop,
delete one resource, and open the Machine of a running one) and this class turns them into
``allocate_machine`` / ``ready_machine`` / ``connect_to_machine`` / ``stop_machine`` /
``destroy_machine``, owning in one place what every driver used to repeat: adopt-or-create,
the why-run branch (every change through ``perform_action``), the fault points of
``provisioning.faults`` and the save of the reference. Or it overrides the five methods itself
(the advanced path, which every driver written before the hooks takes, unchanged).

Making resources (one, or many in one request, and pending references) is ``creating.py``'s
job, removing them (one, or many in one request) ``deleting.py``'s; this class joins them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from provisioning.driver.capabilities import Capabilities
from provisioning.driver.creating import PENDING_MARK, CreateContract, Creation
from provisioning.driver.deleting import DeleteContract
from provisioning.errors import MachineNotFound, ProviderError, UnsupportedOperation
from provisioning.faults import checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.machine.base import Machine
    from provisioning.spec import MachineSpec

__all__ = ["ResourceContract", "Creation"]


class ResourceContract(CreateContract, DeleteContract):
    """The contract methods and the warehouse hooks of ``Driver`` (its first base class)."""

    scheme: ClassVar[str]
    version: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    driver_url: str
    driver_options: dict[str, Any]

    def base_reference(self, **fields: Any) -> dict[str, Any]:
        """A new reference with the fields every driver must record."""
        return {"driver_url": self.driver_url, "driver_version": self.version, **fields}

    # -- the contract ------------------------------------------------------------------------
    # A driver implements either the warehouse hooks below (the short path: the base class
    # then owns adopt-or-create, why-run, the fault points and saving the reference), or
    # overrides these five methods itself (the advanced path, for warehouses the hooks do not
    # fit). Mixing is fine: override one method, leave the others to the hooks.
    def allocate_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                         machine_options: Mapping[str, Any]) -> None:
        """Adopt-or-create: an existing resource is kept (``compare_with_wish`` reports what
        differs); a lost one is reported and re-created; one ``find_resource`` finds (made by
        a run that died before saving) is adopted; otherwise ``create_resource`` makes one."""
        creation = self.settle_allocation(action_handler, machine_spec, machine_options)
        if creation is not None:
            self.make_resources(action_handler, [creation])

    def ready_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                      machine_options: Mapping[str, Any]) -> "Machine | None":
        """Start the resource if it is stopped, then ``wait_for_machine``."""
        seen = self.start_if_stopped(action_handler, machine_spec, machine_options)
        if seen is None:
            return None
        return self.wait_once_started(action_handler, machine_spec, machine_options,
                                      started=seen == "started")

    def wait_once_started(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                          machine_options: Mapping[str, Any], *, started: bool) -> "Machine":
        """The second half of ``ready_machine``, after ``start_if_stopped`` (batch versions
        call it for each machine): the fault point ``during_ready``, then ``wait_for_machine``."""
        checkpoint("during_ready", machine=machine_spec.name)
        return self.wait_for_machine(action_handler, machine_spec, machine_options,
                                     started=started)

    def start_if_stopped(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                         machine_options: Mapping[str, Any]) -> str | None:
        """The first half of ``ready_machine`` (batch versions that wait for many machines at
        once call it for each): start a stopped resource. "running" when it ran already,
        "started" when this call started it, None when why-run only planned its allocation
        or its start (then there is nothing to wait for)."""
        if not machine_spec.exists or self.create_pending(machine_spec):
            self.plan_ready_of_unallocated(
                action_handler, machine_spec,
                self.describe_ready(machine_spec, machine_options) if action_handler.why_run
                else "")
            return None
        state = self.resource_state(machine_spec)
        if state == "missing" and action_handler.why_run:  # gone since allocate looked (another
            # run's destroy): a real run re-creates it, so only the wait is planned
            self.plan_ready_of_unallocated(action_handler, machine_spec,
                                           self.describe_ready(machine_spec, machine_options))
            return None
        if state == "missing":
            raise MachineNotFound(f"{self.resource_label(machine_spec.reference)} of "
                                  f"{machine_spec.name!r} is gone; run up to re-create it",
                                  machine=machine_spec.name)
        if state in ("stopped", "starting"):
            if state == "stopped":
                action_handler.perform_action(
                    f"start {self.resource_label(machine_spec.reference)}",
                    lambda: self.start_resource(action_handler, machine_spec, machine_options))
            if action_handler.why_run:
                action_handler.report_progress(
                    f"would wait for {self.describe_ready(machine_spec, machine_options)}")
                return None
            return "started"
        return "running"  # or "unknown": the warehouse cannot tell, so ready waits for it

    def connect_to_machine(self, machine_spec: "MachineSpec",
                           machine_options: Mapping[str, Any]) -> "Machine":
        """``open_machine`` of a running resource; changes nothing, waits for nothing."""
        state = self.resource_state(machine_spec) if machine_spec.exists else "missing"
        if state == "missing":
            raise MachineNotFound(f"machine {machine_spec.name!r} has no {self.resource_kind} "
                                  "(not allocated, or lost); run up to create it",
                                  machine=machine_spec.name)
        if state == "stopped":
            raise ProviderError(f"{self.resource_label(machine_spec.reference)} of "
                                f"{machine_spec.name!r} is stopped; ready it first (converge up)",
                                machine=machine_spec.name, provider=self.scheme)
        return self.open_machine(machine_spec, machine_options)

    def stop_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                     machine_options: Mapping[str, Any]) -> None:
        """``stop_resource`` of a running resource; UnsupportedOperation when not stoppable."""
        if not self.capabilities.stoppable:
            raise UnsupportedOperation(
                f"the {self.scheme}: driver cannot stop machines (its capabilities say "
                f"stoppable=False); destroy the machine instead", machine=machine_spec.name)
        state = self.resource_state(machine_spec)
        if state != "running":
            action_handler.report_progress(f"{self.resource_label(machine_spec.reference)} is "
                                           f"{state}: nothing to stop")
            return
        action_handler.perform_action(
            f"stop {self.resource_label(machine_spec.reference)}",
            lambda: self.stop_resource(action_handler, machine_spec, machine_options))

    def machine_state(self, machine_spec: "MachineSpec") -> str:
        """What the warehouse says of the machine now: 'running', 'stopped', 'missing',
        'unknown'. Changes nothing. Used by ``status``."""
        if not machine_spec.reference:
            return "missing"
        if self._uses_hooks("resource_state"):
            return self.resource_state(machine_spec)
        return "unknown"

    # -- the warehouse hooks: what a driver on the short path implements ----------------------
    #: how actions name a resource: "create server", "destroy slot 3"
    resource_kind: ClassVar[str] = "resource"
    def find_resource(self, machine_spec: "MachineSpec") -> dict[str, Any] | None:
        """The reference fields of a resource an earlier run made for this machine but died
        before saving (found by the tag or idempotency token ``create_resource`` put on it:
        see ``idempotency_token``), or None. The default finds none: such a driver declares
        ``crash_safe=False``."""
        return None

    def create_resource(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                        machine_options: Mapping[str, Any]) -> dict[str, Any]:
        """Make the resource, tagged so ``find_resource`` finds it, and return the fields
        the reference records (the provider's id). Fast: no waiting for boot. Called only in
        a real run; the base class saves the reference."""
        raise self._no_hook("create_resource", "allocate_machine")

    def resource_state(self, machine_spec: "MachineSpec") -> str:
        """'running', 'stopped' or 'missing' for the resource the reference records (which
        may be empty: 'missing'). Changes nothing. 'starting' while it is on its way to
        running (a booting server: ready waits for it without starting it; why-run reports
        that it would). 'unknown' when the warehouse cannot tell (a host someone else runs):
        allocate keeps it, ready waits for it, connect opens it and destroy deletes it as if
        it ran; stop leaves both alone."""
        raise self._no_hook("resource_state", "machine_state")

    def open_machine(self, machine_spec: "MachineSpec", machine_options: Mapping[str, Any],
                     action_handler: "ActionHandler | None" = None) -> "Machine":
        """The Machine for a running resource (``provisioning.driver.machine_for`` builds one
        from transport options). No waiting: see ``wait_for_machine``."""
        raise self._no_hook("open_machine", "connect_to_machine")

    def start_resource(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any]) -> None:
        """Boot a stopped resource (return at once; ``wait_for_machine`` waits)."""
        raise self._no_hook("start_resource", "ready_machine")

    def stop_resource(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                      machine_options: Mapping[str, Any]) -> None:
        """Power a running resource off, keeping it (``Capabilities.stoppable``)."""
        raise self._no_hook("stop_resource", "stop_machine")

    def wait_for_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                         machine_options: Mapping[str, Any], *,
                         started: bool = True) -> "Machine":
        """A running resource's Machine once it accepts commands (``started``: ready has just
        started it; False: it ran already, so it may answer at once). The default opens it and
        waits until its transport connects (``ready_timeout``: the machine option, else the
        driver option, else 120 s)."""
        machine = self.open_machine(machine_spec, machine_options, action_handler)
        if not action_handler.why_run:
            timeout = (machine_options.get("ready_timeout")
                       or self.driver_options.get("ready_timeout") or 120.0)
            machine.wait_until_connectable(float(timeout), action_handler)
        return machine

    def compare_with_wish(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                          machine_options: Mapping[str, Any]) -> None:
        """The resource exists: report what differs from ``machine_options`` that cannot be
        changed (size, image), or change it through ``perform_action``. Default: nothing."""

    def describe_create(self, machine_spec: "MachineSpec",
                        machine_options: Mapping[str, Any]) -> str:
        """The create action's description (``[web-1] create server (small)``)."""
        return f"create {self.resource_kind}"

    def adopt_resource(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any], found: dict[str, Any]) -> None:
        """Make what ``find_resource`` found the machine's, through ``perform_action``.
        Default: save ``found`` as the reference ("adopt server srv-1 tagged for this
        machine"); override to report more, or to tag the resource, first."""
        action_handler.perform_action(
            f"adopt {self.resource_label(found)} tagged for this machine",
            lambda: self.save_reference(machine_spec, found))

    def create_event_data(self, machine_spec: "MachineSpec",
                          machine_options: Mapping[str, Any]) -> dict[str, Any] | None:
        """Optional: the ``data`` of the create action's event (say, the address of a host
        that was registered). Default: none."""
        return None

    def describe_ready(self, machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any]) -> str:
        """What ``ready_machine`` would wait for when why-run only planned the allocation
        ("would wait for the new server to be ready") or the start ("... for the server to
        be ready") of the machine."""
        if machine_spec.exists:
            return f"the {self.resource_kind} to be ready"
        return f"the new {self.resource_kind} to be ready"

    def report_lost(self, action_handler: "ActionHandler", machine_spec: "MachineSpec") -> None:
        """Tell that the resource the reference records is gone (``allocate_machine`` then
        adopts or creates another): "server srv-1a2b no longer exists; re-creating it"."""
        action_handler.report_progress(
            f"{self.resource_label(machine_spec.reference)} no longer exists; re-creating it")

    def resource_label(self, reference: Mapping[str, Any]) -> str:
        """How actions name the resource a reference records: the resource kind and its id
        (``server srv-1a2b``): the first field named ``id`` or ``..._id``, else the first field.
        By name, not position: a reference read back from the store has its keys sorted."""
        own = [(k, v) for k, v in reference.items()
               if k not in ("driver_url", "driver_version", PENDING_MARK)]
        ids = [v for k, v in own if (k == "id" or k.endswith("_id")) and v is not None]
        label = ids[0] if ids else (own[0][1] if own else None)
        return self.resource_kind if label is None else f"{self.resource_kind} {label}"

    # -- what the short path is made of (also for drivers on the advanced path) ---------------
    @staticmethod
    def idempotency_token(machine_spec: "MachineSpec") -> str:
        """The same for every run against one state store and machine (and its generation:
        ``MachineSpec.resource_name``): tag resources with it (or put it in a ClientToken) so
        ``find_resource`` finds them after a crash."""
        import hashlib  # OpenSSL's digests load on first use, not at start-up

        return hashlib.sha256(f"{machine_spec.store_id or ''}\0{machine_spec.resource_name}"
                              .encode()).hexdigest()[:24]

    def update_reference(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                         fields: Mapping[str, Any]) -> None:
        """Record what changed of a running resource (a new address after a boot) and save
        it; under why-run only in memory."""
        before = dict(machine_spec.reference)
        machine_spec.reference.update(fields)
        if machine_spec.reference != before and not action_handler.why_run:
            machine_spec.save()

    #: the old method each hook serves, and the hooks it needs (checked at construction)
    _HOOKS_OF: ClassVar[dict[str, tuple[str, ...]]] = {
        "allocate_machine": ("create_resource", "resource_state"),
        "ready_machine": ("resource_state", "open_machine"),
        "connect_to_machine": ("resource_state", "open_machine"),
        "destroy_machine": ("resource_state", "delete_resource"),
    }

    def _uses_hooks(self, hook: str) -> bool:
        return getattr(type(self), hook) is not getattr(ResourceContract, hook)

    def _no_hook(self, hook: str, method: str) -> Exception:
        return UnsupportedOperation(f"the {self.scheme}: driver implements neither {hook} nor "
                                    f"{method} (docs/driver-guide.md: the warehouse hooks)")

    @classmethod
    def missing_methods(cls) -> list[str]:
        """Contract methods the class neither overrides nor serves through the hooks."""
        def own(name: str) -> bool:
            return getattr(cls, name) is not getattr(ResourceContract, name)

        missing = []
        for method, hooks in cls._HOOKS_OF.items():
            if method == "ready_machine" and own("wait_for_machine"):
                hooks = ("resource_state",)  # its own wait opens the machine
            if method == "allocate_machine" and own("create_resources"):
                hooks = ("resource_state",)  # it makes them in its own requests
            if not own(method):
                missing += [h for h in hooks if not own(h) and h not in missing]
        return missing

    def __new__(cls, *args: Any, **kwargs: Any) -> "ResourceContract":
        missing = cls.missing_methods()
        if missing:
            raise TypeError(f"{cls.__name__} cannot be built: implement {', '.join(missing)} "
                            "(the warehouse hooks) or override the contract methods that use "
                            "them (docs/driver-guide.md)")
        return super().__new__(cls)

    @staticmethod
    def plan_ready_of_unallocated(action_handler: "ActionHandler", machine_spec: "MachineSpec",
                                  wait: str) -> None:
        """``ready_machine`` of a machine not allocated yet. Under why-run its allocation was
        only planned, so report that we would ``wait`` (the caller then returns None);
        otherwise it is the caller's mistake: MachineNotFound, since ``up`` allocates first."""
        if action_handler.why_run:
            action_handler.report_progress(f"would wait for {wait}")
            return
        raise MachineNotFound(f"machine {machine_spec.name!r} is not allocated; run up",
                              machine=machine_spec.name)
