"""``converge output [NAME]`` and ``converge inventory --format ansible|ssh-config|json``."""

from __future__ import annotations

from typing import Any

import click

from provisioning.cli.common import common_options, pass_settings
from provisioning.errors import ConfigError, ProvisioningError
from provisioning.inputs.schema import did_you_mean
from provisioning.inputs.userfiles import directory_problem
from provisioning.machine.access import (
    AccessFiles,
    ansible_inventory,
    inventory_json,
    ssh_access,
    ssh_config,
    write_access,
)

FORMATS = ("ansible", "ssh-config", "json")


@click.command()
@click.argument("name", required=False)
@common_options
@pass_settings
def output(settings, name: str | None) -> int:
    """Print the cluster file's outputs (all, or NAME's value alone), rendered with what the
    state knows now (addresses, facts).

    --output json prints one object."""
    with settings.session(live=False, read_only=True) as session:
        cluster = session.cluster.file
        if name is not None and name not in cluster.outputs:
            raise ConfigError(f"no output {name!r} in this cluster"
                              f"{did_you_mean(name, cluster.outputs)}", file=cluster.path,
                              key=f"outputs.{name}")
        values = session.cluster.outputs()
        if name is not None:
            values = {name: values[name]}
        if settings.json:
            session.renderer.message("", record={"event": "outputs", "outputs": values})
        elif name is not None:
            session.renderer.message(values[name])
        else:
            for key, value in values.items():
                session.renderer.message(f"{key} = {value}")
    return 0


@click.command()
@click.option("--format", "format_", type=click.Choice(FORMATS), default="ssh-config",
              show_default=True, help="ansible (YAML inventory), ssh-config (ssh -F), json.")
@click.option("--dir", "directory", metavar="DIR", default=None,
              help="Where keys and the known_hosts file go (private, 0700; default "
                   ".provisioning/access beside the cluster file).")
@click.argument("machines", nargs=-1, metavar="[MACHINE|GROUP|INSTANCE|REGEX]...")
@common_options
@pass_settings
def inventory(settings, format_: str, directory: str | None, machines: tuple[str, ...]) -> int:
    """Print an inventory that reaches every created machine with its pinned host key.

    Keys and a known_hosts file holding each machine's pinned key are written to DIR; the
    printed ssh config / ansible inventory refers to them and keeps StrictHostKeyChecking on:

        converge inventory --format ssh-config > ssh_config && ssh -F ssh_config web-1
    """
    import json
    import os

    with settings.session(live=False, read_only=True) as session:
        cluster, runner = session.cluster.file, session.runner
        directory = directory or os.path.join(cluster.base_dir, ".provisioning", "access")
        problem = directory_problem(directory)
        if problem:
            raise ConfigError(f"cannot write the inventory's keys in {directory}: {problem}; "
                              "give a directory you can write", key="--dir")
        accesses: list[Any] = []
        groups: dict[str, list[str]] = {}
        for definition in cluster.choose(machines):
            if not runner.provisioner.spec(definition.name).exists:
                click.echo(f"# {definition.name}: not created; skipped", err=True)
                continue
            try:
                machine = runner.connect(definition.name)
                accesses.append(ssh_access(machine))
                machine.disconnect()
            except ProvisioningError as exc:
                click.echo(f"# {definition.name}: {exc}; skipped", err=True)
                continue
            for group in {definition.group, definition.role or definition.group,
                          definition.instance or definition.group}:
                groups.setdefault(group, []).append(definition.name)
        known_hosts = os.path.join(directory, "known_hosts")
        try:
            # nothing to point at: no directory, no empty known_hosts (an old one is emptied)
            files = write_access(accesses, directory) \
                if accesses or os.path.exists(known_hosts) else AccessFiles(directory,
                                                                             known_hosts, {})
        except OSError as exc:  # the user's --dir, not a bug
            raise ConfigError(f"cannot write the inventory's keys: {exc.strerror}; give a "
                              "directory you can write", file=directory, key="--dir") from exc
        if format_ == "ssh-config":
            click.echo(ssh_config(accesses, files), nl=False)
        elif format_ == "ansible":
            import yaml

            click.echo(yaml.safe_dump(ansible_inventory(accesses, files, groups),
                                      sort_keys=False), nl=False)
        else:
            click.echo(json.dumps(inventory_json(accesses, files, groups), indent=2))
    return 0
