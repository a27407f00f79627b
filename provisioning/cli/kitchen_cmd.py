"""test-kitchen's commands: ``converge create|converge|verify|list [REGEX]...``.

Arguments are machine, group or instance names, or regular expressions over instance names
(``converge verify 'bookworm$'``); none means every instance. The lifecycle itself lives in
``provisioning.cluster.kitchen`` (``Cluster.kitchen``); ``test`` and ``destroy`` have their own modules.
"""

from __future__ import annotations

import click

from provisioning.cli.common import (
    common_options,
    concurrency_option,
    finish_batch,
    pass_settings,
    why_run_option,
)
from provisioning.machine.base import Machine

PATTERNS = "[INSTANCE|REGEX]..."


def _disconnect(results) -> None:
    for outcome in results.values():
        if isinstance(outcome.value, Machine):
            outcome.value.disconnect()


def _batch(settings, patterns: tuple[str, ...], operation: str) -> int:
    """``create`` or ``converge`` on the chosen instances; the machines are disconnected after."""
    with settings.session(choose=patterns) as session:
        kitchen = session.cluster.kitchen
        run = kitchen.create if operation == "create" else kitchen.converge
        results = run(session.cluster.choose(patterns))
        try:
            return finish_batch(session, operation, results)
        finally:
            _disconnect(results)


@click.command()
@click.argument("patterns", nargs=-1, metavar=PATTERNS)
@concurrency_option
@common_options
@why_run_option
@pass_settings
def create(settings, patterns: tuple[str, ...]) -> int:
    """Create and ready instances (no convergence)."""
    return _batch(settings, patterns, "create")


@click.command("converge")
@click.argument("patterns", nargs=-1, metavar=PATTERNS)
@concurrency_option
@common_options
@why_run_option
@pass_settings
def converge_(settings, patterns: tuple[str, ...]) -> int:
    """Create instances if needed and converge them (like 'up', recorded per instance)."""
    return _batch(settings, patterns, "converge")


@click.command()
@click.argument("patterns", nargs=-1, metavar=PATTERNS)
@concurrency_option
@common_options
@pass_settings
def verify(settings, patterns: tuple[str, ...]) -> int:
    """Run the verify entries of instances (converging those not created yet) and record the
    result per instance ('converge list' shows it)."""
    with settings.session(choose=patterns) as session:
        cluster = session.cluster
        return finish_batch(session, "verify", cluster.kitchen.verify(cluster.choose(patterns)))


COLUMNS = ("INSTANCE", "DRIVER", "STATE", "LAST ACTION", "LAST VERIFY", "VERIFIED AT")
KEYS = ("instance", "driver_url", "state", "last_action_text", "verify_text", "verified_text")


@click.command("list")
@click.argument("patterns", nargs=-1, metavar=PATTERNS)
@common_options
@pass_settings
def list_(settings, patterns: tuple[str, ...]) -> int:
    """List instances: driver, state, last action, last verify result and when."""
    import time

    def when(stamp) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"

    with settings.session(live=False, read_only=True) as session:
        cluster = session.cluster
        chosen = {cluster.file.instance_of(d) for d in cluster.choose(patterns)}
        rows = [r for r in cluster.kitchen.list() if r["instance"] in chosen]
        shown = []
        for row in rows:
            action = row["last_action"] or "-"
            if row["last_action"] and row["last_action_ok"] is False:
                action += " (failed)"
            verify = {True: "passed", False: "failed", None: "-"}[row["verify"]]
            shown.append(dict(row, last_action_text=action, verify_text=verify,
                              verified_text=when(row["verified_at"])))
        session.renderer.table(COLUMNS, shown, KEYS,
                               {"event": "list", "file": cluster.file.path,
                                "state": session.store.url, "instances": rows})
    return 0
