"""Many runners, one cluster: split one operation on many machines between every runner that
shares a state store (``converge up --parallel N`` started on several hosts against PostgreSQL).

The first runner to arrive opens a *run*: the operation, the sorted machine names, one row per
machine. Runners started for the same operation on the same machines while it is open join it.
Each worker thread of each runner claims the next pending machine (``FOR UPDATE SKIP LOCKED``:
a claim never waits on another runner), does it under the machine's lock, and marks it done or
failed. A claim dies with its runner (its session) or when its lease is not renewed, and is then
claimed again by someone else. A runner ends when every machine of the run is done or failed,
and reports every machine: its own outcomes, and those of the others (a failure elsewhere is a
failure of the run).

Stores that cannot split (SQLite, memory) are not asked: the provisioner runs every machine
itself, and per-machine locks keep concurrent runners safe.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

import provisioning.errors as errors
from provisioning.errors import ProvisioningError, StateError, StateLocked
from provisioning.parallel import BatchResult, Cancelled, Outcome
from provisioning.store.base import holder_info

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.lifecycle import MachineRequest, Provisioner

__all__ = ["WorkSplit", "split_run", "run_key", "supports_claims", "remote_error"]


def _who(holder: dict[str, Any] | None) -> str:
    holder = holder or {}
    return f"{holder.get('host', '?')} pid {holder.get('pid', '?')}"


def supports_claims(store: Any) -> bool:
    """True when the store can split work between runners (PostgreSQL)."""
    return bool(store.supports_claims)


def run_key(operation: str, names: Sequence[str]) -> str:
    """The same operation on the same machines is the same run, whoever starts it."""
    digest = hashlib.sha256("\0".join([operation, *sorted(names)]).encode()).hexdigest()
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
        self.token = uuid.uuid4().hex
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

    def claim(self) -> str | None:
        return self.store.claim_next(self.key, self.generation, self.token, self.holder, self.ttl)

    def finish(self, name: str, error: str | None = None) -> bool:
        return self.store.finish_claim(self.key, self.generation, name, self.token, error)

    def progress(self) -> dict[str, dict[str, Any]]:
        return self.store.run_progress(self.key, self.generation)

    def open_count(self) -> int:
        """Machines of this run not yet done or failed."""
        return self.store.run_open(self.key, self.generation)

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


def split_run(provisioner: "Provisioner", operation: str, requests: Sequence["MachineRequest"],
              call: Callable[["MachineRequest"], Any], *, poll: float = 0.2,
              stop: threading.Event | None = None) -> BatchResult:
    """Do ``call(request)`` for the machines this runner claims, wait for the others' machines,
    and return every machine's outcome."""
    by_name = {r[1]: r for r in requests}
    results = BatchResult((r[1], Outcome(r[1])) for r in requests)
    handler = provisioner.action_handler
    fail_fast = provisioner.parallelizer.policy == "fail-fast"
    workers = max(1, min(provisioner.parallelizer.max_workers, len(requests)))
    mine: set[str] = set()
    problems: list[BaseException] = []
    halt = stop or threading.Event()

    with WorkSplit(provisioner.store, operation, list(by_name), ttl=provisioner.lock_ttl) as split:
        handler.report_progress(f"{operation}: sharing {len(requests)} machines with other "
                                f"runners on {provisioner.store.url} (run {split.key} "
                                f"#{split.generation})", data={"run": split.key,
                                                                "generation": split.generation})

        def work() -> None:
            while not halt.is_set():
                try:
                    name = split.claim()
                    if name is None:
                        if split.open_count() == 0:
                            return
                        time.sleep(poll)  # others are at work; their dead claims come back
                        continue
                except StateError as exc:
                    problems.append(exc)
                    halt.set()
                    return
                mine.add(name)
                error: str | None = None
                try:
                    results[name].value = call(by_name[name])
                except Exception as exc:  # every machine's outcome is reported
                    results[name].error = exc
                    error = f"{type(exc).__name__}: {exc}"
                    if fail_fast:
                        halt.set()
                try:
                    if not split.finish(name, error):
                        handler.report_progress("another runner took this machine over while "
                                                "it was in progress (our claim had lapsed)",
                                                machine=name)
                except StateError as exc:
                    problems.append(exc)
                    halt.set()
                    return

        threads = [threading.Thread(target=work, name=f"provisioning-claim-{i}", daemon=True)
                   for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            progress = split.progress()
        except StateError as exc:
            problems.append(exc)
            progress = {}

    for name, outcome in results.items():
        if name in mine:
            continue
        row = progress.get(name, {})
        if row.get("state") == "done":
            handler.report_result(f"done by another runner ({_who(row.get('holder'))})",
                                  machine=name, data={"runner": row.get("holder")})
        elif row.get("state") == "failed":
            outcome.error = remote_error(name, row)
        elif problems:
            outcome.error = problems[0]
        else:
            outcome.error = Cancelled("not started: this runner stopped before claiming it "
                                      "(another runner may still do it)", machine=name)
    return results
