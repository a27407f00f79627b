"""``converge up [MACHINE...]``: plan, then apply: create, ready, converge, healthcheck, and
destroy what a lower ``count`` leaves out (the click command: its options, help and the plan
--why-run prints; bringing the machines up is ``provisioning.cli.bring_up``)."""

from __future__ import annotations

import click

from provisioning.cli.bring_up import bring_up
from provisioning.cli.common import common_options, pass_settings, why_run_option
from provisioning.cli.plan_cmd import render_plan, replace_option


@click.command()
@click.argument("machines", nargs=-1, metavar="[MACHINE|GROUP]...")
@replace_option
@common_options
@why_run_option
@pass_settings
def up(settings, machines: tuple[str, ...], replace: tuple[str, ...]) -> int:
    """Create (if needed), ready, converge and healthcheck machines (all by default), and
    destroy the machines a lowered count leaves out.

    Running it again changes only what differs. With --why-run it prints the plan (the same
    as 'converge plan') and touches nothing.
    """
    if settings.why_run:
        with settings.session(live=False) as session:
            render_plan(session, session.cluster.plan(machines, replace=replace))
        return 0
    return bring_up(settings, machines, replace)
