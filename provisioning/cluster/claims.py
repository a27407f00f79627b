"""Many runners, one cluster: split one operation on many machines between every runner that
shares a state store (``converge up --parallel N`` started on several hosts against PostgreSQL).

The first runner to arrive opens a *run*: the operation, the sorted machine names, one row per
machine. Runners started for the same operation on the same machines while it is open join it.
A runner claims a batch of pending machines at a time (``FOR UPDATE SKIP LOCKED``: a claim never
waits on another runner), takes their locks and reads their entries together (a
``ChunkedHold``, like a lone runner's chunks), hands them to its worker threads, and writes
their outcomes back together. A batch is about a runner's worth of work (its ``--parallel``) and
never more than a 40th of the run, so every runner that joins, early or late, finds work until
the end. A claim dies with its runner (its session) or when its lease is not renewed, and is
then claimed again by someone else; a runner that stops gives back what it has not started. A
runner ends when every machine of the run is done or failed, and reports every machine: its own
outcomes, and those of the others (a failure elsewhere is a failure of the run).

Stores that cannot split (SQLite, memory) are not asked: the provisioner runs every machine
itself, and per-machine locks keep concurrent runners safe.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import provisioning.errors as errors
from provisioning.errors import ProvisioningError, StateError, StateLocked
from provisioning.inputs.digest import sha256_hex
from provisioning.keys import random_hex
from provisioning.parallel import BatchResult, Cancelled, Outcome
from provisioning.store.base import WorkLeft, holder_info
from provisioning.store.chunks import CHUNK, ChunkedHold

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.lifecycle import MachineRequest, Provisioner
    from provisioning.store.chunks import Prepare

__all__ = ["WorkSplit", "split_run", "run_key", "supports_claims", "remote_error", "batch_size"]

#: a claim takes at most this share of a run's machines (1/SPREAD), so runners that join late
#: still find work and the last batches end close together
SPREAD = 40


def _who(holder: dict[str, Any] | None) -> str:
    holder = holder or {}
    return f"{holder.get('host', '?')} pid {holder.get('pid', '?')}"


def supports_claims(store: Any) -> bool:
    """True when the store can split work between runners (PostgreSQL)."""
    return bool(store.supports_claims)


def batch_size(machines: int, workers: int) -> int:
    """How many machines one claim takes: a runner's worth (``workers``), more for a big run
    (at most a ``CHUNK``, and at most 1/``SPREAD`` of the run)."""
    return max(1, workers, min(CHUNK, -(-machines // SPREAD)))


def run_key(operation: str, names: Sequence[str]) -> str:
    """The same operation on the same machines is the same run, whoever starts it."""
    digest = sha256_hex("\0".join([operation, *sorted(names)]).encode())
    return f"{operation}:{digest[:24]}"


class WorkSplit:
    """This runner's membership in one run: claim, finish, read progress. Claims are renewed by
    a heartbeat until ``close``."""

    def __init__(self, store: Any, operation: str, names: Sequence[str], *, ttl: float,
                 holder: dict[str, Any] | None = None) -> None:
        self.store = store
        self.operation = operation
        self.key = run_key(operation, names)
        self.ttl = ttl
        self.token = random_hex()
        self.holder = dict(holder or holder_info())
        self.generation = store.join_run(self.key, operation, list(names), fresh_within=ttl)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                        name=f"claims-heartbeat:{self.key}")
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(self.ttl / 3.0, 0.05)):
            try:
                self.store.renew_claims(self.key, self.generation, self.token, self.ttl)
            except Exception:  # a missed renewal only shortens the lease; the next may work
                pass

    def claim(self, count: int = 1) -> list[str]:
        """Up to ``count`` machines of the run, now this runner's (in name order)."""
        return self.store.claim_work(self.key, self.generation, self.token, self.holder,
                                     self.ttl, count)

    def finish(self, outcomes: Mapping[str, str | None]) -> set[str]:
        """Record each machine's outcome (None: done, else the error's text); returns the
        machines whose claim was still ours."""
        return self.store.finish_work(self.key, self.generation, self.token, outcomes)

    def release(self, names: Sequence[str]) -> None:
        """Give back claimed machines this runner will not start."""
        self.store.release_work(self.key, self.generation, self.token, names)

    def progress(self) -> dict[str, dict[str, Any]]:
        return self.store.run_progress(self.key, self.generation)

    def others_outcomes(self) -> dict[str, dict[str, Any]]:
        """The machines other runners have done or failed so far (final: reported early)."""
        return self.store.run_outcomes(self.key, self.generation, self.token)

    def left(self, upto: int | None = None) -> WorkLeft:
        """What is left of this run: pending and open machines, runners holding claims (among
        the first ``upto`` open machines in claim order, if given)."""
        return self.store.run_left(self.key, self.generation, upto)

    def open_count(self) -> int:
        """Machines of this run not yet done or failed."""
        return self.left().open

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> "WorkSplit":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remote_error(name: str, row: dict[str, Any]) -> ProvisioningError:
    """The failure another runner recorded for a machine, as an error of the same type (a
    ``StateLocked`` there is a ``StateLocked`` here, with its exit code), saying who saw it."""
    text = row.get("error") or "ProvisioningError: unknown error"
    type_name, _, message = text.partition(": ")
    cls = getattr(errors, type_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ProvisioningError)):
        cls, message = ProvisioningError, text
    if message.startswith(f"[{name}] "):
        message = message[len(name) + 3:]
    error = cls.__new__(cls)  # its own __init__ may want fields only the other runner had
    ProvisioningError.__init__(error, f"failed in another runner ({_who(row.get('holder'))}): "
                                      f"{message}", machine=name)
    if isinstance(error, StateLocked):
        error.name, error.holder = name, {}
    return error


