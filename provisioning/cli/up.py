"""``converge up [MACHINE...]``: allocate, ready, converge and healthcheck machines."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, finish_batch, pass_settings, why_run_option


@click.command()
@click.argument("machines", nargs=-1, metavar="[MACHINE|GROUP]...")
@common_options
@why_run_option
@pass_settings
def up(settings, machines: tuple[str, ...]) -> int:
    """Create (if needed), ready, converge and healthcheck machines (all by default).

    Running it again changes only what differs. With --why-run it prints the plan: what would
    be created, changed or left alone, and touches nothing.
    """
    with settings.session() as session:
        definitions = session.cluster.select(machines)
        results = session.runner.up(definitions)
        try:
            return finish_batch(session, "up", results)
        finally:
            for outcome in results.values():
                if outcome.ok and outcome.value is not None:
                    outcome.value.disconnect()
