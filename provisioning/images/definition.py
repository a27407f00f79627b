"""``images:`` in the cluster file: what an image is made of, and the key it is cached under.

::

    images:
      web-base:
        from: "debian:bookworm"       # the driver's image to start from, or another image
                                      # of this file (required)
        driver: nspawn:               # default: the file's driver
        machine_options: {...}        # for the builder machine (merged over the file's)
        packages: [nginx, curl]       # installed first (a package step)
        converge: [...]               # then these steps, as for machines
    machines:
      web: {machine_options: {image: web-base}}

The cache key is a digest of the whole definition: driver URL, base, builder options, packages,
every step, and the bytes of every local file a step reads (sources, templates, scripts). An
image is built again only when its key changes (or the driver lost it).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any, Mapping

from provisioning.convergence import packages as apt
from provisioning.convergence.steps import PackageStep, parse_steps
from provisioning.inputs.records import record
from provisioning.inputs.schema import Problems

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.convergence.steps import Step

__all__ = ["ImageDefinition", "parse_images", "IMAGE_KEYS", "BUILDER_PREFIX"]

IMAGE_KEYS = ("from", "driver", "machine_options", "packages", "converge")
#: the builder machine of image NAME is saved in the store as BUILDER_PREFIX + NAME
BUILDER_PREFIX = "image-builder-"


@record(frozen=True)
class ImageDefinition:
    """One image of the cluster file, validated."""

    name: str
    base: str
    driver_url: str
    machine_options: Mapping[str, Any]
    packages: tuple[str, ...] = ()
    steps: tuple["Step", ...] = ()
    base_dir: str = ""
    key_path: str = ""

    @property
    def builder(self) -> str:
        return BUILDER_PREFIX + self.name

    def builder_options(self) -> dict[str, Any]:
        """The builder machine's options: the image's, booting from the base."""
        return {**copy.deepcopy(dict(self.machine_options)), "image": self.base}

    def all_steps(self) -> list["Step"]:
        """Packages first (one package step), then the image's own steps."""
        first = [PackageStep(key=f"{self.key_path}.packages", names=self.packages)] \
            if self.packages else []
        return first + list(self.steps)

    def cache_key(self) -> str:
        """sha256 of everything the image is made of (see the module docstring)."""
        import hashlib  # OpenSSL's digests load on first use, not at start-up

        files: dict[str, str] = {}
        steps = []
        for step in self.steps:
            body = {f.name: getattr(step, f.name) for f in dataclasses.fields(step)
                    if f.name != "key"}
            steps.append({"kind": step.kind, **json.loads(json.dumps(body, default=_plain))})
            for name in ("source", "template"):
                path = body.get(name)
                if isinstance(path, str) and path:
                    files[path] = _digest(os.path.join(self.base_dir, os.path.expanduser(path)))
        definition = {"driver": self.driver_url, "from": self.base,
                      "machine_options": self.machine_options, "packages": list(self.packages),
                      "steps": steps, "files": files}
        text = json.dumps(definition, sort_keys=True, default=_plain)
        return hashlib.sha256(text.encode()).hexdigest()

    def summary(self) -> str:
        parts = [f"from {self.base}"]
        if self.packages:
            parts.append(f"{len(self.packages)} package{'s' if len(self.packages) != 1 else ''}")
        if self.steps:
            parts.append(f"{len(self.steps)} step{'s' if len(self.steps) != 1 else ''}")
        return ", ".join(parts)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)  # type: ignore[arg-type]
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _digest(path: str) -> str:
    import hashlib  # OpenSSL's digests load on first use, not at start-up

    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return "missing"


def parse_images(value: Any, problems: Problems, *, base_dir: str, default_driver: str | None,
                 defaults: Mapping[str, Any], name_re, max_name: int) -> dict[str, ImageDefinition]:
    """Images from the file's ``images`` mapping; problems are recorded, never raised."""
    if value is None:  # no images: their steps' modules are not imported
        return {}
    images = problems.mapping(value, "images", "a mapping of image names to their settings")
    out: dict[str, ImageDefinition] = {}
    for name, body in (images or {}).items():
        key = f"images.{name}"
        if not isinstance(name, str) or not name_re.match(name) or len(name) > max_name:
            problems.add(key, f"invalid image name {name!r}: use lower-case letters, digits and "
                              f"'-' (not at either end), at most {max_name} characters")
            continue
        body = problems.mapping(body, key, "a mapping with 'from' (and packages, converge, ...)")
        if body is None:
            continue
        problems.unknown_keys(body, IMAGE_KEYS, key)
        base = problems.field(body, "from", key, str, required=True,
                              expected="the driver's image to start from, e.g. debian:bookworm")
        driver = problems.field(body, "driver", key, str,
                                expected="a driver URL like 'nspawn:'") or default_driver
        if driver is None:
            problems.add(f"{key}.driver", "no driver: set 'driver' here or at the top of the file")
        own = problems.mapping(body.get("machine_options") or {}, f"{key}.machine_options") or {}
        if "image" in own:
            problems.add(f"{key}.machine_options.image", "set the base image with 'from'")
        options = _merge(defaults, own)
        options.pop("image", None)
        names = problems.string_list(body.get("packages", []), f"{key}.packages",
                                     "a list of Debian package names")
        for package in names:
            if not apt.NAME_RE.match(package):
                problems.add(f"{key}.packages", f"{package!r} is not a Debian package name")
        steps = parse_steps(body.get("converge"), f"{key}.converge", problems, base_dir)
        out[name] = ImageDefinition(name=name, base=base or "", driver_url=driver or "",
                                    machine_options=options, packages=tuple(names),
                                    steps=tuple(steps), base_dir=base_dir, key_path=key)
    _check_parents(out, problems)
    return out


def _check_parents(images: Mapping[str, ImageDefinition], problems: Problems) -> None:
    """``from`` may name another image of the file: same driver, and no cycle."""
    for name, image in images.items():
        seen = [name]
        current = image
        while current.base in images:
            parent = images[current.base]
            if parent.driver_url != current.driver_url:
                problems.add(f"{current.key_path}.from", f"image {parent.name!r} is built with "
                                                         f"driver {parent.driver_url!r}, not "
                                                         f"{current.driver_url!r}")
                break
            if parent.name in seen:
                if parent.name == name:
                    problems.add(f"{image.key_path}.from", "images built from each other: "
                                                           + " -> ".join(seen + [parent.name]))
                break
            seen.append(parent.name)
            current = parent


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
