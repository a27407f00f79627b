"""Small helpers to check user data (cluster files, steps, healthchecks) and collect *every*
problem with its key path (``machines.web.converge[2].file.mode``) instead of stopping at the
first one. The loaders call these and raise one ``ConfigError`` holding all problems."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from provisioning.errors import ConfigError, ConfigProblem

__all__ = ["Problems", "did_you_mean", "closest", "describe_type", "one_or_many"]

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping"}


def describe_type(value: Any) -> str:
    """How a value reads in an error: ``a list``, ``the string 'abc'``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def closest(word: str, choices: Iterable[str], n: int = 1) -> list[str]:
    """The known names nearest to a misspelt one (the one matcher every did-you-mean uses)."""
    import difflib  # only once a name is misspelt

    return difflib.get_close_matches(str(word), sorted(str(c) for c in choices), n=n, cutoff=0.6)


def one_or_many(value: Any, key: str) -> list[tuple[Any, str]]:
    """A value that may be one item or a list of them, as (item, key path) pairs."""
    if isinstance(value, list):
        return [(item, f"{key}[{index}]") for index, item in enumerate(value)]
    return [(value, key)]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` or ``; expected one of: a, b, c``."""
    options = sorted(str(c) for c in choices)
    close = closest(word, options)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(options)}" if options else ""


class Problems:
    """An accumulator of ``ConfigProblem`` for one file."""

    def __init__(self, file: str | None) -> None:
        self.file = file
        self.items: list[ConfigProblem] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, key: str | None, message: str) -> None:
        self.items.append(ConfigProblem(message, file=self.file, key=key or None))

    def extend(self, problems: Iterable[ConfigProblem]) -> None:
        self.items.extend(problems)

    def raise_if_any(self) -> None:
        if self.items:
            unique: dict[tuple, ConfigProblem] = {}
            for problem in self.items:
                unique.setdefault((problem.file, problem.key, problem.message), problem)
            raise ConfigError(problems=list(unique.values()))

    # -- checks ----------------------------------------------------------------------------
    def mapping(self, value: Any, key: str, what: str = "a mapping") -> dict | None:
        """The value if it is a mapping with string keys, else record a problem and None."""
        if not isinstance(value, Mapping):
            self.add(key, f"expected {what}, got {describe_type(value)}")
            return None
        bad = [k for k in value if not isinstance(k, str)]
        for k in bad:
            self.add(key, f"keys must be strings, got {describe_type(k)}")
        return {k: v for k, v in value.items() if isinstance(k, str)}

    def unknown_keys(self, mapping: Mapping[str, Any], known: Iterable[str], key: str) -> None:
        known = list(known)
        for name in mapping:
            if name not in known:
                self.add(_join(key, name), f"unknown key {name!r}{did_you_mean(name, known)}")

    def field(self, mapping: Mapping[str, Any], name: str, key: str, kind: type | tuple,
              *, required: bool = False, default: Any = None, expected: str | None = None) -> Any:
        """One typed field of a mapping (bools are never accepted as numbers)."""
        full = _join(key, name)
        if name not in mapping or mapping[name] is None and not required:
            if required:
                self.add(full, f"required: {expected or _expected(kind)}")
            return default
        value = mapping[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.add(full, f"expected {expected or _expected(kind)}, got {describe_type(value)}")
            return default
        return value

    def string_list(self, value: Any, key: str, what: str = "a list of strings") -> list[str]:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            self.add(key, f"expected {what}, got {describe_type(value)}")
            return []
        out = []
        for index, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            else:
                self.add(f"{key}[{index}]", f"expected a string, got {describe_type(item)}")
        return out

    def positive_number(self, mapping: Mapping[str, Any], name: str, key: str,
                        default: float | None = None) -> float | None:
        value = self.field(mapping, name, key, (int, float), default=None,
                           expected="a number of seconds")
        if value is None:
            return default
        if not value > 0 or value == float("inf"):  # NaN compares false: refused here too
            self.add(_join(key, name),
                     f"expected a positive number of seconds (finite), got {value!r}")
            return default
        return float(value)

    def string_map(self, value: Any, key: str) -> dict[str, str]:
        mapping = self.mapping(value, key, "a mapping of names to strings")
        out: dict[str, str] = {}
        for name, item in (mapping or {}).items():
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                self.add(_join(key, name), f"expected a string, got {describe_type(item)}")
            else:
                out[name] = str(item)
        return out


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _expected(kind: type | tuple) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = [_TYPE_NAMES.get(k, k.__name__) for k in kinds if not (k is int and float in kinds)]
    return " or ".join(names)
