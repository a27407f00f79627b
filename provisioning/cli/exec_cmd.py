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

    command, sudo, timeout = _leading_options(command, sudo, timeout)
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


def _leading_options(command: tuple[str, ...], sudo: bool, timeout: float | None
                     ) -> tuple[tuple[str, ...], bool, float | None]:
    """``exec MACHINE --sudo --timeout 5 -- CMD``: the options after MACHINE and before ``--``
    are ours, not the start of the command."""
    args = list(command)
    while args and args[0] != "--" and args[0].startswith("--"):
        option = args.pop(0)
        name, _, value = option.partition("=")
        if name == "--sudo" and not value:
            sudo = True
        elif name == "--timeout":
            if not value:
                if not args:
                    raise click.UsageError("--timeout needs a number of seconds")
                value = args.pop(0)
            try:
                timeout = float(value)
            except ValueError:
                raise click.UsageError(f"--timeout: {value!r} is not a number") from None
            if not timeout > 0:
                raise click.UsageError(f"--timeout must be above 0, got {value}")
        else:
            raise click.UsageError(f"unknown option {option!r} before the command; put '--' "
                                   "before a command that starts with '-'")
    if args and args[0] == "--":
        args.pop(0)
    return tuple(args), sudo, timeout
