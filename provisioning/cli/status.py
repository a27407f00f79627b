"""``converge status``: a table of the cluster's machines as the state and drivers see them (the
click command: its options and help; the table is ``provisioning.cli.show_status``)."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, pass_settings
from provisioning.cli.show_status import show_status


@click.command()
@click.option("--refresh", is_flag=True,
              help="Report drift per machine: missing, stopped, options changed versus the file.")
@click.option("--all-clusters", "all_clusters", is_flag=True,
              help="List every machine of every cluster in the state store (from the state).")
@common_options
@pass_settings
def status(settings, refresh: bool, all_clusters: bool) -> int:
    """Show each machine of this cluster: name, driver URL, state, address, last action, last
    error.

    This cluster's machines saved in the state but no longer in the cluster file are listed
    too; other clusters' machines sharing the state never are (see --all-clusters).
    """
    return show_status(settings, refresh=refresh, all_clusters=all_clusters)
