"""ClusterRunner: a cluster file's machines driven through the ``Provisioner`` (locks, state).

Used by the ``converge`` commands and the pytest plugin. ``up`` does, per machine and under its
lock: allocate, ready, converge (the steps), healthcheck; the spec's ``last_action`` follows
along so ``status`` shows where a failed machine stopped. Results come back per machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from provisioning.actions import ActionHandler, Event
from provisioning.claims import split_run
from provisioning.errors import CommandFailed, MachineNotFound, ProvisioningError
from provisioning.lifecycle import Provisioner
from provisioning.parallel import BatchResult

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster import Cluster, MachineDefinition
    from provisioning.config import Config
    from provisioning.driver import Driver
    from provisioning.machine.base import Machine
    from provisioning.store.base import ManagedEntryStore

__all__ = ["ClusterRunner", "open_cluster"]


def open_cluster(path: str, *, state: str | None = None, why_run: bool = False,
                 parallel: int | None = None, listeners: Sequence[Callable[[Event], None]] = ()
                 ) -> "ClusterRunner":
    """Load a cluster file and open its state store: the one-call start for scripts."""
    from provisioning.cluster import load_cluster
    from provisioning.store import open_store

    cluster = load_cluster(path)
    config = cluster.config()
    store = open_store(cluster.state_url(state, config), base_dir=cluster.base_dir)
    handler = ActionHandler(why_run=why_run, listeners=listeners)
    return ClusterRunner(cluster, store=store, config=config, action_handler=handler,
                         parallel=parallel)


class ClusterRunner:
    """Operations on a cluster's machines. Every driver call goes through ``Provisioner``."""

    def __init__(self, cluster: "Cluster", *, store: "ManagedEntryStore", config: "Config",
                 action_handler: ActionHandler | None = None, parallel: int | None = None) -> None:
        self.cluster = cluster
        self.store = store
        self.config = config
        self.action_handler = action_handler or ActionHandler()
        self.provisioner = Provisioner(store, config=config, action_handler=self.action_handler,
                                       parallel=parallel, work_splitter=split_run)
        self._drivers: dict[str, "Driver"] = {}
        self._drivers_lock = threading.Lock()
        self.actions: Counter[str] = Counter()
        self.action_handler.subscribe(self._count)

    def _count(self, event: Event) -> None:
        if event.kind == "action" and event.machine:
            self.actions[event.machine] += 1

    @property
    def why_run(self) -> bool:
        return self.action_handler.why_run

    def driver(self, url: str) -> "Driver":
        """One driver per URL for the whole run."""
        from provisioning.registry import driver_for_url

        with self._drivers_lock:
            if url not in self._drivers:
                self._drivers[url] = driver_for_url(url, self.config)
            return self._drivers[url]

    def _requests(self, definitions: Sequence["MachineDefinition"]):
        return [(self.driver(d.driver_url), d.name, d.machine_options) for d in definitions]

    # -- up --------------------------------------------------------------------------------
    def up(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        """Allocate, ready, converge and healthcheck each machine; value: its Machine (None for
        a machine why-run would create)."""
        by_name = {d.name: d for d in definitions}
        return self.provisioner.run_many(
            "up", self._requests(definitions),
            lambda r: self.provisioner.run_locked("allocate", r[0], r[1], r[2],
                                                  lambda d, h, s, o: self._up_one(
                                                      by_name[r[1]], d, h, s, o)))

    def _up_one(self, definition: "MachineDefinition", driver: "Driver", handler: ActionHandler,
                spec, options: Mapping[str, Any]) -> "Machine | None":
        from provisioning.healthcheck import run_healthchecks

        before = self.actions[definition.name]
        driver.allocate_machine(handler, spec, options)
        spec.last_action = "ready"
        machine = driver.ready_machine(handler, spec, options)
        strategy = self.cluster.convergence(definition)
        if machine is None:
            plan = getattr(strategy, "plan", None)
            if plan is not None:
                plan(handler)
            for check in definition.healthchecks:
                handler.report_progress(f"would check {check.describe()}")
            handler.report_result("would be created and converged",
                                  data={"planned": self.actions[definition.name] - before})
            return None
        machine.action_handler = handler
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
                             self._variables(definition, machine), file=self.cluster.path,
                             opener=self._opener(driver, spec))
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

    def _variables(self, definition: "MachineDefinition", machine: "Machine") -> dict[str, Any]:
        variables = self.cluster.variables(definition)
        variables["machine"].update(name=machine.name, address=machine.address)
        return variables

    @staticmethod
    def _opener(driver: "Driver", spec) -> Callable | None:
        open_connection = getattr(driver, "open_connection", None)
        if open_connection is None:
            return None
        return lambda host, port, timeout: open_connection(spec, host, port, timeout)

    # -- stop / destroy --------------------------------------------------------------------
    def stop(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        return self.provisioner.run_many("stop", self._requests(definitions))

    def destroy(self, definitions: Sequence["MachineDefinition"]) -> BatchResult:
        return self.provisioner.run_many("destroy", self._requests(definitions))

    def destroy_names(self, names: Sequence[str]) -> BatchResult:
        """Destroy saved machines by name (those no longer in the cluster file too)."""
        by_name = self.cluster.machines
        requests = [(self.driver(by_name[n].driver_url) if n in by_name else None, n,
                     by_name[n].machine_options if n in by_name else {}) for n in names]
        return self.provisioner.run_many("destroy", requests)  # type: ignore[arg-type]

    # -- reading ---------------------------------------------------------------------------
    def connect(self, name: str) -> "Machine":
        """A Machine for a saved machine, changing nothing."""
        definition = self.cluster.machines.get(name)
        spec = self.provisioner.spec(name)
        if definition is None and not spec.exists:
            self.cluster.select([name])  # raises ConfigError naming the file, with a did-you-mean
        if not spec.exists:
            raise MachineNotFound(f"machine {name!r} has not been created (state: "
                                  f"{self.store.url}); run 'converge up {name}' first",
                                  machine=name)
        default = self.driver(definition.driver_url) if definition is not None else None
        options = definition.machine_options if definition is not None else {}
        return self.provisioner.connect(name, options, default)

    def status(self) -> list[dict[str, Any]]:
        """One row per machine in the cluster file or the store: name, driver URL, state,
        address, last action, last error, and whether it is in the file."""
        saved = {entry.name: entry for entry in self.store.list("machine")}
        names = list(self.cluster.machines) + [n for n in saved if n not in self.cluster.machines]
        locks = self.store.locks()

        def row(name: str) -> dict[str, Any]:
            definition = self.cluster.machines.get(name)
            spec = saved.get(name)
            url = (spec.driver_url if spec is not None and spec.driver_url else
                   definition.driver_url if definition is not None else None)
            state = "not created"
            if spec is not None and spec.exists:
                try:
                    state = self.provisioner.driver_for(spec).machine_state(spec)
                except ProvisioningError as exc:
                    state = f"unknown ({exc.message[:60]})"
            holder = locks.get(name)
            return {"name": name, "driver_url": url, "state": state,
                    "address": spec.reference.get("address") if spec is not None else None,
                    "last_action": spec.last_action if spec is not None else None,
                    "last_error": spec.last_error if spec is not None else None,
                    "in_cluster_file": definition is not None,
                    "locked_by": holder}

        results = self.provisioner.parallelizer.run((n, (lambda n=n: row(n))) for n in names)
        rows = []
        for name, outcome in results.items():
            if outcome.ok:
                rows.append(outcome.value)
            else:
                rows.append({"name": name, "driver_url": None, "state": f"error: {outcome.error}",
                             "address": None, "last_action": None, "last_error": None,
                             "in_cluster_file": name in self.cluster.machines, "locked_by": None})
        return rows

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
            else:
                self._verify_pytest(definition, item.value, handler)

    def _verify_pytest(self, definition: "MachineDefinition", directory: str,
                       handler: ActionHandler) -> None:
        argv = [sys.executable, "-m", "pytest", directory, "-q", "-p", "no:cacheprovider",
                "--cluster", self.cluster.path, "--cluster-state", self.store.url,
                "--cluster-machine", definition.name, "--keep"]
        env = dict(os.environ, PROVISIONING_MACHINE=definition.name)
        handler.report_progress(f"verify: pytest {directory}")
        proc = subprocess.run(argv, cwd=self.cluster.base_dir, env=env, capture_output=True,
                              text=True)
        lines = proc.stdout.strip().splitlines()
        tail = "\n".join([l for l in lines if l.startswith(("FAILED ", "ERROR "))][-10:]
                         + lines[-1:])
        if proc.returncode != 0:
            raise ProvisioningError(f"verify: pytest {directory} failed (exit {proc.returncode})"
                                    f"\n{tail}", machine=definition.name)
        handler.report_progress(f"verify: pytest {directory} passed: "
                                f"{tail.splitlines()[-1] if tail else ''}")

    def close(self) -> None:
        self.store.close()
