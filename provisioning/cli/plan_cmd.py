"""``converge plan`` and ``converge apply``: what ``up`` would do, saved and then done exactly."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, finish_batch, pass_settings
from provisioning.cluster.plan import PLAN_FORMAT, Plan
from provisioning.errors import ConfigError
from provisioning.inputs.userfiles import check_output_file
from provisioning.keys import write_private_file

MARKS = {"create": "+", "adopt": "+", "start": ">", "converge": "~", "replace": "-/+",
         "destroy": "-", "nothing": " "}


def render_plan(session, plan) -> None:
    """The plan as a short diff per machine and a summary line, or one JSON document."""
    if session.settings.json:

        session.renderer.message("", record=dict(plan.to_dict(), event="plan"))
        return
    lines = []
    for image in plan.images:
        lines.append(f"+ [image {image['name']}] would {image['description']}")
    for machine in plan.machines:
        if machine.action == "nothing" and not machine.deposed and not machine.drift and \
                session.settings.verbosity < 0:
            continue
        head = "nothing to do" if machine.action == "nothing" else machine.action
        if machine.create_before_destroy:
            head = "replace (create before destroy)"
        lines.append(f"{MARKS[machine.action]} [{machine.name}] {head}: {machine.reason}")
        for step in machine.steps:
            lines.append(f"    [{machine.name}] would {step}")
        for label in machine.deposed:
            lines.append(f"    [{machine.name}] would destroy the deposed {label}")
        for found in machine.drift:
            lines.append(f"    [{machine.name}] ! {found} (unchanged by up and apply)")
    lines.append(plan.summary())
    session.renderer.message("\n".join(lines))


def replace_option(fn):
    return click.option("--replace", "replace", metavar="NAME", multiple=True,
                        help="Destroy and re-create this machine (repeatable); in a group "
                             "with create_before_destroy: true, the new one is made first.")(fn)


@click.command()
@click.argument("machines", nargs=-1, metavar="[MACHINE|GROUP]...")
@click.option("--out", "out", metavar="FILE", default=None,
              help="Save the plan as JSON for 'converge apply FILE' (mode 0600).")
@click.option("--refresh/--no-refresh", default=True, show_default=True,
              help="Ask the drivers what each machine really is (off: from the state alone).")
@replace_option
@common_options
@pass_settings
def plan(settings, machines: tuple[str, ...], out: str | None, refresh: bool,
         replace: tuple[str, ...]) -> int:
    """Show what 'up' would do to each machine, changing nothing: create, start, converge
    (each step that would change, and why), replace, destroy (a lower count), or nothing.

    With --out FILE the plan is saved; 'converge apply FILE' then does exactly that, and
    refuses if the cluster file or a machine's state changed in between.
    """
    if out:
        check_output_file(out, what="plan", fmt=PLAN_FORMAT, key="--out")
    with settings.session(why_run=True, live=False) as session:
        result = session.cluster.plan(machines, refresh=refresh, replace=replace)
        if out:
            try:
                write_private_file(out, result.dumps().encode())
            except OSError as exc:  # /proc/x, a read-only place: the user's path, not a bug
                raise ConfigError(f"cannot write the plan: {exc.strerror}; give a path in a "
                                  "directory you can write", file=out, key="--out") from exc
        render_plan(session, result)
        if out and not settings.json:
            session.renderer.message(f"saved to {out}: apply it with 'converge apply {out}'")
    return 0


@click.command()
@click.argument("plan_file", metavar="PLAN.json")
@common_options
@pass_settings
def apply(settings, plan_file: str) -> int:
    """Do exactly what a saved plan says ('converge plan --out PLAN.json'), and nothing else.

    Refused (exit 2) when the cluster file or a planned machine's state changed since the plan
    was made: make a new plan then.
    """
    saved = Plan.load(plan_file)
    with settings.session(why_run=False) as session:
        results = session.cluster.apply(saved, source=plan_file)
        try:
            return finish_batch(session, "apply", results, {"plan": saved.summary()})
        finally:
            for outcome in results.values():
                if outcome.ok and outcome.value is not None:
                    outcome.value.disconnect()
