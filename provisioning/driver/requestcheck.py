"""What the Python API checks before acting: the same rules the cluster file loader applies.

``Provisioner.allocate/ready/up`` (and their batches) take a driver, a machine name and options
straight from a program; they are checked here before any lock is taken or entry written, so a
typo'd option or a bad name is a ``ConfigError`` listing every problem, as in the CLI.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from provisioning.driver import Driver
from provisioning.errors import ConfigError, ConfigProblem

__all__ = ["NAME_RE", "MAX_NAME", "name_problem", "check_request"]

NAME_RE = re.compile(r"\A[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")
MAX_NAME = 60


def name_problem(name: Any) -> str | None:
    """What is wrong with a machine name, or None."""
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
        return (f"invalid machine name {name!r}: use lower-case letters, digits and '-' (not at "
                f"either end), at most {MAX_NAME} characters")
    return None


def check_request(driver: Any, name: Any, options: Any, *,
                  checked: dict[tuple[int, int], list[ConfigProblem]] | None = None) -> None:
    """Raise ConfigError naming every problem with one (driver, name, options) request.
    ``checked``: the option problems found so far in one batch, by the identity of the driver
    and of the options mapping. The machines of a group share one mapping, so a batch of 400
    checks it once (the batch holds every mapping, so no identity is reused meanwhile)."""
    problems: list[ConfigProblem] = []
    message = name_problem(name)
    if message:
        problems.append(ConfigProblem(message, key="name"))
    if not isinstance(driver, Driver):
        problems.append(ConfigProblem(f"expected a Driver (provisioning.registry.driver_for_url)"
                                      f", got {type(driver).__name__}", key="driver"))
    if not isinstance(options, Mapping):
        problems.append(ConfigProblem(f"machine options must be a mapping, got "
                                      f"{type(options).__name__} {options!r:.60}",
                                      key="machine_options"))
    elif isinstance(driver, Driver):
        bad = [k for k in options if not isinstance(k, str)]
        problems += [ConfigProblem(f"option names must be strings, got {k!r}",
                                   key="machine_options") for k in bad]
        if not bad:
            found = None if checked is None else checked.get((id(driver), id(options)))
            if found is None:
                found = driver.validate_machine_options(options, where="machine_options")
                if checked is not None:
                    checked[(id(driver), id(options))] = found
            problems += found
    if problems:
        raise ConfigError(problems=problems, machine=name if isinstance(name, str) else None)
