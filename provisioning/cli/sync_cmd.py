"""``converge sync [MACHINE...]``: push synced folders to machines again."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, finish_batch, pass_settings, why_run_option


@click.command()
@click.argument("machines", nargs=-1, metavar="[MACHINE|GROUP]...")
@common_options
@why_run_option
@pass_settings
def sync(settings, machines: tuple[str, ...]) -> int:
    """Copy changed files of each machine's 'sync' folders to it (all machines by default).

    Folders the driver mounts (mode auto on nspawn: and docker:) are live and need no push;
    folders in mode rsync, or on drivers that cannot mount, are copied file by file.
    """
    with settings.session(select=machines, boots=False) as session:
        return finish_batch(session, "sync", session.runner.sync(session.cluster.select(machines)))
