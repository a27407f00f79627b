"""``converge exec MACHINE -- CMD``: run a command on a machine; its exit status is ours."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, pass_settings


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("machine")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--sudo", is_flag=True, help="Run through sudo (for a non-root login).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds before the command is stopped (default 600).")
@common_options
@pass_settings
def exec_(settings, machine: str, command: tuple[str, ...], sudo: bool,
          timeout: float | None) -> int:
    """Run COMMAND on MACHINE and pass its output and exit status through.

    Put '--' before the command: converge exec web-1 -- systemctl status nginx
    """
    import json
    import shlex
    import sys

    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise click.UsageError("no command given; use: converge exec MACHINE -- COMMAND")
    text = command[0] if len(command) == 1 else " ".join(shlex.quote(c) for c in command)
    with settings.session(live=False, read_only=True) as session:
        target = session.runner.connect(machine)
        try:
            if settings.json:
                result = target.execute_always(text, check=False, sudo=sudo, timeout=timeout)
                sys.stdout.write(json.dumps({"event": "exec", "machine": machine,
                                             **result.to_dict()}) + "\n")
            else:
                def stream(name: str, chunk: str) -> None:
                    out = sys.stdout if name == "stdout" else sys.stderr
                    out.write(chunk)
                    out.flush()
                result = target.execute_always(text, check=False, sudo=sudo, timeout=timeout,
                                               stream=stream)
        finally:
            target.disconnect()
    return result.exit_status
