"""``record`` behaves as ``dataclasses.dataclass``: each case defines one class body twice, once
with each decorator, and compares what the two classes do."""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError, dataclass, field

import pytest

from provisioning.inputs.records import record


def _pair(frozen: bool, body: dict, bases: tuple = ()) -> tuple[type, type]:
    def make(decorate):
        namespace = {"__module__": __name__, "__qualname__": "Thing", **body,
                     "__annotations__": dict(body.get("__annotations__", {}))}
        return decorate(type("Thing", bases, namespace))
    return (make(dataclass(frozen=frozen)), make(record(frozen=frozen)))


FIELDS = {"__annotations__": {"name": "str", "tags": "dict", "secret": "str | None",
                              "note": "str"},
          "tags": field(default_factory=dict), "secret": field(default=None, repr=False),
          "note": field(default="", compare=False)}


@pytest.mark.parametrize("frozen", [True, False])
def test_a_record_compares_shows_and_hashes_as_a_dataclass(frozen):
    plain, rec = _pair(frozen, FIELDS)
    for cls in (plain, rec):
        a, b = cls("web", {"x": "1"}, "pw", "one"), cls("web", {"x": "1"}, "other", "two")
        c = cls("db")
        assert (a == b, a == c, a != c) == (False, False, True)  # secret differs: compared
        assert cls("web", note="one") == cls("web", note="two")  # note is not compared
        assert (a == "web") is False and a.__eq__("web") is NotImplemented
    assert repr(rec("web", {"x": "1"}, "pw")) == repr(plain("web", {"x": "1"}, "pw")) == \
        "Thing(name='web', tags={'x': '1'}, note='')"
    if frozen:
        assert hash(rec("web", (), note="a")) == hash(plain("web", (), note="b"))
        with pytest.raises(FrozenInstanceError):
            rec("web").name = "db"
    else:
        assert rec.__hash__ is None and plain.__hash__ is None
        with pytest.raises(TypeError):
            hash(rec("web"))
    assert dataclasses.fields(rec) and [f.name for f in dataclasses.fields(rec)] == \
        [f.name for f in dataclasses.fields(plain)]
    assert dataclasses.asdict(rec("web")) == dataclasses.asdict(plain("web"))
    assert dataclasses.replace(rec("web"), name="db") == rec("db")


def test_a_record_of_another_class_is_never_equal():
    first, _ = _pair(True, FIELDS)
    _, second = _pair(True, FIELDS)
    other = record(frozen=True)(type("Other", (), {"__module__": __name__,
                                                   "__annotations__": {"name": "str"}}))
    assert second("web") != other("web")
    assert first("web") != second("web")  # a dataclass and a record: two classes


def test_a_method_the_class_defines_is_kept():
    body = {"__annotations__": {"name": "str"},
            "__repr__": lambda self: "<mine>", "__eq__": lambda self, other: True}
    plain, rec = _pair(True, body)
    for cls in (plain, rec):
        assert repr(cls("a")) == "<mine>" and cls("a") == cls("b")
        assert hash(cls("a")) == hash(cls("a"))  # frozen: hashed by its fields anyway
    explicit = {"__annotations__": {"name": "str"}, "__hash__": lambda self: 7}
    for cls in _pair(False, explicit):
        assert hash(cls("a")) == 7


def test_a_subclass_record_compares_its_own_fields_and_a_recursive_repr_ends():
    base = record(frozen=True)(type("Base", (), {"__module__": __name__,
                                                 "__annotations__": {"name": "str"}}))
    child = record(frozen=True)(type("Child", (base,), {"__module__": __name__,
                                                        "__annotations__": {"size": "int"}}))
    assert child("a", 1) == child("a", 1) != child("a", 2)
    assert child("a", 1) != base("a")
    assert repr(child("a", 1)) == "Child(name='a', size=1)"
    box = record(type("Box", (), {"__module__": __name__, "__annotations__": {"items": "list"}}))
    loop = box([])
    loop.items.append(loop)
    assert repr(loop) == "Box(items=[...])"


def test_record_without_arguments_is_a_mutable_record():
    plain = record(type("Plain", (), {"__module__": __name__, "__annotations__": {"n": "int"}}))
    item = plain(1)
    item.n = 2
    assert item == plain(2) and plain.__hash__ is None
