"""``converge status``: a table of the cluster's machines as the state and drivers see them."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, pass_settings

COLUMNS = ("NAME", "DRIVER", "STATE", "ADDRESS", "LAST ACTION", "LAST ERROR")
KEYS = ("name", "driver_url", "state", "address", "last_action", "last_error")


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
    with settings.session(live=False, read_only=True) as session:
        if all_clusters:
            rows = session.cluster.all_clusters()
            session.renderer.table(("CLUSTER", "NAME", "GROUP", "DRIVER", "LAST ACTION"),
                                   [dict(r, cluster=r["cluster"] or "(none: not yet claimed)")
                                    for r in rows],
                                   ("cluster", "name", "group", "driver_url", "last_action"),
                                   {"event": "status", "state": session.store.url,
                                    "all_clusters": True, "machines": rows})
            return 0
        rows = session.cluster.status(refresh=refresh)
        shown = []
        for row in rows:
            row = dict(row)
            if row["last_error"]:
                row["last_error"] = row["last_error"].splitlines()[0][:80]
            if not row["in_cluster_file"]:
                row["name"] = f"{row['name']} (not in file)"
            if row.get("deposed"):  # a create-before-destroy replace left the old one
                row["state"] = f"{row['state']} (+{row['deposed']} deposed)"
            holder = row.get("locked_by")
            row["working"] = (f"{holder.get('command') or '?'} (pid {holder.get('pid')} on "
                              f"{holder.get('host')} since {holder.get('since')})"
                              if holder else "-")
            if refresh:
                row["drift"] = "; ".join(row["drift"]) or "none"
            shown.append(row)
        columns: tuple[str, ...] = COLUMNS
        keys: tuple[str, ...] = KEYS
        if any(row.get("locked_by") for row in rows):  # another runner is at work: say who
            columns, keys = COLUMNS + ("WORKING",), KEYS + ("working",)
        if refresh:
            columns, keys = columns + ("DRIFT",), keys + ("drift",)
        session.renderer.table(columns, shown, keys,
                               {"event": "status", "file": session.cluster.file.path,
                                "cluster": session.cluster.name,
                                "state": session.store.url, "machines": rows})
    return 0
