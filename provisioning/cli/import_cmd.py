"""``converge import NAME RESOURCE_ID``: adopt a resource made outside the state."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, pass_settings, why_run_option


@click.command("import")
@click.argument("name", metavar="MACHINE")
@click.argument("resource_id", metavar="RESOURCE_ID")
@common_options
@why_run_option
@pass_settings
def import_(settings, name: str, resource_id: str) -> int:
    """Adopt an existing resource as MACHINE of the cluster file: a cloud node id, an nspawn
    machine id, an ssh host[:port], a fake server id.

    The driver checks that the resource exists and tags it as this machine's where it tags;
    host keys are pinned as for a machine it made. Refused (exit 2) when MACHINE or the
    resource is in the state already. Run it with --why-run first; then 'converge plan'.
    """
    with settings.session(select=[name], read_only=True, live=False) as look:
        look.cluster.check_import(name, resource_id)  # refused before the state file exists
    with settings.session(select=[name]) as session:
        spec = session.cluster.import_machine(name, resource_id)
        why_run = bool(settings.why_run)
        text = (f"would import {resource_id} as {name}" if why_run else
                f"imported {resource_id} as {name}; 'converge plan {name}' shows what up "
                "would change on it")
        record = {"event": "import", "machine": name, "resource_id": resource_id,
                  "why_run": why_run,
                  "driver_url": spec.reference.get("driver_url") if spec is not None else None}
        session.renderer.message(text, record=record)
    return 0
