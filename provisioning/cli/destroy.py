"""``converge destroy [MACHINE...]``: destroy machines and forget them."""

from __future__ import annotations

import click

from provisioning.cli.common import (
    common_options,
    concurrency_option,
    finish_batch,
    pass_settings,
    why_run_option,
)


@click.command()
@click.argument("machines", nargs=-1, metavar="[MACHINE|GROUP|INSTANCE|REGEX]...")
@click.option("--orphans", is_flag=True,
              help="Also destroy saved machines that are no longer in the cluster file.")
@concurrency_option
@common_options
@why_run_option
@pass_settings
def destroy(settings, machines: tuple[str, ...], orphans: bool) -> int:
    """Destroy machines (all of the cluster's by default) and remove them from the state.

    Destroying a machine that is already gone is not an error.
    """
    with settings.session(choose=machines, boots=False) as session:
        cluster = session.cluster
        results = cluster.kitchen.destroy(cluster.choose(machines))
        orphaned = [n for n in session.runner.orphans() if n not in results] if orphans else []
        if orphaned:
            results.update(session.runner.destroy_names(orphaned))
        return finish_batch(session, "destroy", results)
