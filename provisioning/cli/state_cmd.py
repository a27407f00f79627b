"""``converge state``: move state between stores and see who is working on what.

``export`` writes every entry as JSON (secrets left out), ``import`` reads it into another
store (say, from the SQLite file to PostgreSQL), ``show`` lists the store, its live locks with
their holders, and the runs many runners are sharing.
"""

from __future__ import annotations

import json

import click

from provisioning.cli.common import common_options, pass_settings, why_run_option
from provisioning.cli.output import format_table
from provisioning.cluster.file import load_cluster
from provisioning.cluster.state_ops import check_move, forget_machines, move_machine
from provisioning.cluster.topology import FACTS_KIND
from provisioning.config import Config
from provisioning.inputs.userfiles import check_output_file
from provisioning.store import open_store
from provisioning.store.statefile import FORMAT, check_export, dump, export_state, import_state, load


def _open_store(settings, *, create: bool = True):
    """The state store of --state, else of the cluster file (when there is one), else the
    default beside the current directory. ``create=False`` (export, show): a state file that
    does not exist is not made, an empty store stands in."""
    import os

    if os.path.exists(settings.file):
        cluster = load_cluster(settings.file)
        return open_store(cluster.state_url(settings.state, cluster.config()),
                          base_dir=cluster.base_dir, create=create)
    if settings.state:
        return open_store(settings.state, create=create)
    config = Config.load()
    return open_store(config.state, base_dir=config.base_dir, create=create)


def _emit(settings, text: str | None, record: dict) -> None:
    """The command's JSON record, or its human line (None: the action handler has already
    printed one per machine)."""
    if settings.json:
        click.echo(json.dumps(record, default=str))
    elif text is not None:
        click.echo(text, err=True)


@click.group()
@common_options
def state() -> None:
    """Export, import and inspect the state store (--state URL, or the cluster's)."""


@state.command("export")
@click.option("-o", "--to", "target", metavar="FILE", default="-", show_default=True,
              help="Where to write the JSON ('-': standard output). Written mode 0600.")
@common_options
@pass_settings
def export(settings, target: str) -> int:
    """Write every entry of the state as JSON; secrets are left out."""
    if target != "-":
        check_output_file(target, what="state export", fmt=FORMAT, key="--to")
    store = _open_store(settings, create=False)
    try:
        document = export_state(store, derived=(FACTS_KIND,))
    finally:
        store.close()
    dump(document, target)
    _emit(settings, f"exported {len(document['entries'])} entries from {document['source']}"
                    + (f" ({document['secrets_removed']} secret values left out)"
                       if document["secrets_removed"] else ""),
          {"event": "state-export", "source": document["source"],
           "entries": len(document["entries"]), "secrets_removed": document["secrets_removed"],
           "file": None if target == "-" else target})
    return 0


@state.command("import")
@click.argument("source", metavar="FILE")
@click.option("--replace", is_flag=True,
              help="Overwrite entries that exist in the target with other contents.")
@common_options
@pass_settings
def import_(settings, source: str, replace: bool) -> int:
    """Read a JSON export (FILE, or '-' for standard input) into the state store."""
    document = load(source)
    check_export(document, source)  # a file that is not an export creates no state file
    store = _open_store(settings)
    try:
        report = import_state(store, document, replace=replace)
    finally:
        store.close()
    text = (f"imported into {report['target']}: {report['created']} new, {report['replaced']} "
            f"replaced, {report['unchanged']} unchanged")
    if report["warning"]:
        text += f"\nwarning: {report['warning']}"
    _emit(settings, text, dict(report, event="state-import"))
    return 0


@state.command("show")
@common_options
@pass_settings
def show(settings) -> int:
    """The store (password masked), who holds which machine's lock, and shared runs."""
    store = _open_store(settings, create=False)
    try:
        locks = store.locks()
        runs = store.runs()
        entries = len(store.list("machine"))
        record = {"event": "state", "url": store.url, "entries": entries, "locks": locks,
                  "runs": runs}
        if (version := store.schema_version()) is not None:
            record["schema_version"] = version
    finally:
        store.close()
    if settings.json:
        click.echo(json.dumps(record, default=str))
        return 0
    click.echo(f"state: {record['url']} ({entries} machines"
               + (f", schema {record['schema_version']}" if "schema_version" in record else "")
               + ")")
    if locks:
        click.echo("\nworking now (locks):")
        click.echo(format_table(("MACHINE", "HOST", "PID", "SINCE", "COMMAND"),
                                [(n, h.get("host"), h.get("pid"), h.get("since"), h.get("command"))
                                 for n, h in locks.items()]))
    else:
        click.echo("\nno machine is locked: nobody is working on this state")
    for run in runs:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(run["counts"].items()))
        click.echo(f"\nrun {run['run']} #{run['generation']} ({run['operation']}): {counts}")
        if run["claimed"]:
            click.echo(format_table(("MACHINE", "CLAIMED BY"),
                                    [(n, f"{h.get('host')} pid {h.get('pid')}")
                                     for n, h in run["claimed"].items()]))
    return 0


@state.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="MACHINE...")
@common_options
@why_run_option
@pass_settings
def rm(settings, names: tuple[str, ...]) -> int:
    """Forget machines of this cluster: their entries go, their resources stay as they are.

    Run it with --why-run first. Another cluster's machines cannot be forgotten from here.
    """
    with settings.session(boots=False) as session:
        done = forget_machines(session.runner, list(names))
        _emit(settings, None, {"event": "state-rm", "why_run": bool(settings.why_run), "done": done})
    return 0


@state.command("mv")
@click.argument("name", metavar="MACHINE")
@click.argument("new_name", metavar="[NEW_NAME]", required=False)
@click.option("--to-cluster", "to_cluster", metavar="CLUSTER", default=None,
              help="Hand the machine to this cluster (for a machine not yet claimed, or moved "
                   "between cluster files).")
@common_options
@why_run_option
@pass_settings
def mv(settings, name: str, new_name: str | None, to_cluster: str | None) -> int:
    """Rename a machine's entry, or hand it to another cluster; the machine is not touched.

    Run it with --why-run first.
    """
    check_move(new_name, to_cluster)  # a bad name creates no state file
    with settings.session(boots=False) as session:
        done = move_machine(session.runner, name, new_name, to_cluster=to_cluster)
        _emit(settings, None, {"event": "state-mv", "why_run": bool(settings.why_run), "done": done})
    return 0
