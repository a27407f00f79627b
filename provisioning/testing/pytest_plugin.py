"""pytest plugin (registered through the ``pytest11`` entry point): test against a cluster.

``pytest --cluster cluster.yml`` brings the cluster's machines up once per session (allocate,
ready, converge, healthcheck, like ``converge up``) and destroys them at the end unless
``--keep``. Fixtures:

- ``cluster``: the session's ``ClusterSession`` (``.runner``, ``.cluster``, ``.machines``).
- ``machine``: a function: ``machine("web-1")`` returns that ready ``Machine``;
  ``machine()`` the machine under verification (``--cluster-machine`` / ``$PROVISIONING_MACHINE``)
  or the only one.

Nothing heavy is imported unless ``--cluster`` is used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import pytest

from provisioning.errors import ConfigError, ProvisioningError

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.machine.base import Machine

__all__ = ["ClusterSession"]

MACHINE_ENV = "PROVISIONING_MACHINE"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("provisioning", "machines from a provisioning cluster file")
    group.addoption("--cluster", metavar="FILE", default=None,
                    help="cluster file whose machines the tests run against (brought up once)")
    group.addoption("--keep", action="store_true", default=False,
                    help="leave the cluster's machines up after the session")
    group.addoption("--cluster-state", metavar="URL", default=None,
                    help="state store for the cluster (default: beside the cluster file)")
    group.addoption("--cluster-machine", metavar="NAME", action="append", default=[],
                    help="bring up only this machine or group (repeatable)")


class ClusterSession:
    """The machines of one cluster file for one pytest session."""

    def __init__(self, path: str, *, state: str | None = None, names: list[str] | None = None,
                 keep: bool = False) -> None:
        from provisioning.cluster import Cluster  # not at the top: see LOCAL_IMPORTS_ALLOWED

        self.keep = keep
        self.names = list(names or [])
        self.handle = Cluster.load(path, state=state)
        self.runner = self.handle.runner
        self.cluster = self.handle.file
        self.events: list[Any] = []
        self.runner.action_handler.subscribe(self.events.append)
        self.definitions = self.cluster.select(self.names)
        self.machines: dict[str, "Machine"] = {}

    def start(self) -> None:
        results = self.runner.up(self.definitions)
        for name, outcome in results.items():
            if outcome.ok and outcome.value is not None:
                self.machines[name] = outcome.value
        if not results.ok:
            failures = "; ".join(f"{n}: {e}" for n, e in results.failures.items())
            raise ProvisioningError(f"cluster {self.cluster.path} did not come up: {failures}")

    def machine(self, name: str | None = None) -> "Machine":
        if name is None:
            name = os.environ.get(MACHINE_ENV) or (
                self.names[0] if len(self.names) == 1 and self.names[0] in self.machines else None)
            if name is None and len(self.machines) == 1:
                name = next(iter(self.machines))
            if name is None:
                raise ConfigError(f"which machine? name one of: {', '.join(self.machines)}",
                                  file=self.cluster.path)
        if name not in self.machines:
            # not brought up by this session (--cluster-machine): connect to it if it exists
            self.cluster.select([name])  # a ConfigError with a did-you-mean when unknown
            self.machines[name] = self.runner.connect(name)
        return self.machines[name]

    def finish(self) -> None:
        for machine in self.machines.values():
            machine.disconnect()
        try:
            if not self.keep:
                results = self.runner.destroy(self.definitions)
                results.raise_first()
        finally:
            self.runner.close()


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest):
    """The machines of ``--cluster FILE``, up for the whole session."""
    path = request.config.getoption("--cluster")
    if not path:
        pytest.skip("this test needs a cluster: run pytest with --cluster FILE")
    session = ClusterSession(path, state=request.config.getoption("--cluster-state"),
                             names=request.config.getoption("--cluster-machine"),
                             keep=request.config.getoption("--keep"))
    try:
        session.start()
        yield session
    finally:
        session.finish()


@pytest.fixture
def machine(cluster: ClusterSession) -> Callable[..., "Machine"]:
    """``machine(name)``: a ready machine of the cluster; ``machine()``: the one under test."""
    return cluster.machine
