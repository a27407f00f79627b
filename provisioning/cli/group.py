"""The click group behind ``converge``: commands resolved from ``COMMANDS`` on first use,
the top-level help rendered by ``provisioning.cli.help`` (the one renderer of it)."""

from __future__ import annotations

import click

from provisioning import __version__
from provisioning.cli.commands import COMMANDS, SUMMARIES
from provisioning.cli.common import common_options, run_cli
from provisioning.cli.help import DESCRIPTION, group_help
from provisioning.inputs.schema import closest
from provisioning.lazy import load

__all__ = ["cli", "LazyGroup", "run"]


class LazyGroup(click.Group):
    """Resolves ``COMMANDS`` entries on first use: a command's module is imported when it
    runs, and one whose module is missing is unknown instead of breaking every other command."""

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
        try:
            command = load(target)
        except ModuleNotFoundError as exc:
            if exc.name == target.partition(":")[0]:
                return None
            raise
        self.commands[name] = command
        return command

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The top-level help from ``provisioning.cli.help``: the same text ``converge --help``
        prints without importing click, listing the commands without importing them."""
        formatter.write(group_help(SUMMARIES))

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = closest(name, self.list_commands(ctx))
            hint = f" Did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint} See 'converge --help'.")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="converge")
@common_options
def cli() -> None:
    pass


cli.help = DESCRIPTION


def run(argv: list[str]) -> int:
    """Run ``converge`` with ``argv`` (the console script, once it is past ``--help``)."""
    return run_cli(cli, argv)
