"""Provisioner: the core that owns state around every driver call.

For each machine it takes the store's lock on the name (so two runs never act on one machine at
once), loads the spec, lends it to the driver, and saves it in a ``finally`` with the last action
and last error. Under why-run it takes no lock and saves nothing.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol, Sequence

from provisioning.actions import ActionHandler
from provisioning.config import Config
from provisioning.driver.requestcheck import check_request
from provisioning.errors import ClusterConflict, ConfigError, MachineNotFound, ProvisioningError
from provisioning.faults import checkpoint
from provisioning.parallel import BatchResult, Outcome, Parallelizer
from provisioning.registry import driver_for_url
from provisioning.spec import MachineSpec
from provisioning.store import open_store
from provisioning.store.base import ManagedEntryStore
from provisioning.store.chunks import ChunkedHold

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.driver import Driver
    from provisioning.machine.base import Machine
    from provisioning.store.chunks import Prepare

__all__ = ["Provisioner", "MachineRequest", "WorkSplitter", "connect_to_machine"]

#: (driver, machine name, machine_options): one machine to act on
MachineRequest = tuple["Driver", str, Mapping[str, Any]]
#: work done under one machine's lock: (its driver, its handler, its spec, its options) -> result
LockedCall = Callable[["Driver", ActionHandler, MachineSpec, Mapping[str, Any]], Any]
#: operations that may create a machine: their requests are checked like a cluster file's
_CREATING = ("allocate", "ready", "up")


class WorkSplitter(Protocol):
    """Shares ``run_many`` between every runner on a store that ``supports_claims``: does
    ``call(request)`` for the machines this runner claims and returns every machine's outcome
    (``provisioning.cluster.claims.split_run`` is the one implementation; the orchestration
    layer above passes it in, so this module does not depend on it)."""

    def __call__(self, provisioner: "Provisioner", operation: str,
                 requests: Sequence[MachineRequest],
                 call: Callable[[MachineRequest], Any], *,
                 held: "Callable[[ChunkedHold, MachineRequest], Any] | None" = None,
                 prepare: "Prepare | None" = None) -> BatchResult: ...


class Provisioner:
    """Runs driver operations on named machines with locking and state saving."""

    def __init__(self, store: "ManagedEntryStore", *, config: "Config | None" = None,
                 action_handler: ActionHandler | None = None, parallel: int | None = None,
                 policy: str = "continue", lock_wait: float = 0.0,
                 lock_ttl: float | None = None, split_run: WorkSplitter | None = None) -> None:
        self.store = store
        self.config = config or Config.load()
        self.action_handler = action_handler or ActionHandler()
        self.parallelizer = Parallelizer(parallel or int(self.config.get("parallel", 10)), policy)
        self.lock_wait = lock_wait
        self.lock_ttl = float(lock_ttl or self.config.get("lock_ttl", 30.0))
        #: how ``run_many`` shares its machines with other runners on one store that
        #: ``supports_claims``, or None to do them all here; the cluster runner passes
        #: ``provisioning.cluster.claims.split_run``
        self.split_run: WorkSplitter | None = split_run if store.supports_claims else None
        self._drivers: dict[str, "Driver"] = {}
        self._drivers_lock = threading.Lock()

    @property
    def why_run(self) -> bool:
        return self.action_handler.why_run

    def spec(self, name: str) -> MachineSpec:
        entry = self.store.get_or_new("machine", name)
        assert isinstance(entry, MachineSpec)  # the store builds machine entries as MachineSpec
        return entry

    def driver_for(self, spec: MachineSpec, default: "Driver | None" = None) -> "Driver":
        """The driver that acts on a saved machine: ``default``, the cluster file's, when the
        file names the machine, else the one its reference names. A saved URL other than the
        file's is refused, never acted on: a state entry edited to another driver or place
        (``fake:/etc``) would make, stop or destroy there (and a destroy there finds nothing,
        forgets the entry and leaks the real machine)."""
        saved = spec.driver_url
        if default is not None:
            if saved and saved != default.driver_url:
                raise ConfigError(
                    f"machine {spec.name!r} is recorded in the state ({self.store.url}) as made "
                    f"by the driver {saved!r}, but the cluster file gives "
                    f"{default.driver_url!r}; nothing is done through a driver the file does not "
                    "name. If the file changed, put that driver back to stop or destroy the "
                    f"machine; if the record is wrong or the machine is gone, 'converge state rm "
                    f"{spec.name}' forgets it (any resource is left alone) and the next up makes "
                    "the machine anew", key="driver")
            return default
        if saved:
            return self._driver(saved)
        raise MachineNotFound(f"machine {spec.name!r} has no saved driver URL and none was "
                              "given", machine=spec.name)

    def _owner(self, spec: MachineSpec, driver: "Driver | None") -> "Driver | None":
        """The driver an operation acts through (None for a machine never allocated and no
        driver given)."""
        if not spec.exists and driver is None:
            return None
        return self.driver_for(spec, driver)

    def _driver(self, url: str) -> "Driver":
        """One driver per saved URL for this provisioner's life (building one per machine made
        a thousand machines cost a thousand registry look-ups)."""
        with self._drivers_lock:
            driver = self._drivers.get(url)
        if driver is None:
            driver = driver_for_url(url, self.config)
            with self._drivers_lock:
                driver = self._drivers.setdefault(url, driver)
        return driver

    @contextlib.contextmanager
    def _held(self, name: str) -> Iterator[MachineSpec]:
        """Lock the name (unless why-run), yield the fresh spec, save it afterwards."""
        if self.why_run:
            yield self.spec(name)
            return
        with self.store.lock(name, self.lock_ttl, wait=self.lock_wait) as lock:
            spec = self.spec(name)
            with _outcome_saved(spec, lock):
                yield spec

    def _one(self, operation: str, request: tuple["Driver | None", str, Mapping[str, Any]],
             call: Callable[[Any, ActionHandler, MachineSpec, Mapping[str, Any]], Any]) -> Any:
        """``call`` gets the machine's driver (``driver_for``: the given one, the cluster
        file's, else the one its reference names; None only for a machine never allocated and
        no driver given)."""
        driver, name, options = request
        if operation in _CREATING:
            check_request(driver, name, options)
        handler = self.action_handler.for_machine(name)
        with self._held(name) as spec:
            spec.last_action = operation
            return call(self._owner(spec, driver), handler, spec, options)

    # -- single machines ---------------------------------------------------------------------
    def allocate(self, driver: "Driver", name: str, options: Mapping[str, Any] = {}) -> MachineSpec:
        spec: MachineSpec = self._one("allocate", (driver, name, options),
                                      self._calls()["allocate"])
        return spec

    def ready(self, driver: "Driver", name: str, options: Mapping[str, Any] = {}) -> "Machine | None":
        machine: "Machine | None" = self._one("ready", (driver, name, options),
                                              self._calls()["ready"])
        return machine

    def up(self, driver: "Driver", name: str, options: Mapping[str, Any] = {}) -> "Machine | None":
        """Allocate then ready, under one lock."""
        machine: "Machine | None" = self._one("allocate", (driver, name, options),
                                              self._calls()["up"])
        return machine

    def run_locked(self, operation: str, driver: "Driver | None", name: str,
                   options: Mapping[str, Any],
                   call: LockedCall) -> Any:
        """Run ``call(driver, handler, spec, options)`` under the machine's lock, saving the spec
        (last action, last error) afterwards: for work beyond one driver call, such as the CLI's
        allocate + ready + converge + healthcheck. ``call`` may update ``spec.last_action``."""
        return self._one(operation, (driver, name, options), call)

    def stop(self, name: str, options: Mapping[str, Any] = {}, driver: "Driver | None" = None) -> None:
        self._one("stop", (driver, name, options), self._stop_call)

    def destroy(self, name: str, options: Mapping[str, Any] = {},
                driver: "Driver | None" = None) -> None:
        self._one("destroy", (driver, name, options), self._destroy_call)

    @staticmethod
    def _stop_call(d: "Driver | None", h: ActionHandler, spec: MachineSpec,
                   o: Mapping[str, Any]) -> None:
        if not spec.exists:
            h.report_progress("not allocated: nothing to stop")
            return None
        assert d is not None  # an allocated machine's reference names its driver
        d.stop_machine(h, spec, o)
        return None

    def _destroy_call(self, d: "Driver | None", h: ActionHandler, spec: MachineSpec,
                      o: Mapping[str, Any]) -> None:
        self.destroy_deposed(h, spec, o)  # the older ones first
        if not spec.exists:
            h.report_progress("not allocated: nothing to destroy")
            if spec.version and not self.why_run:
                spec.delete()
            return None
        assert d is not None  # an allocated machine's reference names its driver
        d.destroy_machine(h, spec, o)
        if not self.why_run:
            spec.delete()
        return None

    def destroy_deposed(self, handler: ActionHandler, spec: MachineSpec,
                        options: Mapping[str, Any] = {}) -> None:
        """Destroy the resources a create-before-destroy replace moved aside (``spec.deposed``),
        oldest first, each through the driver its reference names, and forget each once it is
        gone (saved at once: a crash in between is finished by the next call, since destroy
        is idempotent). Call under the machine's lock. The fault point
        ``before_destroy_deposed`` falls before the first."""
        if not spec.deposed:
            return
        checkpoint("before_destroy_deposed", machine=spec.name)
        for reference in list(spec.deposed):
            loose = MachineSpec(name=spec.name, reference=dict(reference))  # never saved
            driver = self._driver(str(reference.get("driver_url")))
            handler.report_progress("destroying the deposed (replaced) "
                                    f"{driver.resource_label(reference)}")
            driver.destroy_machine(handler, loose, options)
            if self.why_run:
                continue
            spec.deposed = [r for r in spec.deposed if r != reference]
            spec.save()

    def connect(self, name: str, options: Mapping[str, Any] = {},
                driver: "Driver | None" = None) -> "Machine":
        spec = self.spec(name)
        if not spec.exists:
            raise MachineNotFound(f"machine {name!r} is not in the state store "
                                  f"({self.store.url}); run 'converge up {name}' first",
                                  machine=name)
        return self.driver_for(spec, driver).connect_to_machine(spec, options)

    # -- many machines -----------------------------------------------------------------------
    def run_many(self, operation: str, requests: Sequence[MachineRequest],
                 fn: Callable[[MachineRequest], Any] | None = None) -> BatchResult:
        """One operation on many machines in parallel; every machine's outcome comes back.
        ``fn(request)``, when given, does each machine's work (and its own locking)."""
        if fn is None:
            return self.run_many_locked(operation, requests, self._calls()[operation],
                                        action="allocate" if operation == "up" else operation)
        if operation in _CREATING:
            _check_all(requests)
        if self.split_run is not None and not self.why_run and len(requests) > 1:
            results = self.split_run(self, operation, requests, fn)
        else:
            results = self.parallelizer.run((r[1], functools.partial(fn, r)) for r in requests)
        return self._reported(results)

    def run_many_locked(self, operation: str, requests: Sequence[MachineRequest],
                        call: Callable[["Driver", ActionHandler, MachineSpec, Mapping[str, Any]],
                                       Any], *, action: str | None = None,
                        prepare: "Prepare | None" = None) -> BatchResult:
        """``call(driver, handler, spec, options)`` for each machine under its lock, saving each
        spec (``last_action`` starts as ``action``, default ``operation``; last error) after
        it. Locks and entries are taken a chunk at a time (``provisioning.store.chunks``), and
        ``prepare`` sees each chunk before its machines' calls. Runners sharing the store
        split the machines between them, a claimed batch being such a chunk."""
        action = action or operation
        if operation in _CREATING or action in _CREATING:
            _check_all(requests)
        if self.split_run is not None and not self.why_run and len(requests) > 1:
            results = self.split_run(self, operation, requests,
                                     lambda r: self._one(action, r, call),
                                     held=lambda hold, r: self._from_hold(hold, action, r, call),
                                     prepare=prepare)
            return self._reported(results)
        hold = ChunkedHold(self.store, [r[1] for r in requests], ttl=self.lock_ttl,
                           wait=self.lock_wait, locking=not self.why_run, prepare=prepare)
        try:
            results = self.parallelizer.run(
                (r[1], functools.partial(self._from_hold, hold, action, r, call))
                for r in requests)
        finally:
            hold.close()
        return self._reported(results)

    def _from_hold(self, hold: "ChunkedHold", action: str, request: MachineRequest,
                   call: Callable[..., Any]) -> Any:
        """``_one`` for a machine whose lock and spec a ``ChunkedHold`` took."""
        driver, name, options = request
        spec, lock, error = hold.take(name)
        if spec is None:
            raise error  # type: ignore[misc]
        with _outcome_saved(spec, lock, save=not self.why_run):
            if error is not None:
                raise error
            spec.last_action = action
            return call(self._owner(spec, driver), self.action_handler.for_machine(name),
                        spec, options)

    def _calls(self) -> dict[str, Callable[..., Any]]:
        def allocate(d: "Driver", h: ActionHandler, spec: MachineSpec,
                     o: Mapping[str, Any]) -> MachineSpec:
            d.allocate_machine(h, spec, o)
            return spec

        def ready(d: "Driver", h: ActionHandler, spec: MachineSpec,
                  o: Mapping[str, Any]) -> "Machine | None":
            return d.ready_machine(h, spec, o)

        def up(d: "Driver", h: ActionHandler, spec: MachineSpec,
               o: Mapping[str, Any]) -> "Machine | None":
            d.allocate_machine(h, spec, o)
            spec.last_action = "ready"
            return d.ready_machine(h, spec, o)
        return {"allocate": allocate, "ready": ready, "up": up, "stop": self._stop_call,
                "destroy": self._destroy_call}

    def _reported(self, results: BatchResult) -> BatchResult:
        for name, outcome in results.items():
            if outcome.error is not None:
                self.action_handler.report_error(outcome.error, machine=name)
        return results

    def allocate_batch(self, driver: "Driver", requests: Sequence[tuple[str, Mapping[str, Any]]]
                       ) -> BatchResult:
        """Allocate many machines of one driver through its batch method (bulk APIs)."""
        _check_all([(driver, name, options) for name, options in requests])
        results = BatchResult((name, Outcome(name)) for name, _ in requests)
        with contextlib.ExitStack() as stack:
            specs = []
            for name, options in requests:
                try:
                    spec = stack.enter_context(self._held(name))
                except ProvisioningError as exc:
                    results[name].error = exc
                    continue
                spec.last_action = "allocate"
                specs.append((spec, options))
            batch = driver.allocate_machines(self.action_handler, specs, self.parallelizer)
            for name, outcome in batch.items():
                results[name] = outcome
                if outcome.ok:
                    outcome.value = next(s for s, _ in specs if s.name == name)
                else:
                    next(s for s, _ in specs if s.name == name).last_error = str(outcome.error)
        return results


