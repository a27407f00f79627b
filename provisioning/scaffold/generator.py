"""Render ``templates/package`` into ``provisioning-NAME/``.

Templates are plain text with ``{{ variable }}`` placeholders (no template engine: generated
Python keeps its own braces untouched). In paths, ``__module__`` becomes the module name and a
leading ``dot-`` becomes ``.``; the ``.tmpl`` suffix is dropped. Nothing is written unless every
target is free: an existing file is never overwritten.
"""

from __future__ import annotations

import contextlib
import keyword
import os
import re
from importlib import resources
from pathlib import Path
from typing import Iterator

from provisioning import __version__
from provisioning.errors import ConfigError
from provisioning.inputs.records import record
from provisioning.inputs.url import validate_scheme
from provisioning.inputs.userfiles import directory_problem, name_problem
from provisioning.registry import scheme_sources

__all__ = ["DriverNames", "Scaffold", "driver_names", "new_driver", "render"]

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
#: generated files that must be executable
_EXECUTABLE = (".ci/run",)


@record(frozen=True)
class DriverNames:
    """Every name a driver package derives from its scheme."""

    scheme: str        # demo           (URLs: demo:...)
    module: str        # provisioning_demo
    dist: str          # provisioning-demo (pip name, directory name)
    class_name: str    # DemoDriver


@record(frozen=True)
class Scaffold:
    """What ``new_driver`` wrote: the package directory and its files (relative paths)."""

    names: DriverNames
    root: Path
    files: tuple[str, ...]


def driver_names(name: str, *, module: str | None = None) -> DriverNames:
    """Validate NAME as a scheme and derive the module, distribution and class names.

    Raises ConfigError (InvalidDriverURL for a bad scheme) naming what is wrong and how to fix it."""
    scheme = validate_scheme(name)
    _refuse_builtin(scheme)
    words = [w for w in re.split(r"[-.+]", scheme) if w]
    # '-' maps to '_'; '+' and '.' have no faithful spelling in a module name: ask for one
    module = module or "provisioning_" + scheme.replace("-", "_")
    if not module.isidentifier() or keyword.iskeyword(module):
        raise ConfigError(f"{module!r} is not a valid Python module name; pass --module NAME "
                          "with letters, digits and underscores", key="module")
    class_name = "".join(w[:1].upper() + w[1:] for w in words) + "Driver"
    if not class_name.isidentifier():  # a scheme word starting with a digit (e.g. "x-2go")
        class_name = "Scheme" + class_name
    return DriverNames(scheme=scheme, module=module, dist="provisioning-" + scheme,
                       class_name=class_name)


def _refuse_builtin(scheme: str) -> None:
    if scheme_sources().get(scheme) == "built-in":
        raise ConfigError(f"scheme {scheme!r} is built into provisioning; a package for it would "
                          "be shadowed or shadow it: choose another name", key="NAME")


def render(text: str, variables: dict[str, str], *, source: str = "template") -> str:
    """Replace every ``{{ name }}``; an unknown name is a bug in the template, said loudly."""
    def substitute(match: re.Match) -> str:
        key = match.group(1)
        if key not in variables:
            raise KeyError(f"{source}: unknown placeholder {{{{ {key} }}}}")
        return variables[key]

    return _PLACEHOLDER.sub(substitute, text)


def _templates() -> Iterator[tuple[str, str]]:
    """(relative template path with '/' separators, text) for every template file."""
    root = resources.files("provisioning.scaffold").joinpath("templates").joinpath("package")

    def walk(node, prefix: str) -> Iterator[tuple[str, str]]:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name == "__pycache__":
                continue
            path = f"{prefix}{child.name}"
            if child.is_dir():
                yield from walk(child, path + "/")
            elif child.name.endswith(".tmpl"):
                yield path, child.read_text(encoding="utf-8")

    yield from walk(root, "")


def _target_path(template_path: str, names: DriverNames) -> str:
    parts = []
    for part in template_path.split("/"):
        part = part.replace("__module__", names.module)
        if part.startswith("dot-"):
            part = "." + part[len("dot-"):]
        parts.append(part)
    path = "/".join(parts)
    return path[: -len(".tmpl")]


def new_driver(name: str, parent_dir: str | os.PathLike = ".", *, module: str | None = None,
               description: str | None = None) -> Scaffold:
    """Write ``provisioning-NAME/`` under ``parent_dir``: pyproject (entry point), driver module,
    conformance tests, README and CI script. Refuses (ConfigError) if any of those files exists."""
    names = driver_names(name, module=module)
    root = Path(parent_dir).resolve() / names.dist
    variables = {
        "scheme": names.scheme, "module": names.module, "dist": names.dist,
        "class_name": names.class_name, "provisioning_version": __version__,
        "description": (description or f"The {names.scheme}: driver for provisioning")
        .replace('"', "'").replace("\n", " "),
    }
    planned = [(_target_path(path, names), render(text, variables, source=path))
               for path, text in _templates()]
    problem = next((name_problem(root / rel) for rel, _ in planned if name_problem(root / rel)),
                   None) or directory_problem(str(root))
    if problem:
        raise _unwritable(root, problem)
    taken = [rel for rel, _ in planned if (root / rel).exists() or (root / rel).is_symlink()]
    if taken:
        raise ConfigError(
            f"refusing to overwrite {len(taken)} existing file(s) in {root}: "
            + ", ".join(taken[:5]) + (" ..." if len(taken) > 5 else "")
            + "; choose another directory or move them away", file=str(root))
    made: list[Path] = []   # what this call wrote, taken back if a later write fails
    try:
        for rel, text in planned:
            target = root / rel
            for parent in reversed([target.parent, *target.parent.parents]):
                if not parent.exists():
                    parent.mkdir()
                    made.append(parent)
            with open(target, "x", encoding="utf-8") as handle:  # "x": never replace a file
                made.append(target)
                handle.write(text)
            if rel in _EXECUTABLE:
                target.chmod(0o755)
    except OSError as exc:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        raise _unwritable(root, f"{exc.filename or root}: {exc.strerror or exc}") from exc
    return Scaffold(names=names, root=root, files=tuple(rel for rel, _ in planned))


def _unwritable(root: Path, why: str) -> ConfigError:
    return ConfigError(f"cannot write the driver package at {str(root)[:200]}: {why[:300]}; "
                       "choose another --directory (or a shorter NAME/--module)", key="--directory")