class _Feed:
    """This runner's claimed machines not yet started, handed to its worker threads by a
    feeder thread that keeps them busy: it claims the next batch (and locks and reads it)
    while the workers are still on the current one, so a worker that finishes a machine
    finds the next one waiting instead of a claim's round trips. Near the end of the run
    (less than a batch per runner left) it claims only for idle workers, so no claim waits
    here unstarted while another runner has nothing to do. It writes outcomes back a batch at
    a time, and when nothing is left to claim it waits for the others (woken by the store's
    announcements where it has them, else every ``poll`` seconds) until the run is over."""

    def __init__(self, split: WorkSplit, workers: int, size: int, halt: threading.Event,
                 poll: float, hold: "Callable[[list[str]], ChunkedHold] | None") -> None:
        self.split, self.workers, self.size, self.halt, self.poll = \
            split, workers, size, halt, poll
        self._hold = hold
        self.holds: list["ChunkedHold"] = []
        self.lapsed: list[str] = []  # ours once, then taken over by another runner
        self.claimed: set[str] = set()  # every machine this runner has claimed
        #: set once nothing is pending (or the feeder stopped): from then on the others'
        #: outcomes are worth reading while this runner's last machines run
        self.drained = threading.Event()
        self.error: BaseException | None = None  # what stopped the feeder (a StateError)
        #: claim round trips, and worker-seconds spent waiting for a claim / for the end
        self.claims, self.starved, self.idle = 0, 0.0, 0.0
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the workers wait on it for machines
        self._wake = threading.Condition(lock)  # the feeder waits on it for work to do
        self._queue: deque[tuple[str, "ChunkedHold | None"]] = deque()
        self._outcomes: dict[str, str | None] = {}
        self._running = 0
        self._exhausted = False  # the last claim found less than it asked for
        self._tail = False  # less than a batch per runner is left: claim for idle workers only
        self._runners = 1  # runners holding claims, last seen
        self._notice = False  # another runner announced progress since the last look
        self._next_look = 0.0
        self._over = self._closing = False
        self._listening = threading.Event()  # set once: stop listening
        self._listener: threading.Thread | None = None
        self._thread = threading.Thread(target=self._feed, daemon=True,
                                        name=f"claims-feeder:{split.key}")
        self._thread.start()

    # -- the workers' side -----------------------------------------------------------------
    def next(self) -> "tuple[str, ChunkedHold | None] | None":
        """The next machine to do (with the hold it came in), or None when the run is over,
        this runner is stopping or its store failed (``error``)."""
        began = time.monotonic()
        with self._cond:
            while not self._queue:
                if self._over or self._closing or self.error or self.halt.is_set():
                    self.idle += time.monotonic() - began
                    return None
                self._cond.wait(self.poll)
            self._running += 1
            self.starved += time.monotonic() - began
            self._wake.notify()  # the queue shrank: the feeder may claim ahead
            return self._queue.popleft()

    def done(self, name: str, error: str | None) -> None:
        with self._cond:
            self._running -= 1
            self._outcomes[name] = error
            self._wake.notify()

    def stop(self) -> None:
        """Stop handing out machines (fail-fast)."""
        self.halt.set()
        with self._cond:
            self._cond.notify_all()
            self._wake.notify()

    # -- the feeder ------------------------------------------------------------------------
    def _feed(self) -> None:
        try:
            while self._step():
                pass
        except BaseException as exc:  # a StateError from the store: the workers stop
            with self._cond:
                self.error = exc
            self.halt.set()
        finally:
            self._listening.set()
            self.drained.set()
            with self._cond:
                self._cond.notify_all()

    def _wanted(self, idle: int) -> int:
        """How many machines to claim now: enough for the idle workers and, away from the
        end, a batch ahead; claimed in batches, not one by one."""
        if self._exhausted:
            return 0
        need = idle if self._tail else idle + self.size
        return min(need, self.size) if need >= (1 if self._tail else -(-self.size // 2)) else 0

    def _step(self) -> bool:
        """One round: claim and/or write back, or look for others' work; False when over."""
        with self._cond:
            while True:
                if self._over or self._closing or self.halt.is_set():
                    return False
                idle = self.workers - self._running - len(self._queue)
                count = self._wanted(idle)
                look = self._exhausted and idle > 0 and (
                    self._notice or time.monotonic() >= self._next_look)
                flush = bool(self._outcomes) and (self._tail or self._exhausted or count > 0
                                                  or len(self._outcomes) >= self.size
                                                  or self._running == 0)
                if count or look or flush:
                    break
                self._wake.wait(self.poll)
            self._notice = False
            outcomes, self._outcomes = self._outcomes, {}
        asked = count or (max(idle, 1) if look else 0)
        names = self.split.claim(asked) if asked else []
        self.claims += bool(asked)
        hold = self._hold(names) if names and self._hold is not None else None
        if names:
            if hold is not None:
                self.holds.append(hold)
            with self._cond:
                self.claimed.update(names)
                self._queue.extend((name, hold) for name in names)
                self._cond.notify_all()
        if outcomes:
            kept = self.split.finish(outcomes)
            self.lapsed.extend(name for name in outcomes if name not in kept)
        if hold is not None:
            hold.prefetch()  # locks and entries read before the workers reach them
        # after a claim, or after writing back with nothing left to claim (this runner may
        # have finished the run's last machines: it need not wait for its own announcement)
        if asked or (outcomes and self._exhausted):
            left = self.split.left(self._window())
            with self._cond:
                if asked:
                    self._exhausted = len(names) < asked
                    self._next_look = time.monotonic() + self.poll
                self._runners = max(1, left.runners)
                self._tail = left.pending < self._runners * self.size
                if left.open == 0:  # every machine of the run is done or failed
                    self._over = True
                    return False
            if self._exhausted and not self._listening.is_set() and not names:
                self._listen()
            if self._exhausted or left.pending == 0:
                self.drained.set()
        return True

    def _window(self) -> int:
        """How many open machines (in claim order) to look at to tell the tail from the rest:
        each runner's claims in flight (a batch queued, its workers' machines) come first, then
        the pending ones; enough for one more runner than last seen. The look costs this
        window, not the run's size."""
        return (self._runners + 1) * (2 * self.size + self.workers)

    def _listen(self) -> None:
        """From now on, wake up when another runner finishes or gives back work of the run."""
        def wake() -> None:
            with self._cond:
                self._notice = True
                self._wake.notify()
        if self._listener is None:
            self._listener = threading.Thread(
                target=self.split.store.watch_run,
                args=(self.split.key, self.split.generation, wake, self._listening),
                daemon=True, name=f"claims-listener:{self.split.key}")
            self._listener.start()

    def close(self) -> None:
        """Stop the feeder (after the workers ended) and write back what is left."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            self._wake.notify()
        self._thread.join()
        self._listening.set()
        self.flush()

    def flush(self) -> None:
        """Write back the outcomes gathered so far."""
        with self._cond:
            outcomes, self._outcomes = self._outcomes, {}
        if outcomes:
            kept = self.split.finish(outcomes)
            self.lapsed.extend(name for name in outcomes if name not in kept)

    def claimed_so_far(self) -> set[str]:
        with self._cond:
            return set(self.claimed)

    def unstarted(self) -> list[str]:
        """Claimed machines no worker took (this runner is stopping)."""
        with self._cond:
            names, self._queue = [name for name, _ in self._queue], deque()
        return names


def split_run(provisioner: "Provisioner", operation: str, requests: Sequence["MachineRequest"],
              call: Callable[["MachineRequest"], Any], *,
              held: "Callable[[ChunkedHold, MachineRequest], Any] | None" = None,
              prepare: "Prepare | None" = None, poll: float = 0.2,
              stop: threading.Event | None = None) -> BatchResult:
    """Do ``call(request)`` for the machines this runner claims, wait for the others' machines,
    and return every machine's outcome. With ``held``, each claimed batch is locked and read
    at once (``prepare`` sees it first) and ``held(hold, request)`` does each machine."""
    by_name = {r[1]: r for r in requests}
    results = BatchResult((r[1], Outcome(r[1])) for r in requests)
    handler = provisioner.action_handler
    fail_fast = provisioner.parallelizer.policy == "fail-fast"
    workers = max(1, min(provisioner.parallelizer.max_workers, len(requests)))
    mine: set[str] = set()
    problems: list[BaseException] = []
    halt = stop or threading.Event()

    reported: set[str] = set()  # others' machines whose outcome is known here

    def report(rows: dict[str, dict[str, Any]], ours: set[str]) -> None:
        """Report the final outcomes of machines other runners did (a machine this runner
        claimed is reported by its worker, or at the end)."""
        for name in results:  # in the order of the requests
            row = rows.get(name)
            if row is None or name in ours or name in reported:
                continue
            if row.get("state") == "done":
                handler.report_result(f"done by another runner ({_who(row.get('holder'))})",
                                      machine=name, data={"runner": row.get("holder")})
            elif row.get("state") == "failed":
                results[name].error = remote_error(name, row)
            else:
                continue
            reported.add(name)

    def hold(names: list[str]) -> ChunkedHold:
        return ChunkedHold(provisioner.store, names, ttl=provisioner.lock_ttl,
                           wait=provisioner.lock_wait, size=len(names), prepare=prepare)

    with WorkSplit(provisioner.store, operation, list(by_name), ttl=provisioner.lock_ttl) as split:
        handler.report_progress(f"{operation}: sharing {len(requests)} machines with other "
                                f"runners on {provisioner.store.url} (run {split.key} "
                                f"#{split.generation})", data={"run": split.key,
                                                                "generation": split.generation})
        feed = _Feed(split, workers, batch_size(len(requests), workers), halt, poll,
                     hold if held is not None else None)

        def work() -> None:
            while (item := feed.next()) is not None:
                name, chunk = item
                mine.add(name)
                error: str | None = None
                try:
                    if held is not None and chunk is not None:
                        results[name].value = held(chunk, by_name[name])
                    else:
                        results[name].value = call(by_name[name])
                except Exception as exc:  # every machine's outcome is reported
                    results[name].error = exc
                    error = f"{type(exc).__name__}: {exc}"
                    if fail_fast:
                        feed.stop()
                feed.done(name, error)

        threads = [threading.Thread(target=work, name=f"provisioning-claim-{i}", daemon=True)
                   for i in range(workers)]
        for thread in threads:
            thread.start()
        feed.drained.wait()  # nothing pending: this runner's last machines are running
        if not halt.is_set() and feed.error is None:
            try:
                report(split.others_outcomes(), feed.claimed_so_far())
            except StateError:
                pass  # read again, with everything else, when the run is over
        for thread in threads:
            thread.join()
        progress: dict[str, dict[str, Any]] = {}
        try:
            try:
                feed.close()  # the feeder stops; the last outcomes are written back
            finally:
                for chunk in feed.holds:  # locks of unstarted machines go before their claims
                    chunk.close()
            split.release(feed.unstarted())
            progress = split.progress()
        except StateError as exc:
            problems.append(exc)
        if feed.error is not None:
            problems.insert(0, feed.error)
        handler.report_progress(
            f"{operation}: {len(mine)} of {len(requests)} machines done by this runner in "
            f"{feed.claims} claims", data={"run": split.key, "generation": split.generation,
                                          "mine": len(mine), "claims": feed.claims,
                                          "starved": round(feed.starved, 3),
                                          "idle": round(feed.idle, 3)})
        for name in feed.lapsed:
            handler.report_progress("another runner took this machine over while it was in "
                                    "progress (our claim had lapsed)", machine=name)

    report(progress, mine)
    for name, outcome in results.items():
        if name in mine or name in reported:
            continue
        if problems:
            outcome.error = problems[0]
        else:
            outcome.error = Cancelled("not started: this runner stopped before claiming it "
                                      "(another runner may still do it)", machine=name)
    return results
