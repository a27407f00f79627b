"""wait_until_connectable: retry a transport's ``connect`` until the machine answers."""

from __future__ import annotations

import time
from typing import Callable, Protocol

from provisioning.errors import AuthenticationError, ConnectError, HostKeyMismatch
from provisioning.transports.base import Transport

__all__ = ["wait_until_connectable", "ProgressReporter"]


class ProgressReporter(Protocol):
    """The one thing waiting needs from an action handler (which lives in a layer above)."""

    def report_progress(self, description: str) -> object: ...


def wait_until_connectable(transport: Transport, *, timeout: float,
                           action_handler: ProgressReporter | None, what: str,
                           sleep: Callable[[float], None] = time.sleep,
                           first_delay: float = 0.25, max_delay: float = 5.0,
                           protocol: str = "SSH") -> None:
    """Retry with exponential backoff while the machine is not reachable (``ConnectError``);
    ``AuthenticationError`` and ``HostKeyMismatch`` fail at once (waiting will not fix them).
    Past ``timeout`` raises ``ConnectError`` saying how long it waited and the last error.
    ``protocol`` names the transport in messages."""
    started = time.monotonic()
    deadline = started + timeout
    delay = first_delay
    attempts = 0
    reported = False
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        try:
            transport.connect(timeout=max(0.5, min(remaining, transport.connect_timeout)))
            if reported and action_handler is not None:
                action_handler.report_progress(
                    f"{what} accepts {protocol} after {time.monotonic() - started:.1f} s")
            return
        except (AuthenticationError, HostKeyMismatch):
            raise
        except ConnectError as exc:
            last = exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConnectError(
                f"{what} ({transport.host}) did not accept {protocol} within {timeout:g} s "
                f"({attempts} attempts); last error: {last.message}",
                host=transport.host, machine=last.machine) from last
        if not reported and action_handler is not None:
            action_handler.report_progress(
                f"waiting up to {timeout:g} s for {what} ({transport.host}) to accept {protocol}")
            reported = True
        sleep(min(delay, remaining))
        delay = min(delay * 2, max_delay)
