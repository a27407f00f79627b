"""Options as typed data: each driver declares its fields once; validation, ``describe()``,
CLI help and the ``converge init`` wizard all read the same declaration."""

from __future__ import annotations

import warnings
from dataclasses import field
from typing import Any, Callable, Mapping, Sequence

from provisioning.errors import ConfigError, ConfigProblem
from provisioning.inputs.records import record
from provisioning.inputs.schema import closest

__all__ = ["OptionField", "validate_options", "raise_problems", "DriverDescription",
           "LOCAL_OPTION_KEYS", "driver_option_problems",
           "format_choices"]

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
    "list": (list,), "dict": (dict,), "any": (object,),
}


@record(frozen=True)
class OptionField:
    """One option: ``name`` (dotted for nested: ``transport.port``), its type and help.

    ``choices`` is a fixed list, or ``choices_from`` names what the warehouse lists
    (``images``, ``sizes``, ``locations``, ``networks``, ``security_groups``: a key of
    ``Driver.list_choices()``), or is a function of the driver giving the list
    (``choices_from=lambda driver: driver.list_keypairs()``)."""

    name: str
    type: str = "str"
    default: Any = None
    required: bool = False
    secret: bool = False
    help: str = ""
    choices: Sequence[Any] | None = None
    choices_from: "str | Callable[[Any], Sequence[Any]] | None" = None

    def check(self, value: Any) -> str | None:
        """None when valid, else what is expected."""
        types = _TYPES.get(self.type, (object,))
        if self.type == "int" and isinstance(value, bool) or not isinstance(value, types):
            return f"expected {self.type}, got {type(value).__name__} {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"expected one of {', '.join(map(str, self.choices))}; got {value!r}"
        if self.type in ("int", "float"):
            return _range_problem(self.name.rsplit(".", 1)[-1], float(value))  # type: ignore[arg-type]
        return None

    @property
    def choices_label(self) -> str:
        """What one choice is called in messages: 'size' for ``choices_from="sizes"``."""
        source = self.choices_from
        if isinstance(source, str) and source:
            return source[:-1] if source.endswith("s") else source
        return self.name.rsplit(".", 1)[-1]

    def parse(self, raw: Any) -> Any:
        """An answer typed by a person (text) turned into this field's type, so the wizard and
        ``--answers`` files accept ``3`` for an int or ``yes`` for a bool. Values that are not
        text are returned as they are (``check`` judges them). Raises ValueError saying what is
        expected."""
        if not isinstance(raw, str):
            return raw
        text = raw.strip()
        if self.type == "str":
            return text
        if self.type == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"expected an integer, got {text!r}") from None
        if self.type == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"expected a number, got {text!r}") from None
        if self.type == "bool":
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(f"expected yes or no, got {text!r}")
        if self.type in ("list", "dict", "any"):
            if self.type == "any":
                return _yaml_value(text) if text else None
            if self.type == "list" and text and text[:1] != "[":
                return [part.strip() for part in text.split(",") if part.strip()]
            value = _yaml_value(text) if text else ([] if self.type == "list" else {})
            if self.type == "dict" and not isinstance(value, dict):
                raise ValueError(f"expected a mapping such as {{key: value}}, got {text!r}")
            if self.type == "list" and not isinstance(value, list):
                raise ValueError(f"expected a list such as [a, b], got {text!r}")
            return value
        return text

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type, "default": self.default,
               "required": self.required, "secret": self.secret, "help": self.help}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.choices_from:
            out["choices_from"] = (self.choices_from if isinstance(self.choices_from, str)
                                   else self.name)
        return out


def _range_problem(name: str, value: float) -> str | None:
    """Numbers whose name says what they are: timeouts above 0, delays and counts from 0,
    ports from 1 to 65535; never NaN or infinite."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, got {value!r}"
    if name.endswith("timeout") and value <= 0:
        return f"expected a number of seconds above 0, got {value!r}"
    if name.endswith(("delay", "interval", "retries", "attempts")) and value < 0:
        return f"expected a number from 0, got {value!r}"
    if name.endswith("port") and not 1 <= value <= 65535:
        return f"expected a port from 1 to 65535, got {value!r}"
    return None


#: machine options every driver accepts, checked by the core (``local_features``) against the
#: driver's capabilities and never passed to its own option fields
LOCAL_OPTION_KEYS = ("sync", "ports")

_TRUE = frozenset({"y", "yes", "true", "on", "1"})
_FALSE = frozenset({"n", "no", "false", "off", "0"})


def _yaml_value(text: str) -> Any:
    """One YAML value (flow style): ``{a: 1}``, ``[x, y]``, ``3``. ValueError if it does not parse."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ValueError(f"{problem}: {text!r}") from None


