"""The ``converge`` command: a tiny dispatcher in front of the click group.

``converge --help`` and ``converge --version`` are answered here without importing click (most
of their start-up); a ``QUICK`` command written plainly (``converge status``, ``converge up``
with global options only) is read by ``provisioning.cli.quick`` and run without click too;
anything else runs the click group (``provisioning.cli.group``), whose commands load lazily
from ``COMMANDS`` (``provisioning.cli.commands``).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from provisioning import __version__
from provisioning.cli.commands import COMMANDS, SUMMARIES
from provisioning.cli.help import group_help
from provisioning.cli.quick import parse_quick
from provisioning.lazy import collector_paused, lazy_exports, load, own_the_process

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it alike)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable

    from provisioning.cli.group import cli

__all__ = ["cli", "main", "leave", "COMMANDS", "SUMMARIES"]

#: the click group, and the runner mapping its outcomes to exit codes: named, not imported, so
#: ``--help`` and ``--version`` never load click
GROUP = "provisioning.cli.group"
#: what a command's start does first (``--help`` and ``--version`` need none of it)
START = "provisioning.cli.start:dataclasses_with_inspect_on_use"
#: what runs a command ``provisioning.cli.quick`` read (without click)
QUICK_RUNNER = "provisioning.cli.settings:run_quick"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``converge``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args in (["--help"], ["-h"], ["--version"]):
        try:
            if args == ["--version"]:
                sys.stdout.write(f"converge, version {__version__}\n")
            else:
                sys.stdout.write(group_help(SUMMARIES))
            sys.stdout.flush()
        except BrokenPipeError:
            return 1
        return 0
    if argv is None:  # the console script: this process runs one command
        own_the_process()
    load(START)()
    quick = parse_quick(args)
    if quick is not None:  # a QUICK command, plainly written: no click
        with collector_paused():
            run_quick: Callable[..., int] = load(QUICK_RUNNER)
        code = run_quick(*quick)
    else:
        with collector_paused():  # importing click and the command group: start-up
            run: Callable[[list[str]], int] = load(f"{GROUP}:run")
        code = run(args)
    return leave(code) if argv is None else code


def leave(code: int) -> int:
    """End the process with ``code`` now that the command is done: flush the output, run the
    ``atexit`` handlers (logging, temporary files, finalizers), then skip the interpreter's
    teardown of every loaded module, which costs about 0.15 s of CPU once psycopg is loaded
    (N runners started together pay it together on the same cores). Returns ``code`` for a
    normal exit instead when another non-daemon thread still runs (the interpreter would wait
    for it) or the output cannot be flushed (a closed pipe: the usual message is printed)."""
    current = threading.current_thread()
    if any(t is not current and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return code
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return code
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


__getattr__, _ = lazy_exports(__name__, {"cli": GROUP}, __all__)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
