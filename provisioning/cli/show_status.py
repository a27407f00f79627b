"""The table ``converge status`` prints: each machine of the cluster as the state and its
driver see it (``ClusterView``), or every machine of every cluster in the store.

Without click: ``provisioning.cli.status`` is the command's click face (help, errors) and
``provisioning.cli.quick`` runs it straight from a plain command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cli.settings import Settings

__all__ = ["show_status", "COLUMNS", "KEYS"]

COLUMNS = ("NAME", "DRIVER", "STATE", "ADDRESS", "LAST ACTION", "LAST ERROR")
KEYS = ("name", "driver_url", "state", "address", "last_action", "last_error")


def show_status(settings: "Settings", *, refresh: bool = False, all_clusters: bool = False) -> int:
    """Print the status table (or, with ``all_clusters``, the store's inventory); exit code 0."""
    with settings.view() as session:
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
