"""``converge config show``: the merged configuration and the layer each value came from."""

from __future__ import annotations

import json
import os

import click

from provisioning.cli.common import common_options, pass_settings
from provisioning.cluster.file import load_cluster
from provisioning.config import Config


@click.group()
def config() -> None:
    """Inspect the layered configuration (defaults < ./provisioning.yml < $PROVISIONING_CONFIG
    < PROVISIONING_* environment variables < the cluster file and command line)."""


@config.command()
@common_options
@pass_settings
def show(settings) -> int:
    """Print every setting with its value and where it came from (secrets masked)."""
    if os.path.exists(settings.file):
        merged = load_cluster(settings.file).config()
    else:
        merged = Config.load()
    if settings.state:
        merged = merged.with_data({"state": settings.state}, source="--state")
    if settings.parallel:
        merged = merged.with_data({"parallel": settings.parallel}, source="--parallel")
    rows = merged.explain()
    if settings.json:
        click.echo(json.dumps({"event": "config", "settings": [
            {"key": k, "value": v, "source": s} for k, v, s in rows]}, default=str))
        return 0
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        click.echo(f"{key:<{width}}  {json.dumps(value, default=str)}  ({source})")
    return 0
