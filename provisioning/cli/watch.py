"""``converge watch [MACHINE|GROUP...]``: keep each group at its count of healthy machines."""

from __future__ import annotations

from typing import Any

import click

from provisioning.cli.common import common_options, pass_settings, why_run_option
from provisioning.cluster.watch import Watcher


@click.command()
@click.argument("machines", nargs=-1, metavar="[MACHINE|GROUP]...")
@click.option("--interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds between rounds of healthchecks.")
@click.option("--grace", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds a machine may stay unhealthy before it is replaced.")
@click.option("--once", is_flag=True, help="One round, then exit (for cron or a test).")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Stop after this many rounds.")
@common_options
@why_run_option
@pass_settings
def watch(settings, machines: tuple[str, ...], interval: float, grace: float, once: bool,
          rounds: int | None) -> int:
    """Watch machines and mend them: re-create one that is missing (or was deleted behind our
    back) and replace one whose healthchecks fail for longer than --grace (destroy, then create
    anew). An edited cluster file is read again each round: a lowered count destroys the
    highest-numbered machines (never with prevent_destroy). Every action is an event. Several
    watchers may share one PostgreSQL state: each machine is mended once. SIGINT or SIGTERM
    stops it between actions.
    """
    import signal
    import threading

    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum, frame) -> None:
        if stop.is_set():  # a second signal: stop now
            raise KeyboardInterrupt
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, on_signal)
    try:
        with settings.session(live=False, select=machines) as session:  # names checked first
            watcher = Watcher(session.runner, session.cluster.select(machines), interval=interval,
                              grace=grace, stop=stop, names=machines)
            watcher.run(rounds=1 if once else rounds)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