def _lookup(options: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = options
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate_options(fields: Sequence[OptionField], options: Mapping[str, Any], *, where: str,
                     file: str | None = None, strict: bool = True,
                     choices: Callable[[str], Sequence[Any]] | None = None) -> list[ConfigProblem]:
    """Every problem with ``options`` against ``fields`` (unknown keys with a did-you-mean when
    ``strict``). ``where`` is the key path prefix (``machines.web.machine_options``)."""
    problems: list[ConfigProblem] = []
    known_top = {f.name.split(".")[0] for f in fields}
    for item in fields:
        present, value = _lookup(options, item.name)
        key = f"{where}.{item.name}"
        if not present:
            if item.required and item.default is None:
                problems.append(ConfigProblem(f"required: {item.help or item.type}", file=file,
                                              key=key))
            continue
        message = item.check(value)
        if message is None and isinstance(item.choices_from, str) and choices is not None:
            allowed = list(choices(item.choices_from))
            if allowed and value not in allowed:
                message = f"unknown {item.choices_label} {value!r}; choices: {format_choices(allowed)}"
        if message:
            problems.append(ConfigProblem(message, file=file, key=key))
    if strict:
        problems += _unknown_nested(fields, options, where, file)
        for key in options:
            if key not in known_top:
                close = closest(key, known_top)
                hint = f"; did you mean {close[0]!r}?" if close else \
                    f"; known: {', '.join(sorted(known_top))}"
                problems.append(ConfigProblem(f"unknown option {key!r}{hint}", file=file,
                                              key=f"{where}.{key}"))
    return problems


def _unknown_nested(fields: Sequence[OptionField], options: Mapping[str, Any], where: str,
                    file: str | None) -> list[ConfigProblem]:
    """Unknown keys inside a mapping whose keys are declared (``transport.port`` declares
    ``transport``'s keys), with a did-you-mean."""
    declared: dict[str, set[str]] = {}
    for item in fields:
        top, dot, rest = item.name.partition(".")
        if dot:
            declared.setdefault(top, set()).add(rest.split(".")[0])
    problems = []
    for top, names in declared.items():
        value = options.get(top)
        if not isinstance(value, Mapping):
            continue
        for key in value:
            if key not in names:
                close = closest(str(key), names)
                hint = f"; did you mean {close[0]!r}?" if close else \
                    f"; known: {', '.join(sorted(names))}"
                problems.append(ConfigProblem(f"unknown option {key!r}{hint}", file=file,
                                              key=f"{where}.{top}.{key}"))
    return problems


def format_choices(allowed: Sequence[Any], limit: int = 20) -> str:
    """``a, b, c`` (the first ``limit``, then how many more) for error messages and prompts."""
    items = [str(a) for a in allowed]
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items) - limit} more)" if len(items) > limit else "")


def driver_option_problems(cls: Any, options: Mapping[str, Any], *, where: str,
                           file: str | None = None) -> list[ConfigProblem]:
    """Every problem with a driver's ``driver_options``, against the fields its class
    declares (``driver_option_fields``). A built-in driver declares every option it takes, so
    with none declared any key is unknown; a driver from outside the project that declares
    none keeps its options unchecked, with a DeprecationWarning (they will be checked)."""
    fields = list(cls.driver_option_fields)
    if fields:
        return validate_options(fields, options, where=where, file=file, strict=True)
    if not options:
        return []
    if cls.__module__.split(".")[0] == "provisioning":
        return [ConfigProblem(f"unknown option {key!r}: the {cls.scheme}: driver takes no "
                              "driver_options (accepted: none); remove it", file=file,
                              key=f"{where}.{key}") for key in options]
    warnings.warn(f"{cls.__module__}.{cls.__qualname__} declares no driver_option_fields, so "
                  f"its driver_options ({', '.join(map(str, options))}) are not checked; declare "
                  "each option it takes as an OptionField (undeclared options will be refused "
                  "in a later release)", DeprecationWarning, stacklevel=3)
    return []


def raise_problems(problems: list[ConfigProblem]) -> None:
    if problems:
        raise ConfigError(problems=problems)


@record
class DriverDescription:
    """What ``describe()`` returns: the fields a user fills in and the warehouse's choices."""

    scheme: str
    driver_url: str
    driver_options: list[OptionField] = field(default_factory=list)
    machine_options: list[OptionField] = field(default_factory=list)
    choices: dict[str, list[Any]] = field(default_factory=dict)
    capabilities: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "driver_url": self.driver_url,
                "driver_options": [f.to_dict() for f in self.driver_options],
                "machine_options": [f.to_dict() for f in self.machine_options],
                "choices": self.choices, "capabilities": self.capabilities}
