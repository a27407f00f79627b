"""The full session of a command that may change machines (``Cluster``: file, store, runner,
with a renderer), and the summary and exit code of a batch, without click.

``provisioning.cli.common`` opens it for the click commands (``Settings.session``);
``provisioning.cli.quick`` runs a plain ``converge up`` through ``provisioning.cli.bring_up``
with it alone, so a runner reaches its first machine without importing click.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from provisioning.cli.output import strip_machine
from provisioning.cli.settings import exit_code
from provisioning.cluster.api import Cluster
from provisioning.lazy import collector_paused

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cli.settings import Settings
    from provisioning.cluster.runner import ClusterRunner
    from provisioning.parallel import BatchResult

__all__ = ["Session", "open_session", "finish_batch"]


class Session:
    """One command's cluster (file, store, runner) and renderer."""

    def __init__(self, settings: "Settings", *, why_run: bool, live: bool = True,
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


@contextlib.contextmanager
def open_session(settings: "Settings", *, why_run: bool | None = None, live: bool = True,
                 read_only: bool = False, select: Iterable[str] = (),
                 choose: Iterable[str] = (), replace: Iterable[str] = (),
                 boots: bool = True, images: Iterable[str] = ()) -> Iterator[Session]:
    """Load the cluster file, open the state store, start the renderer; close all after.
    ``why_run``: the settings' own when None. ``read_only`` (and why-run): a missing state
    file is not created. ``select``, ``choose``, ``replace``: the names given, checked before
    the store opens. ``boots``: False for commands that create no machine (their images are
    not checked, a missing state file is not created). ``images``: image names given, checked
    before the store."""
    session = Session(settings, why_run=settings.why_run if why_run is None else why_run,
                      live=live, read_only=read_only, select=select, choose=choose,
                      replace=replace, boots=boots, images=images)
    try:
        yield session
    finally:
        session.close()


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
