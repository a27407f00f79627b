"""``record``: ``dataclasses.dataclass`` whose ``__eq__``, ``__repr__`` and ``__hash__`` are one
shared implementation instead of code generated for each class.

``dataclass`` writes each method it adds as source text and compiles it with ``exec``: about a
millisecond per class here, and the classes on the path of ``converge status`` (cluster file
entries, steps, specs, options, results) made that a third of its start-up. A record is the
same dataclass (``fields``, ``asdict``, ``replace``, ``__init__``, ``frozen`` all from
``dataclasses``) whose comparison, representation and hash read ``dataclasses.fields`` at call
time, with the same results as the generated ones (``tests/unit/test_records.py`` compares
them): equal when of the same class and the compared fields are equal, hashable when frozen
(unhashable otherwise), a method the class defines itself kept. A frozen record with no
data-class base also gets its ``__init__`` written here (one compile, where dataclass compiles
``__init__``, ``__setattr__`` and ``__delattr__``) and its frozen ``__setattr__`` and
``__delattr__`` as closures: the same code dataclass would compile, with the same signature,
docstring and errors.

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


class _Factory:
    """The default of a parameter whose field has a ``default_factory`` (shown as dataclass
    shows it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def _written_here(cls: Any) -> bool:
    """Whether this module writes the methods of frozen ``cls`` (read before dataclass sees
    it): only for a class without data-class bases (dataclass's rules on frozen and
    non-frozen bases stay dataclass's) and without what only dataclass handles (an
    ``InitVar`` or keyword-only field, a field named ``self``)."""
    if any("__dataclass_fields__" in vars(base) for base in cls.__mro__[1:]):
        return False
    annotations = vars(cls).get("__annotations__", {})
    if "self" in annotations or any(isinstance(v, dataclasses.Field) and v.kw_only is True
                                    for v in vars(cls).values()):
        return False
    return not any(word in str(kind) for kind in annotations.values()
                   for word in ("InitVar", "KW_ONLY"))


def _frozen_init(cls: Any) -> Any:
    """The ``__init__`` dataclass writes for a frozen class (each field set with
    ``object.__setattr__``, factories called, ``__post_init__`` last): one function compiled
    per class, where dataclass compiles a ``__setattr__`` and a ``__delattr__`` too."""
    names: dict[str, Any] = {"__name__": cls.__module__, "__record_set": object.__setattr__,
                             "__record_factory": _FACTORY}
    parameters, lines, defaulted = ["self"], [], False
    for index, f in enumerate(dataclasses.fields(cls)):
        default, factory = f"__record_default_{index}", f"__record_make_{index}"
        has_default = f.default is not dataclasses.MISSING
        has_factory = f.default_factory is not dataclasses.MISSING
        names[default], names[factory] = f.default, f.default_factory
        if f.init:
            if has_default or has_factory:
                parameters.append(f"{f.name}={default if has_default else '__record_factory'}")
                defaulted = True
            elif defaulted:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
            else:
                parameters.append(f.name)
            value = (f"{factory}() if {f.name} is __record_factory else {f.name}"
                     if has_factory else f.name)
        elif has_factory or has_default:
            value = f"{factory}()" if has_factory else default
        else:
            continue
        lines.append(f" __record_set(self, {f.name!r}, {value})")
    if hasattr(cls, "__post_init__"):
        lines.append(" self.__post_init__()")
    exec(f"def __init__({', '.join(parameters)}) -> None:\n" + ("\n".join(lines) or " pass"),
         names)
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = {f.name: f.type for f in dataclasses.fields(cls) if f.init}
    init.__annotations__["return"] = None
    return init


def _frozen_guards(cls: Any) -> None:
    """The ``__setattr__`` and ``__delattr__`` of a frozen dataclass, as closures (dataclass
    compiles the same two methods for each class)."""
    names = frozenset(f.name for f in dataclasses.fields(cls))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    for method in (__setattr__, __delattr__):
        if method.__name__ in vars(cls):
            raise TypeError(f"Cannot overwrite attribute {method.__name__} in class "
                            f"{cls.__name__}")
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        setattr(cls, method.__name__, method)


@dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))
def record(cls: Any = None, /, *, frozen: bool = False) -> Any:
    """``@record`` or ``@record(frozen=True)``: as ``@dataclass`` (eq and repr on), cheaper to
    define."""
    def wrap(cls: Any) -> Any:
        if frozen and _written_here(cls):
            documented = bool(cls.__doc__)
            made = dataclasses.dataclass(cls, init=False, eq=False, repr=False)
            if "__init__" not in vars(made):
                made.__init__ = _frozen_init(made)
            _frozen_guards(made)
            params = made.__dataclass_params__  # this class's own: it says what it is now
            params.init = params.frozen = True
            if not documented:  # dataclass wrote it from the signature before there was one
                import inspect  # only here: a start-up does not load it (provisioning.lazy)
                try:
                    signature = str(inspect.signature(made)).replace(" -> None", "")
                except (TypeError, ValueError):  # pragma: no cover - as dataclass does
                    signature = ""
                made.__doc__ = made.__name__ + signature
        else:
            made = dataclasses.dataclass(cls, frozen=frozen, eq=False, repr=False)
        return _shared_methods(made, frozen=frozen)

    return wrap if cls is None else wrap(cls)
