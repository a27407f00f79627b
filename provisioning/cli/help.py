"""``converge --help`` without click: the global options and the command listing as data, and
the one renderer of the top-level help.

Importing click is most of ``converge --help``'s start-up, so the top-level help is drawn here
from plain data: ``GLOBAL_OPTIONS`` (``provisioning.cli.common`` builds its click options from
the same rows) and ``SUMMARIES`` (the first sentence of each command's help). The click group
renders its own help with this module too, so there is one top-level help, however it is asked
for.
"""

from __future__ import annotations

import os
import sys

__all__ = ["GLOBAL_OPTIONS", "GlobalOption", "OUTPUTS", "group_help", "terminal_width", "USAGE",
           "DESCRIPTION"]

OUTPUTS = ("text", "json")
USAGE = "Usage: converge [OPTIONS] COMMAND [ARGS]..."
DESCRIPTION = ("Create, ready, converge, stop and destroy the machines of a cluster file.\n\n"
               "Exit status: 0 success, 1 a machine failed, 2 bad input.")
#: widest help the group renders (as click's ``max_content_width``)
MAX_WIDTH = 100


class GlobalOption:
    """One global option: its flags, its value's placeholder ('' for a flag or counter), its
    help; accepted before the command name and after it. (A plain class: ``typing`` and a
    named tuple would cost ``converge --help`` more than the rest of this module.)"""

    __slots__ = ("flags", "metavar", "help")

    def __init__(self, flags: tuple[str, ...], metavar: str, help: str) -> None:
        self.flags = flags
        self.metavar = metavar
        self.help = help


GLOBAL_OPTIONS = (
    GlobalOption(("-f", "--file"), "FILE", "Cluster file (default: cluster.yml)."),
    GlobalOption(("--state",), "URL", "State store: a path, sqlite:///PATH, postgresql://... or "
                 "memory: (default: .provisioning/state.db beside the cluster file)."),
    GlobalOption(("--parallel",), "N", "Machines acted on at once (default 10, at most 256)."),
    GlobalOption(("--output",), "[" + "|".join(OUTPUTS) + "]",
                 "text (live on a terminal) or json (one event per line)."),
    GlobalOption(("-v", "--verbose"), "", "Say more (repeat for more)."),
    GlobalOption(("-q", "--quiet"), "", "Say less: only results and errors."),
)
#: options of the group alone (handled before any command runs)
_OWN_OPTIONS = (GlobalOption(("--version",), "", "Show the version and exit."),
                GlobalOption(("-h", "--help"), "", "Show this message and exit."))


def terminal_width() -> int:
    """Columns to render for: $COLUMNS, else the terminal's, else 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, max(width, 10)) or [""]


def _one_line(text: str, limit: int) -> str:
    """``text`` on one line of at most ``limit`` characters, cut at a word with '...'."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 3].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "..."


def _definitions(rows: list[tuple[str, str]], width: int) -> list[str]:
    """Terms and their text in two columns, the text wrapped (at most 30 columns of terms)."""
    column = min(max(len(term) for term, _ in rows), 30) + 2
    lines = []
    for term, text in rows:
        wrapped = _wrap(text, width - column - 2)
        if len(term) <= column - 2:
            lines.append(f"  {term:<{column}}{wrapped[0]}")
        else:
            lines += [f"  {term}", f"  {'':<{column}}{wrapped[0]}"]
        lines += [f"  {'':<{column}}{more}" for more in wrapped[1:]]
    return lines


def group_help(summaries: dict[str, str], width: int | None = None) -> str:
    """The top-level help: usage, what converge does, the options, one line per command."""
    width = max(min(width or terminal_width(), MAX_WIDTH) - 2, 50)
    options = [(", ".join(o.flags) + (f" {o.metavar}" if o.metavar else ""), o.help)
               for o in (_OWN_OPTIONS[0], *GLOBAL_OPTIONS, _OWN_OPTIONS[1])]
    limit = max(45, width - 18)
    commands = [(name, _one_line(summaries[name], limit)) for name in sorted(summaries)]
    lines = [USAGE, ""]
    for paragraph in DESCRIPTION.split("\n\n"):
        lines += ["  " + line for line in _wrap(paragraph, width - 2)] + [""]
    lines += ["Options:", *_definitions(options, width), "", "Commands:",
              *_definitions(commands, width)]
    return "\n".join(lines) + "\n"
