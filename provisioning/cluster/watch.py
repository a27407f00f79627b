"""``converge watch``: keep each machine group at its ``count`` of healthy machines.

Every ``interval`` seconds each machine of the cluster is observed, without a lock:

* not in the state, or its resource gone at the provider (deleted behind our back): re-create
  it (allocate, ready, converge, healthcheck, as ``up`` does);
* its healthchecks fail (one probe each): remember since when; once it has been unhealthy for
  longer than ``grace`` seconds, replace it: destroy, then create anew (create first, then
  destroy, in a group with ``create_before_destroy: true``: ``provisioning.cluster.replace``).

Each round starts by reading the cluster file again when it changed: a raised ``count`` adds
machines (created that round), a lowered one destroys the machines it leaves out, the
highest-numbered ones (``plan.doomed_entries``), except in a group with ``prevent_destroy:
true``, which is reported as an error each round and left alone. A file that no longer
validates is reported and the last good one kept.

Acting takes the machine's lock without waiting (a machine another watcher or runner holds is
left for this round) and decides again under the lock: the entry must still be the one observed
(same reference fingerprint) and, for a replacement, still unhealthy. So two watchers on one
shared state never replace or re-create the same machine twice: the second finds the entry
changed and reports that someone else did it.

Every decision is an event (``data["watch"]`` names it: ``create``, ``recreate``, ``replace``,
``unhealthy``, ``healthy``, ``skipped``, ``reload``, ``scale-down``). ``stop`` (set by
SIGINT/SIGTERM in the CLI) is checked between actions; an action in progress finishes first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import threading
import time
from typing import TYPE_CHECKING, Callable, Sequence, cast

from provisioning.actions import ActionHandler
from provisioning.cluster.file import load_cluster
from provisioning.cluster.healthcheck import run_healthcheck
from provisioning.cluster.plan import doomed_entries, file_sha256
from provisioning.cluster.replace import check_drivers, replace_one
from provisioning.errors import ProvisioningError, StateLocked
from provisioning.inputs.records import record

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.file import MachineDefinition
    from provisioning.cluster.runner import ClusterRunner
    from provisioning.driver import Driver
    from provisioning.spec import MachineSpec

__all__ = ["Watcher", "WatchResult", "fingerprint", "DEFAULT_INTERVAL", "DEFAULT_GRACE"]

DEFAULT_INTERVAL = 30.0
DEFAULT_GRACE = 60.0


def fingerprint(spec: "MachineSpec | None") -> str | None:
    """Identity of the machine an entry describes: changes when it is replaced or re-created."""
    if spec is None or not spec.exists:
        return None
    text = json.dumps(spec.reference, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@record(frozen=True)
class WatchResult:
    """What one round did with one machine."""

    name: str
    verdict: str                 # healthy, unhealthy, created, recreated, replaced, skipped, ...
    detail: str = ""


class Watcher:
    """Observes and mends the machines of a ``ClusterRunner``'s cluster."""

    def __init__(self, runner: "ClusterRunner", definitions: "list[MachineDefinition]", *,
                 interval: float = DEFAULT_INTERVAL, grace: float = DEFAULT_GRACE,
                 stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 names: Sequence[str] = ()) -> None:
        if interval <= 0 or grace < 0:
            raise ValueError("interval must be positive and grace not negative")
        check_drivers(runner.cluster, definitions)  # before the first round changes anything
        self.runner = runner
        self.definitions = list(definitions)
        #: the machines or groups watched (none: all), chosen again from an edited file
        self.names = list(names)
        self._file_digest = self._digest()
        self.interval = interval
        self.grace = grace
        self.stop = stop or threading.Event()
        self.clock = clock
        #: name -> (fingerprint, monotonic time it was first seen unhealthy, last reason)
        self.unhealthy: dict[str, tuple[str, float, str]] = {}
        self._mutex = threading.Lock()
        self.rounds = 0

    @property
    def handler(self) -> "ActionHandler":
        return self.runner.action_handler

    # -- the loop ----------------------------------------------------------------------------
    def run(self, rounds: int | None = None) -> int:
        """Watch until ``stop`` is set (or ``rounds`` rounds are done). Returns rounds run."""
        groups = sorted({d.group for d in self.definitions})
        self.handler.report_progress(
            f"watching {len(self.definitions)} machines ({', '.join(groups)}) every "
            f"{self.interval:g} s, replacing a machine unhealthy for {self.grace:g} s; state "
            f"{self.runner.store.url}", data={"watch": "start"})
        while not self.stop.is_set():
            self.round()
            if rounds is not None and self.rounds >= rounds:
                break
            self.stop.wait(self.interval)
        self.handler.report_progress(f"watch stopped after {self.rounds} rounds",
                                     data={"watch": "stop", "rounds": self.rounds})
        return self.rounds

    def round(self) -> dict[str, WatchResult]:
        """Observe every machine once, acting where needed; results by name."""
        self._reload()
        out = self._scale_down()
        parallelizer = self.runner.provisioner.parallelizer
        results = parallelizer.run((d.name, functools.partial(self.tend, d)) for d in self.definitions)
        self.rounds += 1
        for name, outcome in results.items():
            if outcome.ok:
                out[name] = cast(WatchResult, outcome.value)
            else:
                self.handler.report_error(cast(BaseException, outcome.error), machine=name)
                out[name] = WatchResult(name, "error", str(outcome.error))
        return out

    # -- an edited cluster file ---------------------------------------------------------------
    def _digest(self) -> str | None:
        try:
            return file_sha256(self.runner.cluster.path)
        except OSError:
            return None

    def _reload(self) -> None:
        """Read the cluster file again if it changed since it was last read."""
        digest = self._digest()
        if digest is None or digest == self._file_digest:
            return
        self._file_digest = digest
        path = self.runner.cluster.path
        try:
            fresh = load_cluster(path)
            definitions = fresh.select(self.names)
            if fresh.name != self.runner.name:
                raise ProvisioningError(f"the cluster's name changed from {self.runner.name!r} "
                                        f"to {fresh.name!r}; restart watch to take it in")
        except ProvisioningError as exc:
            self.handler.report_error(exc)
            self.handler.report_progress(f"{path} changed but cannot be used: watching the "
                                         "machines of its last good version",
                                         data={"watch": "reload", "ok": False})
            return
        self.runner.cluster = fresh
        self.definitions = definitions
        self.handler.report_progress(f"{path} changed: watching {len(definitions)} machines",
                                     data={"watch": "reload", "ok": True,
                                           "machines": len(definitions)})

    def _scale_down(self) -> dict[str, WatchResult]:
        """Destroy the machines of a group whose count was lowered (never with
        ``prevent_destroy``: that is an error every round)."""
        cluster = self.runner.cluster
        doomed = [e for e in doomed_entries(self.runner, self.names) if e.group in cluster.groups]
        out: dict[str, WatchResult] = {}
        allowed = []
        for entry in doomed:
            if entry.group in cluster.prevent_destroy:
                error = ProvisioningError(
                    f"group {entry.group!r} now has {len(cluster.groups[entry.group])} machines "
                    f"but has prevent_destroy: true: {entry.name} is kept; raise its count "
                    "again, or remove prevent_destroy", machine=entry.name)
                self.handler.report_error(error, machine=entry.name)
                out[entry.name] = WatchResult(entry.name, "kept", error.message)
            else:
                allowed.append(entry.name)
                self.handler.for_machine(entry.name).report_progress(
                    f"scale-down: group {entry.group!r} now has "
                    f"{len(cluster.groups.get(entry.group or '', []))} machines; destroying it",
                    data={"watch": "scale-down"})
        if not allowed or self.stop.is_set():
            return out
        for name, outcome in self.runner.destroy_names(allowed).items():
            if outcome.ok:
                out[name] = WatchResult(name, "destroyed", "scale-down")
            else:
                self.handler.report_error(cast(BaseException, outcome.error), machine=name)
                out[name] = WatchResult(name, "error", str(outcome.error))
        return out

    # -- one machine -------------------------------------------------------------------------
    def tend(self, definition: "MachineDefinition") -> WatchResult:
        name = definition.name
        handler = self.handler.for_machine(name)
        if self.stop.is_set():
            return WatchResult(name, "stopped")
        spec = self.runner.provisioner.spec(name)
        driver = self._driver(definition, spec)
        seen = fingerprint(spec)
        if seen is None:
            return self._act(definition, "create", seen, "not created yet", handler)
        state = driver.machine_state(spec)
        if state == "missing":
            return self._act(definition, "recreate", seen,
                             "its resource is gone at the provider (deleted behind our back)",
                             handler)
        reason = self._probe(definition, driver, spec, state)
        if reason is None:
            with self._mutex:
                was = self.unhealthy.pop(name, None)
            if was is not None:
                handler.report_progress("healthy again", data={"watch": "healthy"})
            return WatchResult(name, "healthy")
        now = self.clock()
        with self._mutex:
            known = self.unhealthy.get(name)
            if known is None or known[0] != seen:
                known = (seen, now, reason)
            self.unhealthy[name] = (seen, known[1], reason)
        since = now - known[1]
        if since < self.grace:
            handler.report_progress(f"unhealthy for {since:.0f} s (replaced after "
                                    f"{self.grace:g} s): {reason}",
                                    data={"watch": "unhealthy", "since": round(since, 1)})
            return WatchResult(name, "unhealthy", reason)
        return self._act(definition, "replace", seen,
                         f"unhealthy for {since:.0f} s: {reason}", handler)

    def _driver(self, definition: "MachineDefinition", spec: "MachineSpec") -> "Driver":
        default = self.runner.driver(definition.driver_url)
        return self.runner.provisioner.driver_for(spec, default) if spec.exists else default

    def _probe(self, definition: "MachineDefinition", driver: "Driver", spec: "MachineSpec",
               state: str) -> str | None:
        """None when healthy, else why not. One attempt per check: the grace period is what
        gives a machine time, not the check's own deadline."""
        if state not in ("running", "unknown"):
            return f"the provider says it is {state}"
        if not definition.healthchecks:
            return None
        quiet = ActionHandler()  # a passing probe every interval is not news
        try:
            machine = driver.connect_to_machine(spec, definition.machine_options)
        except ProvisioningError as exc:
            return f"cannot connect: {exc.message}"
        try:
            variables = self.runner.variables_for(definition, machine)
            for check in definition.healthchecks:
                run_healthcheck(dataclasses.replace(check, deadline=0.0), machine, quiet,
                                variables, file=self.runner.cluster.path,
                                opener=self.runner.opener(driver, spec))
        except ProvisioningError as exc:
            return exc.message
        finally:
            machine.disconnect()
        return None

    def _act(self, definition: "MachineDefinition", verdict: str, seen: str | None,
             reason: str, handler: "ActionHandler") -> WatchResult:
        """Under the machine's lock (no waiting): decide again on the fresh entry, then do it."""
        name = definition.name
        if self.stop.is_set():
            return WatchResult(name, "stopped")
        provisioner = self.runner.provisioner
        driver = self.runner.driver(definition.driver_url)
        done = {"verdict": "skipped", "detail": ""}

        def call(d: "Driver", h: "ActionHandler", spec: "MachineSpec", options) -> None:
            now = fingerprint(spec)
            if now != seen:
                stored = provisioner.store.get("machine", name)  # keep its last action as it is
                spec.last_action = stored.last_action if stored is not None else None
                done["detail"] = "another watcher or runner changed it first"
                h.report_progress(f"not acting ({verdict}): {done['detail']}",
                                  data={"watch": "skipped"})
                return
            if verdict == "replace":
                again = self._probe(definition, d, spec, d.machine_state(spec))
                if again is None:
                    stored = provisioner.store.get("machine", name)
                    spec.last_action = stored.last_action if stored is not None else None
                    done["detail"] = "healthy again"
                    h.report_progress("healthy again before the replacement: keeping it",
                                      data={"watch": "healthy"})
                    return

            def mend() -> None:
                if verdict == "replace":  # create-before-destroy where its group asks
                    replace_one(self.runner, definition, d, h, spec, options)
                    return
                spec.last_action = "allocate"
                self.runner.up_one(definition, d, h, spec, options)
            description = {"create": "create missing machine",
                           "recreate": "re-create machine",
                           "replace": "replace machine"}[verdict]
            h.perform_action(f"{description}: {reason}", mend,
                             data={"watch": verdict, "was": seen})
            done["verdict"] = {"create": "created", "recreate": "recreated",
                               "replace": "replaced"}[verdict]

        try:
            provisioner.run_locked(f"watch-{verdict}", driver, name, definition.machine_options,
                                   call)
        except StateLocked as exc:
            who = exc.holder.get("host", "?"), exc.holder.get("pid", "?")
            handler.report_progress(f"busy (locked by {who[0]} pid {who[1]}): left for this "
                                    "round", data={"watch": "skipped"})
            return WatchResult(name, "skipped", "locked")
        if done["verdict"] != "skipped":
            with self._mutex:
                self.unhealthy.pop(name, None)
        return WatchResult(name, done["verdict"], done["detail"] or reason)
