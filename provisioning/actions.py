"""ActionHandler: every change goes through ``perform_action``, so why-run can plan without acting.

Handlers emit ``Event`` objects to listeners (the CLI renders them live, ``--output json`` prints
one per line, tests read them from ``RecordingActionHandler``). ``for_machine(name)`` returns a
handler whose events carry the machine's name, so descriptions read ``[web-1] create server``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import field
from typing import Any, Callable, Iterable, TypeVar

from provisioning.errors import ProvisioningError
from provisioning.inputs.records import record

T = TypeVar("T")

__all__ = ["Event", "ActionHandler", "PrefixedActionHandler", "RecordingActionHandler"]

#: kinds of event: a change (done or planned), progress, a machine's final state, an error
EVENT_KINDS = ("action", "progress", "result", "error")


@record(frozen=True)
class Event:
    """One thing that happened (or, under why-run, would happen)."""

    kind: str
    description: str
    machine: str | None = None
    why_run: bool = False
    performed: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def __str__(self) -> str:
        text = self.description
        if self.kind == "action" and self.why_run:
            text = f"would {text}"
        return f"[{self.machine}] {text}" if self.machine else text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.kind,
            "machine": self.machine,
            "description": self.description,
            "why_run": self.why_run,
            "performed": self.performed,
            "time": round(self.time, 6),
        }
        if self.data:
            out["data"] = self.data
        return out


Listener = Callable[[Event], None]


class ActionHandler:
    """Runs changes unless why-run, and reports each one to its listeners."""

    def __init__(self, *, why_run: bool = False, listeners: Iterable[Listener] = ()) -> None:
        self._why_run = why_run
        self._listeners: list[Listener] = list(listeners)
        self._lock = threading.Lock()

    @property
    def why_run(self) -> bool:
        """True when changes are only reported ("would ..."), never made."""
        return self._why_run

    # -- listeners -------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def emit(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    # -- the contract ----------------------------------------------------------------------
    def perform_action(
        self,
        description: str | list[str],
        fn: Callable[[], T] | None = None,
        *,
        machine: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> T | None:
        """Run ``fn`` unless why-run; record the action either way. Returns fn's result (None
        under why-run)."""
        text = "; ".join(description) if isinstance(description, list) else description
        if self.why_run:
            self.emit(Event("action", text, machine, why_run=True, performed=False, data=data or {}))
            return None
        result = fn() if fn is not None else None
        self.emit(Event("action", text, machine, why_run=False, performed=True, data=data or {}))
        return result

    def report_progress(self, description: str, *, machine: str | None = None,
                        data: dict[str, Any] | None = None) -> None:
        """Inform without changing anything."""
        self.emit(Event("progress", description, machine, why_run=self.why_run, data=data or {}))

    def report_result(self, description: str, *, machine: str | None = None,
                      data: dict[str, Any] | None = None) -> None:
        """A machine's outcome (the CLI's last line for it)."""
        self.emit(Event("result", description, machine, why_run=self.why_run, data=data or {}))

    def report_error(self, error: BaseException, *, machine: str | None = None) -> None:
        """An error event; one that is not ours (a bug, in a driver or here) carries its
        traceback, which renderers show at -vv."""
        data = {"type": type(error).__name__}
        if not isinstance(error, ProvisioningError):
            import traceback

            data["traceback"] = "".join(traceback.format_exception(
                type(error), error, error.__traceback__)).rstrip()
        self.emit(Event("error", str(error), machine, why_run=self.why_run, data=data))

    def for_machine(self, name: str) -> "PrefixedActionHandler":
        return PrefixedActionHandler(self, name)


class PrefixedActionHandler(ActionHandler):
    """Forwards to a parent handler, naming one machine in every event."""

    def __init__(self, parent: ActionHandler, machine: str) -> None:
        self.parent = parent
        self.machine = machine

    @property
    def why_run(self) -> bool:
        return self.parent.why_run

    def subscribe(self, listener: Listener) -> None:
        self.parent.subscribe(listener)

    def emit(self, event: Event) -> None:
        self.parent.emit(event)

    def perform_action(self, description: str | list[str], fn: Callable[[], T] | None = None, *,
                       machine: str | None = None, data: dict[str, Any] | None = None) -> T | None:
        return self.parent.perform_action(description, fn, machine=machine or self.machine, data=data)

    def report_progress(self, description: str, *, machine: str | None = None,
                        data: dict[str, Any] | None = None) -> None:
        self.parent.report_progress(description, machine=machine or self.machine, data=data)

    def report_result(self, description: str, *, machine: str | None = None,
                      data: dict[str, Any] | None = None) -> None:
        self.parent.report_result(description, machine=machine or self.machine, data=data)

    def report_error(self, error: BaseException, *, machine: str | None = None) -> None:
        self.parent.report_error(error, machine=machine or self.machine)

    def for_machine(self, name: str) -> "PrefixedActionHandler":
        return PrefixedActionHandler(self.parent, name)


class RecordingActionHandler(ActionHandler):
    """Keeps every event in ``events``: for tests and for the CLI's final summary."""

    def __init__(self, *, why_run: bool = False, listeners: Iterable[Listener] = ()) -> None:
        super().__init__(why_run=why_run, listeners=listeners)
        self.events: list[Event] = []
        self.subscribe(self.events.append)

    def actions(self, machine: str | None = None, *, performed: bool | None = None) -> list[Event]:
        """Action events, optionally only one machine's, optionally only performed/planned ones."""
        return [
            e for e in self.events
            if e.kind == "action"
            and (machine is None or e.machine == machine)
            and (performed is None or e.performed == performed)
        ]

    def descriptions(self, kind: str = "action") -> list[str]:
        return [str(e) for e in self.events if e.kind == kind]
