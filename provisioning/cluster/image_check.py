"""The image each new machine boots from, checked before a run writes anything.

A driver learns that an ``image`` machine option names nothing only when it creates the
machine, after the state file was written. ``check_images`` asks each driver that can tell
(``Driver.image_problem``) about every image the file's machines boot from first: an image of
the file's own ``images:`` stands for the base it is built from (followed down its layers),
since it is built in the same run. A machine already in the state is not asked about: it boots
no more, and an image deleted since it was made must not block its other commands. Every
driver of the file is built for it, so a URL or driver options its driver refuses (a ``fake:``
directory that cannot be made) are refused before the state file is written, too, and so are
options a driver's own ``validate_machine_options`` refuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from provisioning.driver import Driver
from provisioning.errors import ConfigError, ConfigProblem
from provisioning.registry import driver_for_url

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.model import ClusterFile
    from provisioning.config import Config

__all__ = ["check_images"]


def _base(cluster: "ClusterFile", image: str) -> tuple[str, str]:
    """The driver's own image under ``image`` and the file key that names it."""
    key, seen = "", set()
    while image in cluster.images and image not in seen:
        seen.add(image)
        key = f"{cluster.images[image].key_path}.from"
        image = cluster.images[image].base
    return image, key


def check_images(cluster: "ClusterFile", config: "Config",
                 saved: Callable[[list[str]], set[str]]) -> None:
    """Raise one ConfigError naming every machine whose image its driver cannot boot.
    ``saved(names)``: which of those machines the state holds already (called only when a
    problem was found, so a good file opens no store here)."""
    drivers = {url: driver_for_url(url, config)  # built: its URL and options checked
               for url in dict.fromkeys([*(d.driver_url for d in cluster.machines.values()),
                                         *(i.driver_url for i in cluster.images.values())])}
    _check_options_drivers_refuse(cluster, drivers)
    found: dict[str, ConfigProblem] = {}
    for definition in cluster.machines.values():
        image = definition.machine_options.get("image")
        driver = drivers[definition.driver_url]
        if not isinstance(image, str) or type(driver).image_problem is Driver.image_problem:
            continue
        base, key = _base(cluster, image)
        message = driver.image_problem(base)
        if message:
            key = key or ("machine_options.image" if cluster.machine_options.get("image") == image
                          else f"{definition.key}.machine_options.image")
            found[definition.name] = ConfigProblem(message, file=cluster.path, key=key)
    if found:
        for name in saved(list(found)):
            found.pop(name)
    if found:
        unique = {(p.key, p.message): p for p in found.values()}
        raise ConfigError(problems=list(unique.values()))


def _check_options_drivers_refuse(cluster: "ClusterFile", drivers: dict[str, Driver]) -> None:
    """A driver overriding ``validate_machine_options`` (docs/driver-guide.md: what the loader
    uses for each machine) is asked about each machine here, before the state file is written;
    the loader checked the declared fields from the class alone."""
    found: dict[tuple[str | None, str], ConfigProblem] = {}
    for definition in cluster.machines.values():
        driver = drivers[definition.driver_url]
        if type(driver).validate_machine_options is Driver.validate_machine_options:
            continue
        for problem in driver.validate_machine_options(
                definition.machine_options, where=f"{definition.key}.machine_options",
                file=cluster.path):
            found.setdefault((problem.key, problem.message), problem)
    if found:
        raise ConfigError(problems=list(found.values()))
