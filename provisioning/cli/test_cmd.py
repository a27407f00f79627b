"""``converge test``: test-kitchen's lifecycle: create, converge, verify, destroy."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, concurrency_option, finish_batch, pass_settings

DESTROY = ("passing", "always", "never")


@click.command()
@click.argument("machines", nargs=-1, metavar="[INSTANCE|MACHINE|GROUP|REGEX]...")
@click.option("--destroy", "destroy", type=click.Choice(DESTROY), default="passing",
              show_default=True,
              help="Which instances to destroy afterwards: those that passed, all, or none "
                   "(keep them to debug).")
@concurrency_option
@common_options
@pass_settings
def test(settings, machines: tuple[str, ...], destroy: str) -> int:
    """Create, converge and verify instances, then destroy them (by default the passing ones).

    Verify runs each machine's 'verify' commands on it, 'pytest: DIR' entries as a pytest
    session against it (fixtures 'cluster' and 'machine' from the provisioning plugin) and
    'testinfra: DIR' entries as pytest-testinfra tests (fixture 'host'). The result is recorded
    per instance ('converge list'). Exit status 1 when any instance failed to come up or verify.
    """
    with settings.session(choose=machines) as session:
        run = session.cluster.kitchen.test(session.cluster.choose(machines), destroy)
        return finish_batch(session, "test", run.results,
                            {"destroy": destroy, "destroyed": run.destroyed, "kept": run.kept})
