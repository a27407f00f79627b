"""The driver contract's five methods, and the short path to them.

A driver implements either the *warehouse hooks* (find, create, read the state of, start, stop,
delete one resource, and open the Machine of a running one) and this class turns them into
``allocate_machine`` / ``ready_machine`` / ``connect_to_machine`` / ``stop_machine`` /
``destroy_machine``, owning in one place what every driver used to repeat: adopt-or-create,
the why-run branch (every change through ``perform_action``), the fault points of
``provisioning.faults`` and the save of the reference. Or it overrides the five methods itself
(the advanced path, which every driver written before the hooks takes, unchanged).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, ClassVar, Hashable, Mapping, Sequence

from provisioning.driver.capabilities import Capabilities
from provisioning.errors import ConfigError, MachineNotFound, ProviderError, UnsupportedOperation
from provisioning.faults import checkpoint
from provisioning.inputs.records import record
from provisioning.parallel import BatchResult, Outcome

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.machine.base import Machine
    from provisioning.spec import MachineSpec

__all__ = ["ResourceContract", "Creation"]

#: the references ``save_pending_reference`` replaced during this thread's create request
_pending = threading.local()
#: the reference field that marks a pending reference (``create_pending``)
PENDING_MARK = "create_pending"


@record
class Creation:
    """One machine's create, prepared before the create action (``prepare_create``)."""

    machine_spec: "MachineSpec"
    machine_options: Mapping[str, Any]
    #: the machine's handler (its actions carry its name)
    action_handler: "ActionHandler"
    #: the create action's description and event data
    description: str
    data: dict[str, Any] | None = None
    #: creations with the same group (not None) may be made in one request
    group: Hashable | None = None
    #: the driver's own: whatever its ``create_resources`` needs (never saved)
    plan: Any = None


