"""What every ``converge`` command shares: global options, loading the cluster and store, output,
and turning errors into exit codes (0 ok, 1 a machine failed, 2 bad input; never a traceback).

Imported only once a command runs (``converge --help`` and ``--version`` are answered by
``provisioning.cli.main`` without it); drivers load by scheme and rich only for a live display.

Command modules use it like this::

    @click.command()
    @common_options
    @pass_settings
    def up(settings, ...):
        with settings.session() as session: ...
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterable

import click

from provisioning.cli import settings as settings_base
from provisioning.cli.help import GLOBAL_OPTIONS, OUTPUTS
from provisioning.cli.session import Session, finish_batch, open_session
from provisioning.cli.settings import (
    current_settings,
    echo_error,
    error_text,
    guarded,
    report_error,
    use_settings,
)
from provisioning.config import MAX_PARALLEL

__all__ = ["Settings", "common_options", "why_run_option", "concurrency_option", "pass_settings",
           "Session", "finish_batch", "run_cli", "current_settings", "error_text",
           "report_error", "OUTPUTS"]



class Settings(settings_base.Settings):
    """The global options (``provisioning.cli.settings``), and the full session a command that
    may change machines opens."""

    def session(self, *, why_run: bool | None = None, live: bool = True,
                read_only: bool = False, select: Iterable[str] = (),
                choose: Iterable[str] = (), replace: Iterable[str] = (),
                boots: bool = True,
                images: Iterable[str] = ()) -> "contextlib.AbstractContextManager[Session]":
        """The command's full session (``provisioning.cli.session.open_session``: the cluster
        file loaded, its store open, the renderer started; all closed after)."""
        return open_session(self, why_run=why_run, live=live, read_only=read_only,
                            select=select, choose=choose, replace=replace, boots=boots,
                            images=images)


def _settings(ctx: click.Context) -> Settings:
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings()
    use_settings(root.obj)
    return root.obj


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    settings = _settings(ctx)
    if value is None or value is False or (value == 0 and param.name in ("verbose", "quiet")):
        return value  # not given here (maybe given on the other side of the command name)
    if param.name in ("verbose", "quiet"):
        setattr(settings, param.name, getattr(settings, param.name) + value)
    else:
        setattr(settings, param.name, value)
    return value


def common_options(fn: Callable) -> Callable:
    """The global options; accepted before the command name and after it."""
    kinds: dict[str, dict[str, Any]] = {  # what click needs beyond the help's rows
        "--file": {"is_eager": True}, "--parallel": {"type": click.IntRange(1, MAX_PARALLEL)},
        "--output": {"type": click.Choice(OUTPUTS)},
        "--verbose": {"count": True}, "--quiet": {"count": True}}
    options = []
    for row in GLOBAL_OPTIONS:
        extra = kinds.get(row.flags[-1], {})
        metavar: dict[str, Any] = {"metavar": row.metavar} if row.metavar else {}
        options.append(click.option(*row.flags, default=None, expose_value=False,
                                    callback=_store, help=row.help, **metavar, **extra))
    for option in reversed(options):
        fn = option(fn)
    return fn


def why_run_option(fn: Callable) -> Callable:
    return click.option("--why-run", "why_run", is_flag=True, default=None, expose_value=False,
                        callback=_store,
                        help="Plan: report what would be created, changed or left alone, and "
                             "change nothing.")(fn)


def concurrency_option(fn: Callable) -> Callable:
    """test-kitchen's ``-c N``: the same setting as ``--parallel``."""
    return click.option("-c", "--concurrency", "parallel", metavar="N",
                        type=click.IntRange(1, MAX_PARALLEL), default=None, expose_value=False,
                        callback=_store,
                        help="Instances acted on at once (same as --parallel).")(fn)


def pass_settings(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(_settings(click.get_current_context()), *args, **kwargs)
    return wrapper


def run_cli(group: click.Group, argv: list[str] | None = None) -> int:
    """Run the click group and map every outcome to an exit code."""
    def run() -> int:
        try:
            result = group.main(args=argv, prog_name="converge", standalone_mode=False)
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.exceptions.Abort:
            echo_error("aborted")
            return 130
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code
        return result if isinstance(result, int) else 0

    return guarded(run)
