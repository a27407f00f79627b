"""Loading YAML the user wrote: safe, fast, strict.

* libyaml's C parser when it is installed (``CSafeLoader``, about 20x the pure-Python speed),
  the pure-Python safe loader otherwise; never a loader that builds arbitrary objects.
* ``yaml`` imported without its most expensive line (``import_yaml``): a runner parses its
  cluster file before its first machine, so the import is part of every runner's start-up.
* A key given twice in one mapping is refused, naming both lines (YAML would keep the last
  silently, so a typo'd override disappears).
* Nesting deeper than ``MAX_DEPTH`` and more than ``MAX_ALIASES`` aliases are refused before
  the document is built: a deep file would exhaust the stack, aliases can multiply a small file
  into a huge tree ("billion laughs").

Every failure is a ``ConfigError`` naming the file and line.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from provisioning.errors import ConfigError
from provisioning.inputs.userfiles import MAX_CONFIG_BYTES, read_user_text

__all__ = ["load_yaml_file", "load_yaml_text", "import_yaml", "MAX_DEPTH", "MAX_ALIASES"]

MAX_DEPTH = 64
MAX_ALIASES = 1000

#: The class of characters PyYAML's pure-Python reader refuses (``yaml.reader.Reader``'s
#: ``NON_PRINTABLE``), compiled when ``yaml`` is imported even where libyaml does all the
#: reading. Its ranges up to U+FFFD make ``re`` fill a table of 65,536 entries one at a time:
#: about 60 M instructions, a tenth of a PostgreSQL runner's start-up before its first claim.
READER_CLASS = "[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]"
#: The same characters, named instead of excluded (a test compares the two on every code
#: point): a few small ranges, compiled in a few M instructions.
SAME_CHARACTERS = "[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x84\x86-\x9F\uD800-\uDFFF\uFFFE\uFFFF]"

_loader_class: Any = None


def import_yaml() -> Any:
    """The ``yaml`` module. Imported here for the first time, its reader's class is found
    already compiled: ``re.compile`` looks a pattern up in ``re``'s cache (a dict keyed by
    the pattern's type, text and flags, ``re._cache``, in CPython 3.8 to 3.13) before it
    compiles, and the cache is given ``SAME_CHARACTERS`` compiled under ``READER_CLASS``'s
    key. Where the cache is not such a dict, or ``yaml`` is loaded already, nothing is
    given: the reader compiles its own as before."""
    if "yaml" not in sys.modules:
        cache = getattr(re, "_cache", None)
        if isinstance(cache, dict):
            cache.setdefault((str, READER_CLASS, 0), re.compile(SAME_CHARACTERS))
    import yaml

    return yaml


def _loader() -> Any:
    """The safe loader class with duplicate-key checks (built once, on first use)."""
    global _loader_class
    if _loader_class is not None:
        return _loader_class
    yaml = import_yaml()
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
    yaml = import_yaml()

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
    yaml = import_yaml()

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
