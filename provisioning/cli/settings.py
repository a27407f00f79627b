"""The global options of ``converge`` and how a command's outcome becomes an exit code (0 ok, 1 a
machine failed, 2 bad input; never a traceback), without click.

``provisioning.cli.common`` builds the click options and the full session (``Cluster``) on
these; ``provisioning.cli.quick`` runs the ``QUICK`` commands with them alone, so
``converge status`` loads neither click nor the cluster's plan and apply, and a plain
``converge up`` (``provisioning.cli.bring_up``, with ``provisioning.cli.session``) no click.
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator

from provisioning.cli.output import make_renderer
from provisioning.cluster.view import ClusterView
from provisioning.errors import ConfigError, ProvisioningError
from provisioning.lazy import collector_paused, load

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cli.output import Renderer
    from provisioning.config import Config
    from provisioning.store.base import ManagedEntryStore

__all__ = ["Settings", "ViewSession", "current_settings", "use_settings", "error_text",
           "report_error", "echo_error", "exit_code", "guarded", "run_quick"]


class Settings:
    """The global options, wherever on the command line they were given. (A plain class: the
    dataclasses module would cost every command's start-up more than it saves here.)"""

    def __init__(self) -> None:
        self.file: str = "cluster.yml"
        self.state: str | None = None
        self.parallel: int | None = None
        self.output: str = "text"
        self.verbose: int = 0
        self.quiet: int = 0
        self.why_run: bool = False

    @property
    def verbosity(self) -> int:
        return self.verbose - self.quiet

    @property
    def json(self) -> bool:
        return self.output == "json"

    def renderer(self, *, live: bool = True) -> "Renderer":
        return make_renderer(self.output, self.verbosity, live=live)

    @contextlib.contextmanager
    def view(self) -> Iterator["ViewSession"]:
        """The cluster file and its state store, read-only (a missing state file is not
        created), with a renderer (never live); closed after."""
        session = ViewSession(self)
        try:
            yield session
        finally:
            session.close()


class ViewSession:
    """A read-only command's cluster (``ClusterView``: file, store, drivers' states) and
    renderer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.renderer = settings.renderer(live=False)
        try:
            with collector_paused():  # the driver's modules and the file: start-up
                self.cluster = ClusterView.load(settings.file, state=settings.state,
                                                parallel=settings.parallel)
        except BaseException:
            self.renderer.close()
            raise
        self.store: ManagedEntryStore = self.cluster.store
        self.config: Config = self.cluster.config

    def close(self) -> None:
        self.renderer.close()
        self.cluster.close()


_current: Settings | None = None


def current_settings() -> Settings:
    """The settings of the command being run (for the error handler)."""
    return _current or Settings()


def use_settings(settings: Settings) -> Settings:
    """Make ``settings`` the command's own (what ``current_settings`` returns)."""
    global _current
    _current = settings
    return settings


# -- errors and exit codes -------------------------------------------------------------------
MAX_PROBLEMS_SHOWN = 20
#: an ANSI escape sequence (as click strips them from text written to a file or pipe)
_ANSI = re.compile(r"\033\[[0-?]*[ -/]*[@-~]")


def exit_code(error: BaseException | None) -> int:
    """``ProvisioningError.exit_code`` (2 for the user's input); 1 for any other failure."""
    return error.exit_code if isinstance(error, ProvisioningError) else 1


def error_text(exc: BaseException) -> str:
    """A one-screen message for an error."""
    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        shown = exc.problems[:MAX_PROBLEMS_SHOWN]
        lines = [f"error: {len(exc.problems)} problems:"] + [f"  {p}" for p in shown]
        if len(exc.problems) > len(shown):
            lines.append(f"  ... and {len(exc.problems) - len(shown)} more")
        return "\n".join(lines)
    return f"error: {exc}"


def echo_error(text: str) -> None:
    """``text`` and a newline on stderr as ``click.echo(text, err=True)`` writes it: escape
    sequences stripped unless stderr is a terminal, '?' for what an ASCII stream cannot
    encode."""
    stream = sys.stderr
    if stream is None:
        return
    text += "\n"
    if not stream.isatty():
        text = _ANSI.sub("", text)
    encoding = (getattr(stream, "encoding", None) or "ascii").lower().replace("_", "-")
    if encoding in ("ascii", "us-ascii", "646", "ansi-x3.4-1968"):
        text = text.encode("ascii", "replace").decode("ascii")
    stream.write(text)
    stream.flush()


def report_error(exc: BaseException, code: int) -> None:
    settings = current_settings()
    if settings.json:
        import json

        record: dict[str, Any] = {"event": "error", "type": type(exc).__name__,
                                  "message": str(exc), "exit_code": code}
        if isinstance(exc, ConfigError):
            record["problems"] = [p.to_dict() for p in exc.problems]
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
    echo_error(error_text(exc))


def guarded(run: Callable[[], int]) -> int:
    """``run()``'s exit code, every failure it raises reported in one line and mapped to one:
    the input's (2) or a machine's (1), 130 interrupted, 1 a closed pipe or a bug (-vv shows
    its traceback)."""
    try:
        return run()
    except ProvisioningError as exc:
        report_error(exc, exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        echo_error("interrupted")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: say so in one line; -vv shows the traceback
        if current_settings().verbosity >= 2:
            import traceback

            traceback.print_exc()
        report_error(RuntimeError(f"internal error: {type(exc).__name__}: {exc} (this is a bug; "
                                  "run with -vv for the traceback and report it)"), 1)
        return 1


def run_quick(target: str, given: dict[str, object], keywords: dict[str, bool]) -> int:
    """Run a command read by ``provisioning.cli.quick``: ``target`` names the
    function its click command calls, ``given`` the global settings on its command line. Its
    outcome is reported as the click group reports it (an interrupt as click's main does: a
    blank line, then 'aborted')."""
    settings = use_settings(Settings())
    for name, value in given.items():
        setattr(settings, name, value)

    def run() -> int:
        try:
            with collector_paused():  # the command's modules: start-up
                command = load(target)
            result = command(settings, **keywords)
        except (EOFError, KeyboardInterrupt):
            echo_error("")
            echo_error("aborted")
            return 130
        return result if isinstance(result, int) else 0

    return guarded(run)
