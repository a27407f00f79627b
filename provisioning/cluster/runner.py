"""ClusterRunner: a cluster file's machines driven through the ``Provisioner`` (locks, state).

Used by ``Cluster`` (the ``converge`` commands, the pytest plugin, watch). ``up`` does, per
machine and under its lock: allocate, ready, converge (the steps), healthcheck; the spec's
``last_action`` follows along so ``status`` shows where a failed machine stopped. Results
come back per machine.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from provisioning.actions import ActionHandler, Event
from provisioning.cluster.claims import split_run, supports_claims
from provisioning.cluster.healthcheck import run_healthchecks
from provisioning.cluster.topology import FACTS_KIND, dependencies, forget, machines_view, record_facts, waves
from provisioning.cluster.view import ClusterView
from provisioning.driver.local_features import snapshot_name
from provisioning.errors import (
    ClusterConflict,
    CommandFailed,
    ConfigError,
    MachineNotFound,
    MissingExtra,
    ProvisioningError,
    VerifyFailed,
)
from provisioning.images.builder import ImageBuilder, boot_from_images
from provisioning.lifecycle import Provisioner
from provisioning.machine.access import ssh_access, ssh_config, write_access
from provisioning.parallel import BatchResult, Outcome, Parallelizer

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.file import ClusterFile, MachineDefinition
    from provisioning.config import Config
    from provisioning.driver import Driver
    from provisioning.machine.base import Machine
    from provisioning.spec import MachineSpec
    from provisioning.store.base import ManagedEntryStore

__all__ = ["ClusterRunner"]


class ClusterRunner(ClusterView):
    """Operations on a cluster's machines. Every driver call goes through ``Provisioner``."""

    def __init__(self, cluster: "ClusterFile", *, store: "ManagedEntryStore", config: "Config",
                 action_handler: ActionHandler | None = None, parallel: int | None = None) -> None:
        super().__init__(cluster, store=store, config=config, parallel=parallel)
        self.action_handler = action_handler or ActionHandler()
        self.provisioner = Provisioner(store, config=config, action_handler=self.action_handler,
                                       parallel=parallel)
        self.parallelizer = self.provisioner.parallelizer
        if supports_claims(store):  # runners sharing the store split the work
            self.provisioner.split_run = split_run
        #: while ``up`` runs a wave: scope -> the ``machines`` view, read once for the wave
        self._views: dict[Any, dict[str, list]] | None = None
        #: one worker reads a view while the others wait for it (not each its own full read)
        self._views_lock = threading.Lock()
        #: while ``up`` runs a wave: name -> its facts entry, read with its chunk
        self._facts: dict[str, Any] | None = None
        self.actions: Counter[str] = Counter()
        self.action_handler.subscribe(self._count)

    @functools.cached_property
    def images(self) -> "ImageBuilder":
        """The cluster's images (``images:``), built through this runner's provisioner."""
        return ImageBuilder(self.cluster.images, self.provisioner, self.driver)

    def _count(self, event: Event) -> None:
        if event.kind == "action" and event.machine:
            self.actions[event.machine] += 1

    @property
    def why_run(self) -> bool:
        return self.action_handler.why_run

    def driver_for(self, spec: "MachineSpec") -> "Driver":
        """The driver that owns a saved machine: the provisioner's (one per URL for its life)."""
        return self.provisioner.driver_for(spec)

    # -- cluster boundaries ----------------------------------------------------------------
    def check_owner(self, spec: "MachineSpec") -> None:
        """Raise ``ClusterConflict`` when the entry belongs to another cluster."""
        if spec.cluster is not None and spec.cluster != self.name:
            raise ClusterConflict(spec.name, spec.cluster, self.name, file=self.cluster.path)

    def _claim(self, spec: "MachineSpec", definition: "MachineDefinition") -> None:
        self.check_owner(spec)
        spec.cluster, spec.group = self.name, definition.group

    def _requests(self, definitions: Sequence["MachineDefinition"]):
        return [(self.driver(d.driver_url), d.name, d.machine_options) for d in definitions]

    # -- up --------------------------------------------------------------------------------
    def up(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        """Allocate, ready, converge and healthcheck each machine; value: its Machine (None for
        a machine why-run would create). Images the machines boot from are built first. Groups
        with ``after`` wait for the groups they name (waves, see
        ``provisioning.cluster.topology``); a machine whose dependency failed fails untouched."""
        definitions = boot_from_images(definitions, self.images)
        results = BatchResult()
        for wave in waves(self.cluster, definitions):
            runnable = []
            for definition in wave:
                failed = [n for n in dependencies(self.cluster, definition)
                          if n in results and not results[n].ok]
                if failed:
                    outcome: Outcome = Outcome(definition.name)
                    outcome.error = ProvisioningError(
                        f"not brought up: it comes after {', '.join(failed)}, which failed",
                        machine=definition.name)
                    results[definition.name] = outcome
                    self.action_handler.for_machine(definition.name).report_error(outcome.error)
                else:
                    runnable.append(definition)
            results.update(self._up_wave(runnable))
        return BatchResult((d.name, results[d.name]) for d in definitions if d.name in results)

    def create(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        """Allocate and ready each machine, no convergence (test-kitchen's ``create``); the
        images they boot from are built first. Value: its Machine (None under why-run)."""
        definitions = boot_from_images(definitions, self.images)
        return self.provisioner.run_many("up", self._requests(definitions))

    def _up_wave(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        by_name = {d.name: d for d in definitions}
        allocated: dict[str, int] = {}  # allocated in a batch -> its action count before
        self._views = {}  # the earlier waves' machines, read once for this wave
        self._facts = {}
        try:
            return self.provisioner.run_many_locked(
                "up", self._requests(definitions),
                lambda d, h, s, o: self.up_one(by_name[s.name], d, h, s, o,
                                               allocated_from=allocated.pop(s.name, None)),
                action="allocate", prepare=lambda specs: self._prepare_chunk(specs, by_name,
                                                                             allocated))
        finally:
            self._views = None
            self._facts = None

    def _prepare_chunk(self, specs: Sequence[Any], by_name: Mapping[str, "MachineDefinition"],
                       allocated: dict[str, int]) -> dict[str, BaseException]:
        """A held chunk of ``up``: its machines' recorded facts read in one query (each
        machine's ``record_facts`` then reads none), and those needing creating allocated."""
        if not self.why_run and self._facts is not None:
            self._facts.update(self.store.get_many(FACTS_KIND, [s.name for s in specs]))
        return self._allocate_new(specs, by_name, allocated)

    def _allocate_new(self, specs: Sequence[Any], by_name: Mapping[str, "MachineDefinition"],
                      allocated: dict[str, int]) -> dict[str, BaseException]:
        """The machines of a held chunk that need creating go to their driver's batch
        allocate, in chunks of the driver's ``allocate_chunk_size`` (one bulk request each
        where the warehouse has a bulk API); returns name -> error for those it failed."""
        if self.why_run:
            return {}
        groups: dict[str, tuple["Driver", list[Any]]] = {}
        for spec in specs:
            if not spec.exists:
                definition = by_name[spec.name]
                self._claim(spec, definition)  # saved with the reference the driver records
                driver = self.driver(definition.driver_url)
                groups.setdefault(driver.driver_url, (driver, []))[1].append(
                    (spec, definition.machine_options))
        errors: dict[str, BaseException] = {}
        for driver, items in groups.values():
            size = max(1, int(driver.allocate_chunk_size))
            for start in range(0, len(items), size):
                part = items[start:start + size]
                before = {spec.name: self.actions[spec.name] for spec, _ in part}
                for spec, _ in part:
                    spec.last_action = "allocate"
                try:
                    batch = driver.allocate_machines(self.action_handler, part,
                                                     self.provisioner.parallelizer)
                except Exception as exc:  # the bulk request failed: each machine in it did
                    batch = BatchResult((s.name, Outcome(s.name, error=exc)) for s, _ in part)
                for spec, _ in part:
                    outcome = batch.get(spec.name)
                    if outcome is not None and not outcome.ok:
                        errors[spec.name] = outcome.error  # type: ignore[assignment]
                    else:
                        allocated[spec.name] = before[spec.name]
        return errors

    def up_one(self, definition: "MachineDefinition", driver: "Driver", handler: ActionHandler,
               spec, options: Mapping[str, Any], *, allocated_from: int | None = None
               ) -> "Machine | None":
        """The pipeline of one machine, under its lock (``Provisioner.run_locked``): allocate,
        ready, converge, healthcheck. ``allocated_from``: the machine was allocated in a batch
        already, when its action count was this."""
        self._claim(spec, definition)
        if allocated_from is None:
            before = self.actions[definition.name]
            driver.allocate_machine(handler, spec, options)
        else:  # allocated in a batch with other machines (``_allocate_new``)
            before = allocated_from
        spec.last_action = "ready"
        machine = driver.ready_machine(handler, spec, options)
        if machine is not None and not self.why_run:
            facts = self._facts
            record_facts(self.store, machine, spec.driver_url or definition.driver_url,
                         spec.reference, along=spec,
                         known=facts.pop(spec.name, None) if facts is not None else None)
        strategy = self.cluster.convergence(definition, self.machines_view(definition))
        if machine is None:
            strategy.plan(handler)
            for check in definition.healthchecks:
                handler.report_progress(f"would check {check.describe()}")
            handler.report_result("would be created and converged",
                                  data={"planned": self.actions[definition.name] - before})
            return None
        machine.action_handler = handler
        if options.get("sync"):
            spec.last_action = "sync"
            driver.sync_folders(handler, spec, options, machine)
        spec.last_action = "converge"
        machine.convergence = strategy
        machine.setup_convergence()
        try:
            machine.converge()
        finally:
            machine.cleanup_convergence()
        if definition.healthchecks:
            spec.last_action = "healthcheck"
            run_healthchecks(list(definition.healthchecks), machine, handler,
                             self.variables_for(definition, machine), file=self.cluster.path,
                             opener=self.opener(driver, spec))
        spec.last_action = "up"
        changes = self.actions[definition.name] - before
        if self.why_run:
            text = f"would make {changes} change{'s' if changes != 1 else ''}" if changes \
                else "up to date: nothing would change"
        else:
            text = f"up: {changes} change{'s' if changes != 1 else ''}" if changes \
                else "up to date: no changes"
        handler.report_result(text, data={"changes": changes,
                                          "address": spec.reference.get("address")})
        return machine

    def machines_view(self, definition: "MachineDefinition | None" = None) -> dict[str, list]:
        """What templates see as ``machines`` now (see ``provisioning.cluster.topology``)."""
        views = self._views
        if views is None:
            return machines_view(self.cluster, self.store, definition)
        key = definition.instance if definition is not None else ("*",)
        view = views.get(key)
        if view is None:  # during a wave: read the state once, not once per machine or worker
            with self._views_lock:
                view = views.get(key)
                if view is None:
                    view = views[key] = machines_view(self.cluster, self.store, definition)
        return view

    def variables_for(self, definition: "MachineDefinition", machine: "Machine") -> dict[str, Any]:
        variables = self.cluster.variables(definition, self.machines_view(definition))
        variables["machine"].update(name=machine.name, address=machine.address)
        return variables

    @staticmethod
    def opener(driver: "Driver", spec) -> Callable | None:
        return lambda host, port, timeout: driver.open_connection(spec, host, port, timeout)

    # -- stop / destroy --------------------------------------------------------------------
    def refuse_foreign(self, names: Sequence[str]) -> None:
        """Before any change: raise ``ClusterConflict`` if one of ``names`` is saved in the
        state as another cluster's."""
        for entry in self.store.get_many("machine", names).values():  # few queries for all
            self.check_owner(entry)  # type: ignore[arg-type]

    def stop(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        self.refuse_foreign([d.name for d in definitions])
        return self.provisioner.run_many(
            "stop", self._requests(definitions),
            lambda r: self.provisioner.run_locked("stop", r[0], r[1], r[2], self._stop_one))

    def _stop_one(self, driver: "Driver", handler: ActionHandler, spec, options) -> None:
        self.check_owner(spec)
        if not spec.exists:
            handler.report_progress("not allocated: nothing to stop")
            return
        driver.stop_machine(handler, spec, options)

    def destroy(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        return self.destroy_names([d.name for d in definitions])

    def orphans(self) -> list[str]:
        """This cluster's machines saved in the state but no longer in the cluster file."""
        return [n for n in self.entries() if n not in self.cluster.machines]

    def destroy_names(self, names: Sequence[str]) -> BatchResult:
        """Destroy this cluster's saved machines by name (those no longer in the cluster file
        too); an entry of another cluster is refused under its lock."""
        self.refuse_foreign(names)
        by_name = self.cluster.machines
        requests = [(self.driver(by_name[n].driver_url) if n in by_name else None, n,
                     by_name[n].machine_options if n in by_name else {}) for n in names]
        destroyed: set[str] = set()  # by a driver's batch destroy (``_destroy_together``)
        given = {name: (driver, options) for driver, name, options in requests}
        # locks and entries a chunk (or a claimed batch) at a time, not one by one
        return self._forget_facts(self.provisioner.run_many_locked(
            "destroy", requests,  # type: ignore[arg-type]
            lambda d, h, s, o: self.destroy_one(d, h, s, o, batched=s.name in destroyed),
            prepare=lambda specs: self._destroy_together(specs, given, destroyed)))

    def _destroy_together(self, specs: Sequence[Any], given: Mapping[str, tuple[Any, Any]],
                          destroyed: set[str]) -> dict[str, BaseException]:
        """A held chunk of ``destroy``: its machines whose driver removes many in one request
        (``Driver.destroys_together``) go to the driver's batch ``destroy_machines``; those
        destroyed are forgotten in one store write and added to ``destroyed``
        (``destroy_one`` then has nothing left to do); returns name -> error for those it
        failed. A machine with deposed resources (destroyed first) or of another cluster is
        left to ``destroy_one``. ``given``: name -> (the file's driver, machine options)."""
        if self.why_run:
            return {}
        groups: dict[str, tuple["Driver", list[Any]]] = {}
        for spec in specs:
            if not spec.exists or spec.deposed or spec.cluster not in (None, self.name):
                continue
            default, options = given[spec.name]
            try:
                driver = self.provisioner.driver_for(spec, default)
            except ProvisioningError:
                continue  # destroy_one reports it
            if driver.destroys_together():
                groups.setdefault(driver.driver_url, (driver, []))[1].append((spec, options))
        errors: dict[str, BaseException] = {}
        gone: list[Any] = []
        for driver, part in groups.values():
            for spec, _ in part:
                spec.last_action = "destroy"
            try:
                batch = driver.destroy_machines(  # its own workers: ours wait for the chunk
                    self.action_handler, part,
                    Parallelizer(self.provisioner.parallelizer.max_workers))
            except Exception as exc:  # the bulk request failed: each machine in it did
                batch = BatchResult((s.name, Outcome(s.name, error=exc)) for s, _ in part)
            for spec, _ in part:
                outcome = batch.get(spec.name)
                if outcome is None:
                    continue  # no word on it (a driver's own destroy_machines): destroy_one's
                if outcome.ok:
                    gone.append(spec)
                else:
                    errors[spec.name] = outcome.error  # type: ignore[assignment]
        if gone:  # forgotten together, under their held locks
            self.store.delete_many("machine", [spec.name for spec in gone])
            for spec in gone:
                spec.reference, spec.version = {}, 0
                destroyed.add(spec.name)
        return errors

    def destroy_one(self, driver: "Driver", handler: ActionHandler, spec, options, *,
                    batched: bool = False) -> None:
        """Destroy one saved machine under its lock (never another cluster's) and forget it;
        ``batched``: destroyed and forgotten with others already (``_destroy_together``)."""
        if batched:
            return
        if spec.exists or spec.version:
            self.check_owner(spec)
        self.provisioner.destroy_deposed(handler, spec, options)  # the older ones first
        if not spec.exists:
            handler.report_progress("not allocated: nothing to destroy")
            if spec.version and not self.why_run:
                spec.delete()
            return
        driver.destroy_machine(handler, spec, options)
        if not self.why_run:
            spec.delete()

    def _forget_facts(self, results: BatchResult) -> BatchResult:
        """A destroyed machine's recorded facts go with it."""
        if not self.why_run:
            forget(self.store, [n for n, o in results.items() if o.ok], [FACTS_KIND])
        return results

    # -- local-machine features: synced folders and snapshots ------------------------------
    def sync(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        """Push each machine's copied folders again (mounted ones are live already)."""
        return self.provisioner.run_many(
            "sync", self._requests(definitions),
            lambda r: self.provisioner.run_locked(
                "sync", r[0], r[1], r[2], lambda d, h, s, o: self._sync_one(d, h, s, o)))

    def _sync_one(self, driver: "Driver", handler: ActionHandler, spec, options) -> int:
        self.check_owner(spec)  # another cluster's machine of the same name is not synced
        if not spec.exists:
            raise MachineNotFound(f"machine {spec.name!r} has not been created; run "
                                  f"'converge up {spec.name}' first", machine=spec.name)
        if not options.get("sync"):
            handler.report_progress("no synced folders: nothing to push")
            return 0
        return driver.sync_folders(handler, spec, options)

    def snapshot(self, operation: str, name: str, snapshot: str | None = None) -> Any:
        """``save`` (returns the Snapshot), ``restore``, ``delete`` under the machine's lock;
        ``list`` (returns the Snapshots) without one. ``snapshot`` None: a new name for save,
        the newest snapshot for restore."""
        definition = self.cluster.machines.get(name)
        spec = self.provisioner.spec(name)
        self.check_owner(spec)
        if definition is None and not spec.exists:
            self.cluster.select([name])  # ConfigError naming the file, with a did-you-mean
        if not spec.exists:
            raise MachineNotFound(f"machine {name!r} has not been created (state: "
                                  f"{self.store.url}); run 'converge up {name}' first",
                                  machine=name)
        default = self.driver(definition.driver_url) if definition is not None else None
        options = definition.machine_options if definition is not None else {}
        driver = self.provisioner.driver_for(spec, default)
        if operation == "list":
            return driver.list_snapshots(spec)
        if operation == "save":
            wanted = snapshot_name(snapshot)
            call = lambda d, h, s, o: d.save_snapshot(h, s, wanted)  # noqa: E731
        elif operation in ("restore", "delete"):
            wanted = snapshot_name(snapshot) if snapshot is not None else \
                self._newest_snapshot(driver, spec, operation)
            method = driver.restore_snapshot if operation == "restore" else driver.delete_snapshot
            call = lambda d, h, s, o: method(h, s, wanted)  # noqa: E731
        else:
            raise ValueError(f"unknown snapshot operation {operation!r}")
        return self.provisioner.run_locked(f"snapshot {operation}", driver, name, options, call)

    @staticmethod
    def _newest_snapshot(driver: "Driver", spec, operation: str) -> str:
        snapshots = driver.list_snapshots(spec)
        if not snapshots:
            raise ConfigError(f"machine {spec.name!r} has no snapshots to {operation}; save one "
                              f"first (converge snapshot save {spec.name})", key="snapshot")
        if operation == "delete":
            raise ConfigError(f"name the snapshot to delete: converge snapshot delete {spec.name} "
                              f"NAME (one of: {', '.join(s.name for s in snapshots)})",
                              key="snapshot")
        return snapshots[-1].name

    # -- reading ---------------------------------------------------------------------------
    def connect(self, name: str) -> "Machine":
        """A Machine for a saved machine, changing nothing (never another cluster's)."""
        definition = self.cluster.machines.get(name)
        spec = self.provisioner.spec(name)
        self.check_owner(spec)
        if definition is None and not spec.exists:
            self.cluster.select([name])  # raises ConfigError naming the file, with a did-you-mean
        if not spec.exists:
            raise MachineNotFound(f"machine {name!r} has not been created (state: "
                                  f"{self.store.url}); run 'converge up {name}' first",
                                  machine=name)
        default = self.driver(definition.driver_url) if definition is not None else None
        options = definition.machine_options if definition is not None else {}
        return self.provisioner.connect(name, options, default)

    # -- verify ----------------------------------------------------------------------------
    def verify(self, definition: "MachineDefinition", machine: "Machine") -> None:
        """Run the machine's verify commands and pytest directories; raise on the first failure."""
        handler = self.action_handler.for_machine(definition.name)
        if not definition.verify:
            handler.report_progress("no verify steps: nothing to check")
            return
        for item in definition.verify:
            if item.kind == "command":
                result = machine.execute_always(item.value, check=False)
                if not result.ok:
                    raise CommandFailed(result, machine=definition.name)
                handler.report_progress(f"verify {item.value!r}: passed")
            elif item.kind == "testinfra":
                self._verify_testinfra(definition, machine, item.value, handler)
            else:
                self._verify_pytest(definition, item.value, handler)

    def _verify_pytest(self, definition: "MachineDefinition", directory: str,
                       handler: ActionHandler) -> None:
        argv = [sys.executable, "-m", "pytest", directory, "-q", "-p", "no:cacheprovider",
                "--cluster", self.cluster.path, "--cluster-state", self.store.url,
                "--cluster-machine", definition.name, "--keep"]
        env = dict(os.environ, PROVISIONING_MACHINE=definition.name)
        handler.report_progress(f"verify: pytest {directory}")
        self._run_pytest(definition, "pytest", directory, argv, env, handler)

    def _verify_testinfra(self, definition: "MachineDefinition", machine: "Machine",
                          directory: str, handler: ActionHandler) -> None:
        """pytest-testinfra tests through OpenSSH with a generated config that pins the
        machine's host key (``provisioning.machine.access``); checking is never turned off."""
        import tempfile

        try:
            import testinfra  # noqa: F401
        except ImportError as exc:
            raise MissingExtra("testinfra verify", "testinfra", "pytest-testinfra") from exc
        access = ssh_access(machine)
        handler.report_progress(f"verify: testinfra {directory}")
        with tempfile.TemporaryDirectory(prefix="converge-testinfra-") as tmp:
            files = write_access([access], tmp)
            config = os.path.join(tmp, "ssh_config")
            with open(config, "w", encoding="utf-8") as out:  # one login reused by every test
                out.write(ssh_config([access], files) +
                          f"\nHost *\n  ControlPath {os.path.join(tmp, 'cm-%C')}\n")
            argv = [sys.executable, "-m", "pytest", directory, "-q", "-p", "no:cacheprovider",
                    "-rfE", "--tb=short", f"--hosts=ssh://{access.name}?controlpersist=2",
                    f"--ssh-config={config}"]
            env = dict(os.environ, PROVISIONING_MACHINE=definition.name)
            self._run_pytest(definition, "testinfra", directory, argv, env, handler)

    def _run_pytest(self, definition: "MachineDefinition", kind: str, directory: str,
                    argv: list[str], env: dict[str, str], handler: ActionHandler) -> None:
        """Run a pytest session; a failure raises with its failing tests and their assertions."""
        import subprocess  # only to run a verify session: not on every start-up

        proc = subprocess.run(argv, cwd=self.cluster.base_dir, env=env, capture_output=True,
                              text=True)
        lines = proc.stdout.strip().splitlines()
        failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))][-10:]
        # the assertion of each failure: the "E   ..." lines of its traceback
        errors = [line[1:].strip() for line in lines if line.startswith("E   ")]
        tail = "\n".join(failed + [f"  {e}" for e in errors[:12]] + lines[-1:])
        if proc.returncode != 0:
            raise VerifyFailed(f"verify: {kind} {directory} failed (exit {proc.returncode})"
                               f"\n{tail}", machine=definition.name, output=proc.stdout)
        handler.report_progress(f"verify: {kind} {directory} passed: "
                                f"{tail.splitlines()[-1] if tail else ''}")
