"""``converge schema``: the cluster file's JSON Schema, for editors."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options
from provisioning.cluster.schema import cluster_schema


@click.command()
@common_options
def schema() -> int:
    """Print the JSON Schema of cluster files, for editors (docs/cluster-file.md, "Editor
    support")."""
    import json

    click.echo(json.dumps(cluster_schema(), indent=2))
    return 0
