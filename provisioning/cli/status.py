"""``converge status``: a table of the cluster's machines as the state and drivers see them."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, pass_settings

COLUMNS = ("NAME", "DRIVER", "STATE", "ADDRESS", "LAST ACTION", "LAST ERROR")
KEYS = ("name", "driver_url", "state", "address", "last_action", "last_error")


@click.command()
@common_options
@pass_settings
def status(settings) -> int:
    """Show each machine: name, driver URL, state, address, last action, last error.

    Machines saved in the state but no longer in the cluster file are listed too.
    """
    with settings.session(live=False, read_only=True) as session:
        rows = session.cluster.status()
        shown = []
        for row in rows:
            row = dict(row)
            if row["last_error"]:
                row["last_error"] = row["last_error"].splitlines()[0][:80]
            if not row["in_cluster_file"]:
                row["name"] = f"{row['name']} (not in file)"
            holder = row.get("locked_by")
            row["working"] = (f"{holder.get('command') or '?'} (pid {holder.get('pid')} on "
                              f"{holder.get('host')} since {holder.get('since')})"
                              if holder else "-")
            shown.append(row)
        columns, keys = COLUMNS, KEYS
        if any(row.get("locked_by") for row in rows):  # another runner is at work: say who
            columns, keys = COLUMNS + ("WORKING",), KEYS + ("working",)
        session.renderer.table(columns, shown, keys,
                               {"event": "status", "file": session.cluster.file.path,
                                "state": session.store.url, "machines": rows})
    return 0
