"""Options as typed data: each driver declares its fields once; validation, ``describe()``,
CLI help and the ``converge init`` wizard all read the same declaration."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from provisioning.errors import ConfigError, ConfigProblem

__all__ = ["OptionField", "validate_options", "raise_problems", "DriverDescription"]

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
    "list": (list,), "dict": (dict,), "any": (object,),
}


@dataclass(frozen=True)
class OptionField:
    """One option: ``name`` (dotted for nested: ``transport.port``), its type and help.

    ``choices`` is a fixed list, or ``choices_from`` names what the warehouse lists
    (``images``, ``sizes``, ``locations``, ``networks``, ``security_groups``)."""

    name: str
    type: str = "str"
    default: Any = None
    required: bool = False
    secret: bool = False
    help: str = ""
    choices: Sequence[Any] | None = None
    choices_from: str | None = None

    def check(self, value: Any) -> str | None:
        """None when valid, else what is expected."""
        types = _TYPES.get(self.type, (object,))
        if self.type == "int" and isinstance(value, bool) or not isinstance(value, types):
            return f"expected {self.type}, got {type(value).__name__} {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"expected one of {', '.join(map(str, self.choices))}; got {value!r}"
        return None

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type, "default": self.default,
               "required": self.required, "secret": self.secret, "help": self.help}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.choices_from:
            out["choices_from"] = self.choices_from
        return out


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
        if message is None and item.choices_from and choices is not None:
            allowed = list(choices(item.choices_from))
            if allowed and value not in allowed:
                shown = ", ".join(map(str, allowed[:20])) + (" ..." if len(allowed) > 20 else "")
                message = f"unknown {item.choices_from[:-1] if item.choices_from.endswith('s') else item.choices_from} {value!r}; choices: {shown}"
        if message:
            problems.append(ConfigProblem(message, file=file, key=key))
    if strict:
        for key in options:
            if key not in known_top:
                close = difflib.get_close_matches(str(key), sorted(known_top), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else \
                    f"; known: {', '.join(sorted(known_top))}"
                problems.append(ConfigProblem(f"unknown option {key!r}{hint}", file=file,
                                              key=f"{where}.{key}"))
    return problems


def raise_problems(problems: list[ConfigProblem]) -> None:
    if problems:
        raise ConfigError(problems=problems)


@dataclass
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
