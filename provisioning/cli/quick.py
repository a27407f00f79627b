"""The commands in ``QUICK`` (``provisioning.cli.commands``: ``status``, and ``up`` with global
options only) run without click.

Importing click (with inspect, uuid and datetime) and building the command group is a good
part of a short command's start-up, so a command line that is plain and valid is read here
and its command run directly (``provisioning.cli.settings.run_quick``). Everything else goes
to the click group exactly as before: help (``-h``, ``--help``), ``--version``, any error
(an unknown option or command, a bad value, a missing one, an extra argument), and any form
this reader does not take (``--``, a value that starts with '-', an empty value, a number
written other than plainly or of three digits or more, shell completion). So click alone words
every message, and the options mean here what they mean there: a value given twice is the last
one, ``-v`` and ``-q`` add up on both sides of the command name.
"""

from __future__ import annotations

import os

from provisioning.cli.commands import QUICK
from provisioning.cli.help import GLOBAL_OPTIONS, OUTPUTS

__all__ = ["parse_quick", "COMPLETE_VAR"]

#: click answers shell completion when this is set: never taken here
COMPLETE_VAR = "_CONVERGE_COMPLETE"

#: flag -> the setting it sets ("file", "state", ...); a row without a metavar counts
_FLAGS = {flag: row.flags[-1][2:] for row in GLOBAL_OPTIONS for flag in row.flags}
_COUNTERS = {row.flags[-1][2:] for row in GLOBAL_OPTIONS if not row.metavar}


def _value(setting: str, text: str | None) -> object:
    """The setting's value from ``text``, or None for anything click should judge."""
    if not text or text.startswith("-"):
        return None
    if setting == "parallel":  # 1 to 99 written plainly; click judges the rest (its bound)
        plain = text.isascii() and text.isdigit() and text[0] != "0" and len(text) <= 2
        return int(text) if plain else None
    if setting == "output":
        return text if text in OUTPUTS else None
    return text


def parse_quick(args: list[str]) -> tuple[str, dict[str, object], dict[str, bool]] | None:
    """For a plain, valid command line of a ``QUICK`` command: (its function as
    ``"module:attribute"``, the global settings given (name -> value; counters summed),
    the command's own flags as keywords). None for anything else: click reads it."""
    if os.environ.get(COMPLETE_VAR):
        return None
    command: tuple[str, dict[str, str]] | None = None
    settings: dict[str, object] = {}
    counts: dict[str, int] = {}
    keywords: dict[str, bool] = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-") or arg in ("-", "--"):
            if command is not None or arg not in QUICK:
                return None  # an argument, '--', or a command click runs
            command = QUICK[arg]
            continue
        if command is not None and arg in command[1]:
            keywords[command[1][arg]] = True
            continue
        if arg.startswith("--"):
            flag, equals, written = arg.partition("=")
            setting = _FLAGS.get(flag, "")
            if not setting or (equals and setting in _COUNTERS):
                return None
            if setting in _COUNTERS:
                counts[setting] = counts.get(setting, 0) + 1
                continue
            value = _value(setting, written if equals else (rest.pop(0) if rest else None))
        else:  # short options: counters run together (-vv, -vq), or -f FILE / -fFILE
            value = None
            setting = ""
            for index, letter in enumerate(arg[1:], start=2):
                setting = _FLAGS.get(f"-{letter}", "")
                if not setting:
                    return None
                if setting not in _COUNTERS:
                    given = arg[index:] or (rest.pop(0) if rest else None)
                    value = _value(setting, given)
                    break
                counts[setting] = counts.get(setting, 0) + 1
            else:
                continue
        if value is None:
            return None
        settings[setting] = value
    if command is None:
        return None
    return command[0], {**settings, **counts}, keywords
