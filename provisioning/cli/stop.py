"""``converge stop [MACHINE...]``: power machines off, keeping them."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, finish_batch, pass_settings, why_run_option


@click.command()
@click.argument("machines", nargs=-1, metavar="[MACHINE|GROUP]...")
@common_options
@why_run_option
@pass_settings
def stop(settings, machines: tuple[str, ...]) -> int:
    """Stop machines (all by default); 'converge up' starts them again."""
    with settings.session(select=machines, boots=False) as session:
        return finish_batch(session, "stop", session.runner.stop(session.cluster.select(machines)))
