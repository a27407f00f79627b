"""The ``converge`` command: a tiny dispatcher in front of the click group.

``converge --help`` and ``converge --version`` are answered here without importing click (most
of their start-up); anything else runs the click group (``provisioning.cli.group``), whose
commands load lazily from ``COMMANDS`` (``provisioning.cli.commands``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from provisioning import __version__
from provisioning.cli.commands import COMMANDS, SUMMARIES

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cli.group import cli

__all__ = ["cli", "main", "COMMANDS", "SUMMARIES"]


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``converge``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args in (["--help"], ["-h"], ["--version"]):
        try:
            if args == ["--version"]:
                sys.stdout.write(f"converge, version {__version__}\n")
            else:
                from provisioning.cli.help import group_help

                sys.stdout.write(group_help(SUMMARIES))
            sys.stdout.flush()
        except BrokenPipeError:
            return 1
        return 0
    from provisioning.cli.common import run_cli
    from provisioning.cli.group import cli

    return run_cli(cli, args)


def __getattr__(name: str) -> Any:
    if name == "cli":  # the click group, imported only when asked for
        from provisioning.cli.group import cli

        return cli
    raise AttributeError(f"module 'provisioning.cli.main' has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