class ResourceContract:
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

    def settle_allocation(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                          machine_options: Mapping[str, Any]) -> "Creation | None":
        """The first half of ``allocate_machine``: keep, or adopt, the machine's resource;
        the ``Creation`` to make when there is none (``prepare_create``), else None."""
        if machine_spec.exists and not self.create_pending(machine_spec):
            if self.resource_state(machine_spec) != "missing":
                self.compare_with_wish(action_handler, machine_spec, machine_options)
                return None
            self.report_lost(action_handler, machine_spec)
        found = self.find_resource(machine_spec)
        if found is not None:
            self.adopt_resource(action_handler, machine_spec, machine_options, found)
            return None
        return self.prepare_create(action_handler, machine_spec, machine_options)

    def make_resources(self, action_handler: "ActionHandler", creations: Sequence["Creation"],
                       saved: set[str] | None = None) -> None:
        """The second half: one create action for ``creations`` (one machine's, or a group
        ``create_resources`` makes in one request). The fault point ``after_create`` follows
        the request, ``before_save`` precedes each save. A ``ConfigError`` from the request
        means nothing was made: pending references (``save_pending_reference``) are taken
        back. ``saved`` collects the names of the machines whose reference was saved."""
        single = len(creations) == 1
        handler = creations[0].action_handler if single else action_handler
        made: list[Any] = []
        saved = saved if saved is not None else set()

        def request() -> None:
            _pending.saved = []
            try:
                made[:] = self.create_resources(handler, creations)
            except ConfigError:
                for spec, old in _pending.saved:
                    self._take_back(spec, old)
                raise
            finally:
                _pending.saved = None
            checkpoint("after_create",
                       machine=creations[0].machine_spec.name if single else None)
            if len(made) != len(creations):
                raise ProviderError(f"asked the {self.scheme}: warehouse for {len(creations)} "
                                    f"resources in one request, got {len(made)}",
                                    provider=self.scheme)

        def save_all() -> None:
            """Every reference, ``before_save`` for each, then one save for all of them."""
            ready: list[MachineSpec] = []
            try:
                for creation, result in zip(creations, made):
                    self._record_reference(creation.machine_spec,
                                           self.record_created(creation, result))
                    checkpoint("before_save", machine=creation.machine_spec.name)
                    ready.append(creation.machine_spec)
            finally:
                self.save_references(ready, saved)

        def create() -> None:
            request()
            save_all()
        if single:
            handler.perform_action(creations[0].description, create, data=creations[0].data)
        elif not self.report_each_creation:
            handler.perform_action(self.describe_creations(creations), create)
        else:  # one request, then each machine's create reported as its own action
            failed: Exception | None = None
            if not handler.why_run:
                request()
                try:
                    save_all()
                except Exception as exc:  # reported below each machine that was saved
                    failed = exc
            for creation in creations:
                if handler.why_run or creation.machine_spec.name in saved:
                    creation.action_handler.perform_action(  # made and saved above
                        creation.description, lambda: None, data=creation.data)
            if failed is not None:
                raise failed

    def allocate_together(self, action_handler: "ActionHandler",
                          specs_and_options: Sequence[tuple["MachineSpec", Mapping[str, Any]]],
                          ) -> BatchResult:
        """``allocate_machines`` of a driver that makes many resources in one request: each
        machine is settled one by one (kept, adopted, or prepared), then the creations of
        each ``Creation.group`` are made in one ``make_resources``. One outcome per machine:
        a failure hides no other machine's."""
        results = BatchResult((spec.name, Outcome(spec.name)) for spec, _ in specs_and_options)
        groups: dict[Any, list[Creation]] = {}
        for spec, options in specs_and_options:
            try:
                creation = self.settle_allocation(action_handler.for_machine(spec.name), spec,
                                                  options)
            except Exception as exc:  # this machine's outcome; the others go on
                results[spec.name].error = exc
                continue
            if creation is not None:
                key = creation.group if creation.group is not None else id(creation)
                groups.setdefault(key, []).append(creation)
        saved: set[str] = set()
        for members in groups.values():
            try:
                self.make_resources(action_handler, members, saved)
            except Exception as exc:
                for creation in members:
                    name = creation.machine_spec.name
                    if results[name].error is None and name not in saved:
                        results[name].error = exc
        return results

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

    def destroy_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                        machine_options: Mapping[str, Any]) -> None:
        """``delete_resource``, the fault point ``during_destroy``, then ``finish_delete``, in
        one action; a resource already gone is reported (idempotent), and what a destroy killed
        between the two halves left (``unfinished_delete``) is finished."""
        if not machine_spec.reference:
            action_handler.report_progress("not allocated: nothing to destroy")
            return
        if self.resource_state(machine_spec) == "missing":
            left = self.unfinished_delete(machine_spec)
            label = self.resource_label(machine_spec.reference)
            if left is None:
                action_handler.report_progress(f"{label} is already gone")
                return
            action_handler.perform_action(
                f"finish destroying {label}: remove {left}",
                lambda: self.finish_delete(action_handler, machine_spec))
            return

        def delete() -> None:
            self.delete_resource(action_handler, machine_spec)
            checkpoint("during_destroy", machine=machine_spec.name)
            self.finish_delete(action_handler, machine_spec)
        action_handler.perform_action(self.describe_delete(machine_spec), delete)

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
    #: True: creations ``create_resources`` makes in one request are reported as one create
    #: action per machine (its own description, as if made alone) instead of one action
    #: described by ``describe_creations``; the request is made before the first is reported
    report_each_creation: ClassVar[bool] = False

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

    def delete_resource(self, action_handler: "ActionHandler", machine_spec: "MachineSpec") -> None:
        """Remove the resource and whatever belongs to it. Called only in a real run, only
        when ``resource_state`` is not 'missing'."""
        raise self._no_hook("delete_resource", "destroy_machine")

    def finish_delete(self, action_handler: "ActionHandler", machine_spec: "MachineSpec") -> None:
        """Optional: the second half of a removal ``delete_resource`` began (delete the files
        moved aside, the snapshots, wait until it is gone). Idempotent: it also runs in a later
        destroy when a killed one left it undone (``unfinished_delete``). The fault point
        ``during_destroy`` falls between the halves. Default: nothing."""

    def unfinished_delete(self, machine_spec: "MachineSpec") -> str | None:
        """Optional: what a destroy killed between ``delete_resource`` and ``finish_delete``
        left of a resource ``resource_state`` calls 'missing' ("2 snapshots"), or None. Changes
        nothing. Default: None (the first half removes everything)."""
        return None

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

    def prepare_create(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any]) -> "Creation":
        """Check and prepare what creating needs, before the create action (also under
        why-run): validate, import a key pair or open a port (each through
        ``perform_action``). Default: a ``Creation`` described by ``describe_create`` and
        ``create_event_data``, in no group."""
        return Creation(machine_spec, machine_options, action_handler,
                        self.describe_create(machine_spec, machine_options),
                        self.create_event_data(machine_spec, machine_options))

    def create_resources(self, action_handler: "ActionHandler",
                         creations: Sequence["Creation"]) -> list[Any]:
        """Make the resources of ``creations`` (one, or a group that shares one request) and
        return what was made for each, in order (``record_created`` turns it into reference
        fields). Called only in a real run. Default: ``create_resource`` of each."""
        return [self.create_resource(c.action_handler, c.machine_spec, c.machine_options)
                for c in creations]

    def record_created(self, creation: "Creation", made: Any) -> dict[str, Any]:
        """The reference fields of what ``create_resources`` made for ``creation`` (after
        the ``after_create`` fault point: tag a resource made in a shared request with its
        machine here). Default: ``made`` itself."""
        return dict(made)

    def describe_creations(self, creations: Sequence["Creation"]) -> str:
        """The action's description when ``create_resources`` makes several in one request."""
        names = ", ".join(c.machine_spec.name for c in creations)
        return f"create a {self.resource_kind} for each of {names} in one request"

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

    def describe_delete(self, machine_spec: "MachineSpec") -> str:
        """The destroy action's description (``[web-1] destroy server srv-1a2b``)."""
        return f"destroy {self.resource_label(machine_spec.reference)}"

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

    def save_reference(self, machine_spec: "MachineSpec", fields: Mapping[str, Any], *,
                       created: bool = False) -> None:
        """Record ``fields`` (with ``driver_url`` and ``driver_version``) as the machine's
        reference and save it, passing the fault points ``after_create`` (when ``created``)
        and ``before_save``: the one place the short path saves a reference."""
        if created:
            checkpoint("after_create", machine=machine_spec.name)
        self._record_reference(machine_spec, fields)
        checkpoint("before_save", machine=machine_spec.name)
        machine_spec.save()

    def _record_reference(self, machine_spec: "MachineSpec", fields: Mapping[str, Any]) -> None:
        """``fields`` as the machine's whole reference (a pending mark dropped: made now)."""
        machine_spec.reference = self.base_reference(
            **{k: v for k, v in fields.items() if k != PENDING_MARK})

    @staticmethod
    def save_references(specs: Sequence["MachineSpec"], saved: set[str] | None = None) -> None:
        """Save machines whose reference was just recorded, each store's in one ``save_many``
        (a batch create's hundred saves in one transaction). ``saved`` collects the names
        saved; the first error is raised once every store was tried."""
        failed: Exception | None = None
        stores: dict[int, list[MachineSpec]] = {}
        for spec in specs:
            stores.setdefault(id(spec.store), []).append(spec)
        for group in stores.values():
            try:
                if group[0].store is None:
                    continue  # an entry of no store: nothing to write
                group[0].store.save_many(group)
            except Exception as exc:
                failed = failed or exc
            finally:
                if saved is not None:
                    saved.update(s.name for s in group if s.store is None or s.unchanged())
        if failed is not None:
            raise failed

    def save_pending_reference(self, machine_spec: "MachineSpec",
                               fields: Mapping[str, Any]) -> None:
        """Inside ``create_resources``, before the request: record ``fields`` (an idempotency
        token, a batch id, a host key made for the resource) so a crash during the request
        leaves a trace the re-run finds. No fault point; a ``ConfigError`` from the request
        takes it back (nothing was made)."""
        saved = getattr(_pending, "saved", None)
        if saved is not None and all(spec is not machine_spec for spec, _ in saved):
            saved.append((machine_spec, dict(machine_spec.reference)))
        machine_spec.reference = self.base_reference(**{**fields, PENDING_MARK: True})
        machine_spec.save()

    def create_pending(self, machine_spec: "MachineSpec") -> bool:
        """True while the reference records only what ``save_pending_reference`` saved before
        a create request (a run killed during the request: the resource may or may not exist,
        and the next real allocate finds it or creates it). Allocate then skips the lost-resource
        report, and ready plans ("would wait for the new ...") or, in a real run, asks for
        ``up``. Default: the mark ``save_pending_reference`` leaves; override when your
        references tell it themselves (no provider id yet)."""
        return bool(machine_spec.reference.get(PENDING_MARK))

    def update_reference(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                         fields: Mapping[str, Any]) -> None:
        """Record what changed of a running resource (a new address after a boot) and save
        it; under why-run only in memory."""
        before = dict(machine_spec.reference)
        machine_spec.reference.update(fields)
        if machine_spec.reference != before and not action_handler.why_run:
            machine_spec.save()

    @staticmethod
    def _take_back(machine_spec: "MachineSpec", before: dict[str, Any]) -> None:
        if before:
            machine_spec.reference = before
            machine_spec.save()
        else:
            machine_spec.delete()

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
