"""``record``: ``dataclasses.dataclass`` whose ``__eq__``, ``__repr__`` and ``__hash__`` are one
shared implementation instead of code generated for each class.

``dataclass`` writes each method it adds as source text and compiles it with ``exec``: about a
millisecond per class here, and the classes on the path of ``converge status`` (cluster file
entries, steps, specs, options, results) made that a third of its start-up. A record is the
same dataclass (``fields``, ``asdict``, ``replace``, ``__init__``, ``frozen`` all from
``dataclasses``) whose comparison, representation and hash read ``dataclasses.fields`` at call
time, with the same results as the generated ones (``tests/unit/test_records.py`` compares
them): equal when of the same class and the compared fields are equal, hashable when frozen
(unhashable otherwise), a method the class defines itself kept. A record with no data-class
base also gets its ``__init__`` written here, compiled when first looked up (most classes a
command imports make no instance before it has done its work; dataclass compiles it with the
class), and, frozen, its ``__setattr__`` and ``__delattr__`` as closures (dataclass compiles
both): the same code dataclass would compile, with the same signature, docstring and errors.

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


def _plain_fields(cls: Any) -> bool:
    """Whether ``cls`` declares no field only dataclass handles: an ``InitVar``, a keyword-only
    field (``KW_ONLY``, ``kw_only``), a field named ``self``."""
    annotations = vars(cls).get("__annotations__", {})
    if "self" in annotations or any(isinstance(v, dataclasses.Field) and v.kw_only is True
                                    for v in vars(cls).values()):
        return False
    return not any(word in str(kind) for kind in annotations.values()
                   for word in ("InitVar", "KW_ONLY"))


def _written_here(cls: Any) -> bool:
    """Whether this module writes the ``__init__`` of ``cls`` (read before dataclass sees it):
    when neither the class nor a data-class base of it declares a field only dataclass
    handles (a base's are read from its annotations and made fields)."""
    bases = [base for base in cls.__mro__[1:] if "__dataclass_fields__" in vars(base)]
    return _plain_fields(cls) and all(
        _plain_fields(base) and not any(f.kw_only is True for f in dataclasses.fields(base))
        for base in bases)


def _guarded_here(cls: Any) -> bool:
    """Whether this module writes the frozen guards of ``cls``: only without data-class bases
    (dataclass's rules on frozen and non-frozen bases stay dataclass's)."""
    return not any("__dataclass_fields__" in vars(base) for base in cls.__mro__[1:])


def _init_source(cls: Any, frozen: bool) -> tuple[str, dict[str, Any]]:
    """The source of the ``__init__`` dataclass writes for ``cls`` (each field set, with
    ``object.__setattr__`` when frozen, factories called, ``__post_init__`` last) and the
    names it reads; a field without a default after one with a default is dataclass's
    TypeError, raised here, when the class is made."""
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
        lines.append(f" __record_set(self, {f.name!r}, {value})" if frozen
                     else f" self.{f.name} = {value}")
    if hasattr(cls, "__post_init__"):
        lines.append(" self.__post_init__()")
    return (f"def __init__({', '.join(parameters)}) -> None:\n" + ("\n".join(lines) or " pass"),
            names)


def _compiled_init(cls: Any, source: str, names: dict[str, Any]) -> Any:
    exec(source, names)
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = {f.name: f.type for f in dataclasses.fields(cls) if f.init}
    init.__annotations__["return"] = None
    return init


class _InitOnUse:
    """A record's ``__init__`` until it is first looked up (to make an instance, to be read or
    called): then the function above is compiled and takes its place in the class, so every
    use sees that function. Compiling is most of what defining a record costs, and a command
    makes instances of few of the classes its modules define."""

    __slots__ = ("cls", "source", "names")

    def __init__(self, cls: Any, source: str, names: dict[str, Any]) -> None:
        self.cls, self.source, self.names = cls, source, names

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        init = vars(self.cls).get("__init__")
        if init is self:  # another thread may have put it there meanwhile: the same function
            init = _compiled_init(self.cls, self.source, dict(self.names))
            type.__setattr__(self.cls, "__init__", init)
        return init.__get__(instance, owner)


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
        if not _written_here(cls):
            return _shared_methods(dataclasses.dataclass(cls, frozen=frozen, eq=False,
                                                         repr=False), frozen=frozen)
        documented, guarded = bool(cls.__doc__), frozen and _guarded_here(cls)
        made = dataclasses.dataclass(cls, init=False, eq=False, repr=False,
                                     frozen=frozen and not guarded)
        if "__init__" not in vars(made):
            made.__init__ = _InitOnUse(made, *_init_source(made, frozen))
        if guarded:
            _frozen_guards(made)
        params = made.__dataclass_params__  # this class's own: it says what it is now
        params.init, params.frozen = True, frozen
        if not documented:  # dataclass wrote it from the signature before there was one
            import inspect  # only here: a start-up does not load it (provisioning.cli.start)
            try:
                signature = str(inspect.signature(made)).replace(" -> None", "")
            except (TypeError, ValueError):  # pragma: no cover - as dataclass does
                signature = ""
            made.__doc__ = made.__name__ + signature
        return _shared_methods(made, frozen=frozen)

    return wrap if cls is None else wrap(cls)
