"""Loading YAML the user wrote: safe, fast, strict.

* libyaml's C parser when it is installed (``CSafeLoader``, about 20x the pure-Python speed),
  the pure-Python safe loader otherwise; never a loader that builds arbitrary objects.
* A key given twice in one mapping is refused, naming both lines (YAML would keep the last
  silently, so a typo'd override disappears).
* Nesting deeper than ``MAX_DEPTH`` and more than ``MAX_ALIASES`` aliases are refused before
  the document is built: a deep file would exhaust the stack, aliases can multiply a small file
  into a huge tree ("billion laughs").

Every failure is a ``ConfigError`` naming the file and line.
"""

from __future__ import annotations

from typing import Any

from provisioning.errors import ConfigError
from provisioning.inputs.userfiles import MAX_CONFIG_BYTES, read_user_text

__all__ = ["load_yaml_file", "load_yaml_text", "MAX_DEPTH", "MAX_ALIASES"]

MAX_DEPTH = 64
MAX_ALIASES = 1000

_loader_class: Any = None


def _loader() -> Any:
    """The safe loader class with duplicate-key checks (built once, on first use)."""
    global _loader_class
    if _loader_class is not None:
        return _loader_class
    import yaml
    from yaml.constructor import ConstructorError

    base = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader

    class StrictLoader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.get(key)
                    except TypeError:
                        continue  # unhashable: the base constructor reports it
                    line = key_node.start_mark.line + 1
                    if first is not None:
                        raise ConstructorError(
                            None, None, f"duplicate key {key!r} on line {line} (first given on "
                                        f"line {first}); keep one of them", key_node.start_mark)
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

    _loader_class = StrictLoader
    return StrictLoader


def _check_shape(text: str, path: str) -> None:
    """Walk the event stream (flat, no recursion) and refuse too deep or alias-heavy files."""
    import yaml

    parser = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    depth = aliases = 0
    loader = parser(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(f"nested more than {MAX_DEPTH} levels deep; is it the "
                                      "right file?", file=path, key=_where(event))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise ConfigError(f"more than {MAX_ALIASES} aliases (*name); write the "
                                      "values out", file=path, key=_where(event))
    finally:
        loader.dispose()


def _where(event: Any) -> str | None:
    mark = getattr(event, "start_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else None


def load_yaml_text(text: str, path: str) -> Any:
    """Parse YAML text that came from ``path`` (for messages)."""
    import yaml

    if "\x00" in text:
        raise ConfigError(f"contains a NUL byte at offset {text.index(chr(0))}; not a text file",
                          file=path)
    try:
        _check_shape(text, path)
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a safe loader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML: {problem}", file=path, key=where) from exc
    except RecursionError as exc:  # pragma: no cover - the depth check comes first
        raise ConfigError("nested too deeply", file=path) from exc


def load_yaml_file(path: str, *, what: str = "file", limit: int = MAX_CONFIG_BYTES) -> Any:
    """Read (bounded, regular files only) and parse a YAML file."""
    return load_yaml_text(read_user_text(path, what=what, limit=limit), path)
