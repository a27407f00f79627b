"""``converge test``: test-kitchen's lifecycle: create, converge, verify, destroy."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, finish_batch, pass_settings

DESTROY = ("passing", "always", "never")


@click.command()
@click.argument("machines", nargs=-1, metavar="[MACHINE|GROUP]...")
@click.option("--destroy", "destroy", type=click.Choice(DESTROY), default="passing",
              show_default=True,
              help="Which machines to destroy afterwards: those that passed, all, or none "
                   "(keep them to debug).")
@common_options
@pass_settings
def test(settings, machines: tuple[str, ...], destroy: str) -> int:
    """Create, converge and verify machines, then destroy them (by default the passing ones).

    Verify runs each machine's 'verify' commands on it, and 'pytest: DIR' entries as a pytest
    session against it (fixtures 'cluster' and 'machine' from the provisioning plugin).
    Exit status 1 when any machine failed to come up or to verify.
    """
    from provisioning.parallel import BatchResult, Outcome

    with settings.session() as session:
        runner = session.runner
        runner.provisioner.split_run = None  # verify and destroy what this run brought up
        definitions = session.cluster.select(machines)
        by_name = {d.name: d for d in definitions}
        created = runner.up(definitions)
        ready = [(n, o.value) for n, o in created.items() if o.ok and o.value is not None]
        verified = runner.provisioner.parallelizer.run(
            (name, (lambda n=name, m=machine: runner.verify(by_name[n], m))) for name, machine in ready)
        results = BatchResult()
        for name, outcome in created.items():
            result = Outcome(name)
            result.error = outcome.error or (verified[name].error if name in verified else None)
            results[name] = result
        for name, outcome in verified.items():
            handler = runner.action_handler.for_machine(name)
            if outcome.ok:
                handler.report_result("verify passed")
            else:
                handler.report_error(outcome.error)
        for _, machine in ready:
            machine.disconnect()
        doomed = [n for n, o in results.items()
                  if destroy == "always" or destroy == "passing" and o.ok]
        kept = [n for n in results if n not in doomed]
        if doomed:
            destroyed = runner.destroy_names(doomed)
            for name, outcome in destroyed.items():
                if not outcome.ok and results[name].ok:
                    results[name].error = outcome.error
        for name in kept:
            runner.action_handler.for_machine(name).report_progress(
                f"kept (--destroy {destroy}); 'converge destroy {name}' removes it")
        return finish_batch(session, "test", results,
                            {"destroy": destroy, "destroyed": doomed, "kept": kept})
