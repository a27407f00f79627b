"""Helpers the benchmark scripts share (each script runs alone: ``python3 bench/NAME.py``
finds this module beside it, with no benchmarking tool installed)."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

__all__ = ["timed", "write_section", "results_options", "publish"]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds ``fn()`` took, what it returned)."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def write_section(path: str, heading: str, text: str) -> None:
    """Replace the section ``heading`` of RESULTS.md with ``text`` (or append it), keeping every
    other section; the file is replaced atomically."""
    try:
        with open(path, encoding="utf-8") as handle:
            current = handle.read()
    except FileNotFoundError:
        current = "# Benchmark results\n"
    start = current.find(heading + "\n")
    if start < 0:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + len(heading))
        updated = current[:start] + text + (current[end:] if end >= 0 else "")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(updated)
    os.replace(tmp, path)


def results_options(parser: argparse.ArgumentParser, heading: str) -> None:
    """``--json``, ``--results-md`` and ``--no-write``: where a script's figures go."""
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--results-md", default=os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "RESULTS.md"))
    parser.add_argument("--no-write", action="store_true",
                        help=f"do not rewrite the '{heading}' section of RESULTS.md")


def publish(args: argparse.Namespace, heading: str, text: str, figures: dict[str, Any]) -> None:
    """Print the section, put it into RESULTS.md (unless --no-write), the figures into --json."""
    print(text)
    if not args.no_write:
        write_section(args.results_md, heading, text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=1)
