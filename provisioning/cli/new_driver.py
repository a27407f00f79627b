"""``converge new-driver NAME``: write a pip-installable driver package, provisioning-NAME."""

from __future__ import annotations

import json

import click

from provisioning.cli.common import common_options, pass_settings
from provisioning.scaffold import new_driver as generate

__all__ = ["new_driver"]


@click.command("new-driver")
@click.argument("name")
@click.option("-d", "--directory", default=".", show_default=True, metavar="DIR",
              type=click.Path(file_okay=False),
              help="Where to create provisioning-NAME/.")
@click.option("--module", default=None, metavar="MODULE",
              help="Python package name (default: provisioning_NAME).")
@click.option("--description", default=None, help="One line for the package metadata.")
@common_options
@pass_settings
def new_driver(settings, name: str, directory: str, module: str | None,
               description: str | None) -> int:
    """Write a driver package for scheme NAME: pyproject (entry point), a working example
    driver, conformance tests, README and CI script. Never overwrites a file."""
    made = generate(name, directory, module=module, description=description)
    if settings.json:
        click.echo(json.dumps({"event": "new-driver", "scheme": made.names.scheme,
                               "package": made.names.dist, "module": made.names.module,
                               "class": made.names.class_name, "root": str(made.root),
                               "files": list(made.files)}))
        return 0
    if settings.verbosity >= 0:
        click.echo(f"created {made.root} ({len(made.files)} files): the {made.names.scheme}: "
                   f"driver, class {made.names.module}.driver.{made.names.class_name}")
        for rel in made.files:
            click.echo(f"  {rel}")
        click.echo("next:")
        click.echo(f"  cd {made.root} && pip install -e '.[test]' && pytest")
        click.echo(f"  converge drivers describe {made.names.scheme}:")
    return 0
