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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import click

from provisioning.cli import settings as settings_base
from provisioning.cli.help import GLOBAL_OPTIONS, OUTPUTS
from provisioning.cli.output import strip_machine
from provisioning.cli.settings import (
    current_settings,
    echo_error,
    error_text,
    exit_code,
    guarded,
    report_error,
    use_settings,
)
from provisioning.cluster.api import Cluster
from provisioning.lazy import collector_paused

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.runner import ClusterRunner
    from provisioning.parallel import BatchResult

__all__ = ["Settings", "common_options", "why_run_option", "concurrency_option", "pass_settings",
           "Session", "finish_batch", "run_cli", "current_settings", "error_text",
           "report_error", "OUTPUTS"]



class Settings(settings_base.Settings):
    """The global options (``provisioning.cli.settings``), and the full session a command that
    may change machines opens."""

    @contextlib.contextmanager
    def session(self, *, why_run: bool | None = None, live: bool = True,
                read_only: bool = False, select: Iterable[str] = (),
                choose: Iterable[str] = (), replace: Iterable[str] = (),
                boots: bool = True, images: Iterable[str] = ()) -> Iterator["Session"]:
        """Load the cluster file, open the state store, start the renderer; close all after.
        ``read_only`` (and why-run): a missing state file is not created. ``select``,
        ``choose``, ``replace``: the names given, checked before the store opens. ``boots``:
        False for commands that create no machine (their images are not checked, a missing
        state file is not created). ``images``: image names given, checked before the store."""
        session = Session(self, why_run=self.why_run if why_run is None else why_run, live=live,
                          read_only=read_only, select=select, choose=choose,
                          replace=replace, boots=boots, images=images)
        try:
            yield session
        finally:
            session.close()


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
        "--file": {"is_eager": True}, "--parallel": {"type": click.IntRange(min=1)},
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
                        type=click.IntRange(min=1), default=None, expose_value=False,
                        callback=_store,
                        help="Instances acted on at once (same as --parallel).")(fn)


def pass_settings(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(_settings(click.get_current_context()), *args, **kwargs)
    return wrapper


class Session:
    """One command's cluster (file, store, runner) and renderer."""

    def __init__(self, settings: Settings, *, why_run: bool, live: bool = True,
                 read_only: bool = False, select: Iterable[str] = (),
                 choose: Iterable[str] = (), replace: Iterable[str] = (),
                 boots: bool = True, images: Iterable[str] = ()) -> None:
        self.settings = settings
        self.renderer = settings.renderer(live=live)
        try:
            with collector_paused():  # the driver's modules and the file: start-up
                self.cluster: Cluster = Cluster.load(settings.file, state=settings.state,
                                                     why_run=why_run, parallel=settings.parallel,
                                                     listeners=[self.renderer.event],
                                                     read_only=read_only, select=select,
                                                     choose=choose, replace=replace,
                                                     boots=boots, images=images)
        except BaseException:
            self.renderer.close()
            raise
        self.store = self.cluster.store
        self.config = self.cluster.config
        self.runner: ClusterRunner = self.cluster.runner

    def close(self) -> None:
        self.renderer.close()
        self.cluster.close()


def finish_batch(session: Session, command: str, results: "BatchResult",
                 extra: dict[str, Any] | None = None) -> int:
    """Print the summary of a batch and return the exit code (1 if any machine failed)."""
    machines = {}
    for name, outcome in results.items():
        machines[name] = {"ok": outcome.ok, "changes": session.runner.actions.get(name, 0),
                          "error": None if outcome.ok else strip_machine(str(outcome.error), name),
                          "error_type": None if outcome.ok else type(outcome.error).__name__}
    failed = [n for n, m in machines.items() if not m["ok"]]
    summary = {"event": "summary", "command": command, "ok": not failed,
               "why_run": session.runner.why_run, "machines": machines}
    if extra:
        summary.update(extra)
    session.renderer.summary(summary)
    if not failed:
        return 0
    codes = {exit_code(results[n].error) for n in failed}
    return 2 if codes == {2} else 1


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
