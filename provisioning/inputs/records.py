"""``record``: ``dataclasses.dataclass`` whose ``__eq__``, ``__repr__`` and ``__hash__`` are one
shared implementation instead of code generated for each class.

``dataclass`` writes each method it adds as source text and compiles it with ``exec``: about a
millisecond per class here, and the classes on the path of ``converge status`` (cluster file
entries, steps, specs, options, results) made that a third of its start-up. A record is the
same dataclass (``fields``, ``asdict``, ``replace``, ``__init__``, ``frozen`` all from
``dataclasses``) whose comparison, representation and hash read ``dataclasses.fields`` at call
time, with the same results as the generated ones (``tests/unit/test_records.py`` compares
them): equal when of the same class and the compared fields are equal, hashable when frozen
(unhashable otherwise), a method the class defines itself kept.

    @record(frozen=True)
    class Step:
        key: str
        env: Mapping[str, str] = field(default_factory=dict)
"""

from __future__ import annotations

import dataclasses
import reprlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import dataclass_transform  # typing's own from Python 3.11
else:
    def dataclass_transform(**_: object) -> Any:
        """What mypy reads (PEP 681); nothing to do at run time."""
        return lambda function: function

__all__ = ["record"]


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                      if f.repr)
    return f"{self.__class__.__qualname__}({shown})"


def _compared(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.compare)


def _eq(self: Any, other: object) -> Any:
    if other.__class__ is self.__class__:
        return _compared(self) == _compared(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)
                      if (f.compare if f.hash is None else f.hash)))


def _shared_methods(cls: Any, *, frozen: bool) -> Any:
    """The dataclass ``cls`` made with eq and repr off, given the shared methods where
    ``dataclass`` would have generated its own (never over one the class defines)."""
    own = vars(cls)
    if "__repr__" not in own:
        cls.__repr__ = _repr
    explicit_hash = own.get("__hash__", dataclasses.MISSING)
    has_explicit_hash = not (explicit_hash is dataclasses.MISSING
                             or (explicit_hash is None and "__eq__" in own))
    if "__eq__" not in own:
        cls.__eq__ = _eq
    if not has_explicit_hash:
        cls.__hash__ = _hash if frozen else None
    return cls


@dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))
def record(cls: Any = None, /, *, frozen: bool = False) -> Any:
    """``@record`` or ``@record(frozen=True)``: as ``@dataclass`` (eq and repr on), cheaper to
    define."""
    def wrap(cls: Any) -> Any:
        made = dataclasses.dataclass(cls, frozen=frozen, eq=False, repr=False)
        return _shared_methods(made, frozen=frozen)

    return wrap if cls is None else wrap(cls)
