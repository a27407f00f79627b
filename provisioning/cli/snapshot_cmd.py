"""``converge snapshot save|restore|list|delete MACHINE [NAME]``: local machines' snapshots."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, pass_settings, why_run_option
from provisioning.driver.local_features import Snapshot


@click.group()
def snapshot() -> None:
    """Save, restore, list and delete snapshots of a machine's files (local drivers)."""


def _run(settings, operation: str, machine: str, name: str | None) -> int:
    with settings.session(live=False, select=[machine], boots=False) as session:
        result = session.runner.snapshot(operation, machine, name)
        why_run = session.runner.why_run
        if operation == "list":
            rows = [{"name": s.name, "created": _when(s.created_at),
                     "size": "-" if s.size is None else _size(s.size)} for s in result]
            session.renderer.table(("NAME", "CREATED", "SIZE"), rows, ("name", "created", "size"),
                                   {"event": "snapshots", "machine": machine,
                                    "snapshots": [s.to_dict() for s in result]})
            return 0
        saved = result.name if isinstance(result, Snapshot) else name  # save names it
        session.renderer.summary({"event": "summary", "command": f"snapshot {operation}",
                                  "ok": True, "why_run": why_run, "machine": machine,
                                  "snapshot": saved,
                                  "machines": {machine: {"ok": True, "changes": session.runner
                                                         .actions.get(machine, 0),
                                                         "error": None, "error_type": None}}})
    return 0


def _when(timestamp: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


@snapshot.command()
@click.argument("machine")
@click.argument("name", required=False)
@common_options
@why_run_option
@pass_settings
def save(settings, machine: str, name: str | None) -> int:
    """Save MACHINE's files as snapshot NAME (default: snap-DATE-TIME in UTC)."""
    return _run(settings, "save", machine, name)


@snapshot.command()
@click.argument("machine")
@click.argument("name", required=False)
@common_options
@why_run_option
@pass_settings
def restore(settings, machine: str, name: str | None) -> int:
    """Return MACHINE's files to snapshot NAME (default: the newest one)."""
    return _run(settings, "restore", machine, name)


@snapshot.command(name="list")
@click.argument("machine")
@common_options
@pass_settings
def list_(settings, machine: str) -> int:
    """List MACHINE's snapshots, oldest first."""
    return _run(settings, "list", machine, None)


@snapshot.command()
@click.argument("machine")
@click.argument("name")
@common_options
@why_run_option
@pass_settings
def delete(settings, machine: str, name: str) -> int:
    """Delete MACHINE's snapshot NAME."""
    return _run(settings, "delete", machine, name)
