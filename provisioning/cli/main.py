"""The ``converge`` command: a click group whose commands load lazily.

Each command lives in its own module and is listed once in ``COMMANDS`` as
``"name": "module:attribute"``; nothing is imported until the command is run (``--help``
imports only the small command modules, never rich, yaml, jinja2 or paramiko). To add a
command, add one line here and keep the module's top-level imports to click and
``provisioning.cli.common``.
"""

from __future__ import annotations

import importlib
import sys

import click

from provisioning import __version__
from provisioning.cli.common import common_options, run_cli

__all__ = ["cli", "main", "COMMANDS"]

COMMANDS: dict[str, str] = {
    "up": "provisioning.cli.up:up",
    "plan": "provisioning.cli.plan_cmd:plan",
    "apply": "provisioning.cli.plan_cmd:apply",
    "stop": "provisioning.cli.stop:stop",
    "destroy": "provisioning.cli.destroy:destroy",
    "status": "provisioning.cli.status:status",
    "exec": "provisioning.cli.exec_cmd:exec_",
    "ssh": "provisioning.cli.ssh_cmd:ssh",
    "test": "provisioning.cli.test_cmd:test",
    "drivers": "provisioning.cli.drivers:drivers",
    "init": "provisioning.cli.init_cmd:init",
    "new-driver": "provisioning.cli.new_driver:new_driver",
    "watch": "provisioning.cli.watch:watch",
    "state": "provisioning.cli.state_cmd:state",
    "config": "provisioning.cli.config_cmd:config",
    "snapshot": "provisioning.cli.snapshot_cmd:snapshot",
    "sync": "provisioning.cli.sync_cmd:sync",
}


class LazyGroup(click.Group):
    """Resolves ``COMMANDS`` entries on first use; a module that is not there yet (another
    engineer's command still being written) is left out of the listing instead of failing."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = self.lazy.get(name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        command = getattr(module, attr)
        self.commands[name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.get_short_help_str(limit=max(45, formatter.width - 18))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from provisioning.schema import closest

            close = closest(name, self.list_commands(ctx))
            hint = f" Did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint} See 'converge --help'.")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="converge")
@common_options
def cli() -> None:
    """Create, ready, converge, stop and destroy the machines of a cluster file.

    Exit status: 0 success, 1 a machine failed, 2 bad input.
    """


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``converge``)."""
    return run_cli(cli, argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
