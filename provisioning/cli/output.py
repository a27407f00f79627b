"""How ``converge`` shows events: live per-machine progress on a terminal (rich), plain lines
when not a terminal, or one JSON object per line with ``--output json``.

Events arrive from worker threads; every renderer serializes its writes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Sequence, TextIO

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import Event

__all__ = ["Renderer", "PlainRenderer", "JSONRenderer", "RichRenderer", "LiveFleet",
           "make_renderer", "format_table"]

#: set to 1 to force the live display (tests drive it through a pseudo-terminal)
FORCE_LIVE_ENV = "CONVERGE_LIVE"


def make_renderer(output: str, verbosity: int = 0, *, live: bool = True,
                  stream: TextIO | None = None) -> "Renderer":
    stream = stream or sys.stdout
    if output == "json":
        return JSONRenderer(stream, verbosity)
    forced = os.environ.get(FORCE_LIVE_ENV)
    interactive = stream.isatty() if forced is None else forced == "1"
    if live and interactive and os.environ.get("TERM") != "dumb":
        return RichRenderer(stream, verbosity)
    return PlainRenderer(stream, verbosity)


def strip_machine(text: str, machine: str | None) -> str:
    """An error's text without the ``[name] `` prefix the display adds anyway."""
    prefix = f"[{machine}] "
    return text[len(prefix):] if machine and text.startswith(prefix) else text


