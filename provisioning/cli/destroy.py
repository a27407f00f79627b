"""``converge destroy [MACHINE...]``: destroy machines and forget them."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, finish_batch, pass_settings, why_run_option


@click.command()
@click.argument("machines", nargs=-1, metavar="[MACHINE|GROUP]...")
@click.option("--orphans", is_flag=True,
              help="Also destroy saved machines that are no longer in the cluster file.")
@common_options
@why_run_option
@pass_settings
def destroy(settings, machines: tuple[str, ...], orphans: bool) -> int:
    """Destroy machines (all of the cluster's by default) and remove them from the state.

    Destroying a machine that is already gone is not an error.
    """
    with settings.session() as session:
        return finish_batch(session, "destroy", session.cluster.destroy(machines, orphans=orphans))