@contextlib.contextmanager
def _outcome_saved(spec: MachineSpec, lock: Any, *, save: bool = True) -> Iterator[None]:
    """Around one machine's work under its lock (one machine's, or a chunked hold's): the
    outcome goes to ``spec.last_error``, then the spec is saved as the lock is released
    (``save=False``, why-run: only released). Work that raised ``ClusterConflict`` met
    another cluster's entry: that entry is left exactly as it was."""
    foreign = False
    try:
        yield
    except BaseException as exc:
        foreign = isinstance(exc, ClusterConflict)
        spec.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        raise
    else:
        spec.last_error = None
    finally:
        try:
            if save:
                _save_held(spec, lock, foreign=foreign)
        finally:
            if lock is not None:
                lock.release()  # a no-op once released with the save


def _save_held(spec: MachineSpec, lock: Any, *, foreign: bool = False) -> None:
    """Save a machine's spec at the end of its locked work and release its lock (in one
    transaction where the store can); a spec the work left as it was read is not written
    again (a no-change run writes no entries), its lock only released. ``foreign``: the
    entry is another cluster's (``ClusterConflict``): left exactly as it was."""
    if foreign or spec.unchanged():
        spec._along.clear()  # another cluster's entry: nothing of this run is written for it
        if lock is not None:
            lock.release()
    elif spec.exists or spec.version:  # a destroyed, forgotten spec has neither
        spec.save(release=lock)