def cell_text(value: Any) -> str:
    """A table cell as text safe on a terminal: what a state entry or a driver recorded may be
    anything (an edited ``driver_url`` with a terminal escape or a bidi override), so the
    characters that are not printable are shown as escapes (``\\x1b``, ``\\u202e``), not sent."""
    text = "-" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned plain-text columns."""
    cells = [[str(c) for c in columns]] + [[cell_text(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in cells]
    return "\n".join(lines)


class Renderer:
    """Receives events (``event``), a final summary, tables and plain messages."""

    def __init__(self, stream: TextIO, verbosity: int = 0) -> None:
        self.stream = stream
        self.verbosity = verbosity
        self.lock = threading.Lock()

    def wants(self, event: "Event") -> bool:
        if event.kind in ("result", "error"):
            return True
        if self.verbosity < 0:
            return False
        return True

    def event(self, event: "Event") -> None:
        raise NotImplementedError

    def summary(self, summary: dict[str, Any]) -> None:
        raise NotImplementedError

    def table(self, columns: Sequence[str], rows: Sequence[dict[str, Any]], keys: Sequence[str],
              record: Any) -> None:
        raise NotImplementedError

    def message(self, text: str, *, record: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _write(self, text: str, stream: TextIO | None = None) -> None:
        with self.lock:
            target = stream or self.stream
            target.write(text + "\n")
            target.flush()


def _summary_text(summary: dict[str, Any]) -> str:
    machines = summary.get("machines", {})
    failed = {n: m for n, m in machines.items() if not m["ok"]}
    verb = "planned" if summary.get("why_run") else summary.get("command", "done")
    total_changes = sum(m.get("changes", 0) for m in machines.values())
    noun = "planned change" if summary.get("why_run") else "change"
    text = (f"{verb}: {len(machines)} machine{'s' if len(machines) != 1 else ''}, "
            f"{len(machines) - len(failed)} ok, {len(failed)} failed; "
            f"{total_changes} {noun}{'s' if total_changes != 1 else ''}")
    for name, info in failed.items():
        first = (info.get("error") or "").splitlines()[0] if info.get("error") else ""
        text += f"\n  {name}: {first}"
    return text


def _internal_details(event: "Event", verbosity: int) -> list[str]:
    """At -vv, an internal error's type and traceback (ours carry neither: their message says
    what to fix)."""
    trace = (event.data or {}).get("traceback")
    if verbosity < 2 or not trace:
        return []
    return [f"({event.data.get('type')}: an internal error; traceback follows)",
            *trace.splitlines()]


class PlainRenderer(Renderer):
    """One line per event, for logs and pipes."""

    def event(self, event: "Event") -> None:
        if not self.wants(event):
            return
        if event.kind == "error":
            lines = strip_machine(event.description, event.machine).splitlines() or [""]
            prefix = f"[{event.machine}] " if event.machine else ""
            lines += _internal_details(event, self.verbosity)
            self._write(f"{prefix}FAILED: {lines[0]}" + "".join(f"\n{prefix}  {l}" for l in lines[1:]),
                        sys.stderr if self.stream is sys.stdout else self.stream)
        else:
            self._write(str(event))

    def summary(self, summary: dict[str, Any]) -> None:
        self._write(_summary_text(summary))

    def table(self, columns, rows, keys, record) -> None:
        self._write(format_table(columns, [[r.get(k) for k in keys] for r in rows]))

    def message(self, text: str, *, record: dict[str, Any] | None = None) -> None:
        self._write(text)


class JSONRenderer(Renderer):
    """One JSON object per line: events, then a summary (or the command's record)."""

    def event(self, event: "Event") -> None:
        self._write(json.dumps(event.to_dict(), default=str))

    def summary(self, summary: dict[str, Any]) -> None:
        self._write(json.dumps(summary, default=str))

    def table(self, columns, rows, keys, record) -> None:
        self._write(json.dumps(record, default=str))

    def message(self, text: str, *, record: dict[str, Any] | None = None) -> None:
        self._write(json.dumps(record if record is not None else {"event": "message",
                                                                   "message": text}, default=str))


class LiveFleet:
    """What the live display shows, kept up to date in O(1) per event and drawn by rich only
    when it refreshes: a row per machine for a few machines; for a fleet, one summary (done,
    changed, failed, running) naming the machines that have been running longest."""

    #: machines shown one row each; more are summarised
    ROWS = 12
    #: slowest running machines named in the summary
    SLOWEST = 3

    def __init__(self) -> None:
        self.rows: dict[str, list[str]] = {}
        self.started: dict[str, float] = {}   # running machine -> when its first event came
        self.done = self.changed = self.failed = 0

    @property
    def large(self) -> bool:
        return len(self.rows) > self.ROWS

    def update(self, event: "Event", text: str) -> None:
        name = event.machine or "-"
        state = {"result": "ok", "error": "failed"}.get(event.kind, "busy")
        previous = self.rows.get(name, [None])[0]
        self.rows[name] = [state, text]
        if state == "busy":
            self.started.setdefault(name, event.time)
            return
        self.started.pop(name, None)
        if previous in ("ok", "failed"):  # a second outcome for one machine: count it once
            self.done -= previous == "ok"
            self.failed -= previous == "failed"
        if state == "ok":
            self.done += 1
            self.changed += bool((event.data or {}).get("changes"))
        else:
            self.failed += 1

    def __rich__(self):
        import time

        from rich.spinner import Spinner
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        if not self.large:
            for name, (state, text) in self.rows.items():
                marker = Spinner("dots", style="cyan") if state == "busy" else (
                    "[green]✓[/]" if state == "ok" else "[red]✗[/]")
                table.add_row(marker, f"[bold]{name}[/]", text)
            return table
        from rich.markup import escape

        now = time.time()
        table.add_row(Spinner("dots", style="cyan") if self.started else "[green]✓[/]",
                      self.counts())
        slowest = sorted(self.started.items(), key=lambda item: item[1])[:self.SLOWEST]
        if slowest:
            table.add_row("", "slowest: " + ", ".join(
                f"[bold]{escape(n)}[/] {now - t:.0f} s ({escape(self.rows[n][1][:40])})"
                for n, t in slowest))
        return table

    def counts(self) -> str:
        return (f"[green]{self.done} done[/] ({self.changed} changed), "
                f"[red]{self.failed} failed[/], [cyan]{len(self.started)} running[/]")


class RichRenderer(Renderer):
    """A live view of the machines (``LiveFleet``) with the changes scrolling above it (for a
    fleet, only its failures scroll)."""

    def __init__(self, stream: TextIO, verbosity: int = 0) -> None:
        super().__init__(stream, verbosity)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, force_terminal=True, highlight=False)
        self.fleet = LiveFleet()
        self._closed = False
        self.live = Live(self.fleet, console=self.console, refresh_per_second=8,
                         transient=True)
        self.live.start()

    @property
    def rows(self) -> dict[str, list[str]]:
        return self.fleet.rows

    def event(self, event: "Event") -> None:
        from rich.markup import escape

        with self.lock:
            if self._closed:
                if self.wants(event):
                    self.console.print(escape(str(event)), highlight=False)
                return
            name = event.machine or "-"
            text = strip_machine(event.description, event.machine).splitlines()[0] \
                if event.description else ""
            if event.kind == "action" and event.why_run:
                text = f"would {text}"
            self.fleet.update(event, escape(text))
            quiet = self.fleet.large and self.verbosity <= 0  # a fleet: its lines would flood
            if event.kind == "action" and self.verbosity >= 0 and not quiet:
                self.live.console.print(f"[dim]{escape(name)}[/] {escape(str(event).split('] ', 1)[-1])}")
            elif event.kind == "progress" and self.verbosity > 0:
                self.live.console.print(f"[dim]{escape(name)} {escape(event.description)}[/]")
            elif event.kind == "error":
                details = "\n".join(_internal_details(event, self.verbosity))
                self.live.console.print(f"[red]{escape(name)} FAILED:[/] "
                                       f"{escape(strip_machine(event.description, name))}"
                                       + (f"\n{escape(details)}" if details else ""))

    def close(self) -> None:
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self.live.stop()
            if self.fleet.rows and not self.fleet.large:
                self.console.print(self.fleet)

    def summary(self, summary: dict[str, Any]) -> None:
        self.close()
        failed = not summary.get("ok", True)
        from rich.markup import escape

        self.console.print(("[red]" if failed else "[green]") + escape(_summary_text(summary))
                           + "[/]", markup=True, highlight=False)

    def table(self, columns, rows, keys, record) -> None:
        from rich.table import Table
        from rich.text import Text

        self.close()
        table = Table(*columns)
        for r in rows:  # as Text: a cell's brackets are not rich markup
            table.add_row(*[Text(cell_text(r.get(k))) for k in keys])
        self.console.print(table)

    def message(self, text: str, *, record: dict[str, Any] | None = None) -> None:
        self.close()
        self.console.print(text, markup=False, highlight=False)