def _check_all(requests: Sequence[Any]) -> None:
    """Every problem of every request, before the first one is acted on."""

    problems = []
    checked: dict[tuple[int, int], list[Any]] = {}  # a group's shared options: checked once
    for request in requests:
        try:
            driver, name, options = request
            check_request(driver, name, options, checked=checked)
        except ConfigError as exc:
            problems += [type(p)(f"machine {request[1]!r}: {p.message}", key=p.key)
                         for p in exc.problems]
        except (TypeError, ValueError):
            raise ConfigError(f"a request is (driver, name, options), got {request!r:.80}",
                              key="requests") from None
    if problems:
        raise ConfigError(problems=problems)


def connect_to_machine(name_or_spec: "str | MachineSpec", config: "Config | None" = None, *,
                       store: "ManagedEntryStore | None" = None,
                       machine_options: Mapping[str, Any] | None = None) -> "Machine":
    """A Machine for a saved machine: its spec from the store, its driver from the reference."""

    config = config or Config.load()
    if isinstance(name_or_spec, MachineSpec):
        spec = name_or_spec
        owner = spec.store if isinstance(spec.store, ManagedEntryStore) else open_store(config.state)
        return Provisioner(owner, config=config).driver_for(
            spec).connect_to_machine(spec, machine_options or {})
    store = store or open_store(config.state, base_dir=config.base_dir)
    return Provisioner(store, config=config).connect(name_or_spec, machine_options or {})
