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


INIT_FIELDS = {"__annotations__": {"name": "str", "tags": "dict", "size": "int", "made": "list",
                                   "seen": "bool"},
               "tags": field(default_factory=dict), "size": 3,
               "made": field(default_factory=list, init=False),
               "seen": field(default=False, init=False)}


@pytest.mark.parametrize("documented", [True, False])
def test_a_frozen_record_is_made_and_guarded_as_a_frozen_dataclass(documented):
    body = dict(INIT_FIELDS, __doc__="A thing." if documented else None)
    plain, rec = _pair(True, body)
    import inspect

    assert str(inspect.signature(rec)) == str(inspect.signature(plain))
    assert rec.__doc__ == plain.__doc__ and rec.__match_args__ == plain.__match_args__
    for cls in (plain, rec):
        one, two = cls("a"), cls("b", {"k": "v"}, 5)
        assert (one.tags, one.size, one.made, one.seen) == ({}, 3, [], False)
        assert one.tags is not cls("c").tags  # each its own
        assert (two.name, two.tags, two.size) == ("b", {"k": "v"}, 5)
        assert dataclasses.replace(two, size=6).size == 6
        with pytest.raises(TypeError):
            cls()
    for action in (lambda o: setattr(o, "name", "x"), lambda o: setattr(o, "other", 1),
                   lambda o: delattr(o, "name")):
        errors = []
        for cls in (plain, rec):
            with pytest.raises(FrozenInstanceError) as caught:
                action(cls("a"))
            errors.append(str(caught.value))
        assert errors[0] == errors[1]


def test_a_frozen_record_calls_post_init_and_keeps_its_own_init():
    calls = []
    body = {"__annotations__": {"name": "str"}, "__doc__": "x",
            "__post_init__": lambda self: calls.append(self.name)}
    for cls in _pair(True, body):
        cls("a")
    assert calls == ["a", "a"]
    own = {"__annotations__": {"name": "str"}, "__doc__": "x",
           "__init__": lambda self: object.__setattr__(self, "name", "mine")}
    assert [cls().name for cls in _pair(True, own)] == ["mine", "mine"]


def test_a_record_refuses_what_a_dataclass_refuses_with_the_same_words():
    def words(case, decorate):
        try:
            case(decorate)
        except TypeError as exc:
            return str(exc)
        return None

    late = {"__annotations__": {"name": "str", "size": "int"}, "name": "x"}

    def derived(frozen_base: bool, frozen: bool):
        def make(decorate):
            base = decorate(frozen=frozen_base)(type("B", (), {
                "__module__": __name__, "__doc__": "x", "__annotations__": {"name": "str"}}))
            return decorate(frozen=frozen)(type("T", (base,), {"__module__": __name__}))
        return make

    cases = [(lambda d: d(frozen=True)(type("T", (), dict(late, __module__=__name__)))),
             derived(True, False), derived(False, True),
             (lambda d: d(frozen=True)(type("T", (), {"__module__": __name__, "__doc__": "x",
                                                      "__annotations__": {"n": "int"},
                                                      "__setattr__": lambda s, n, v: None})))]
    for case in cases:
        said = words(case, record)
        assert said is not None and said == words(case, dataclass), said
    plain, rec = (derived(True, True)(decorate) for decorate in (dataclass, record))
    assert rec("a") == rec("a") and rec.__dataclass_params__.frozen
    assert rec.__dataclass_params__.init and plain.__dataclass_params__.init
    with pytest.raises(FrozenInstanceError):
        rec("a").name = "b"


@pytest.mark.parametrize("frozen", [True, False])
def test_a_subclass_record_is_made_and_inited_as_a_dataclass_subclass(frozen):
    """A record deriving from records gets the same ``__init__`` as dataclass writes (the
    base's fields first, defaults and factories, ``__post_init__``), and the same errors."""
    import inspect

    made = []
    base_body = {"__module__": __name__, "__doc__": "x",
                 "__annotations__": {"name": "str", "tags": "dict"},
                 "tags": field(default_factory=dict)}
    child_body = {"__module__": __name__, "__doc__": "y",
                  "__annotations__": {"size": "int", "seen": "list"}, "size": 3,
                  "seen": field(default_factory=list, init=False),
                  "__post_init__": lambda self: made.append(type(self).__module__)}
    late_body = {"__module__": __name__, "__annotations__": {"late": "int"}}
    classes = []
    for decorate in (dataclass, record):
        base = decorate(frozen=frozen)(type("Base", (), dict(base_body)))
        child = decorate(frozen=frozen)(type("Child", (base,), dict(child_body)))
        with pytest.raises(TypeError) as caught:
            decorate(frozen=frozen)(type("Late", (base,), dict(late_body)))
        classes.append((base, child, str(caught.value)))
    (plain_base, plain, plain_late), (rec_base, rec, rec_late) = classes
    assert rec_late == plain_late
    assert str(inspect.signature(rec)) == str(inspect.signature(plain))
    for cls in (plain, rec):
        one = cls("a", {"k": "v"}, 5)
        assert (one.name, one.tags, one.size, one.seen) == ("a", {"k": "v"}, 5, [])
        assert cls("b").tags is not cls("c").tags and cls("b").size == 3
        with pytest.raises(TypeError):
            cls()
    assert made == [__name__] * 8 and rec("a") == rec("a") != rec("a", size=4)
    assert rec.__dataclass_params__.frozen == frozen and rec.__dataclass_params__.init


def test_a_records_init_is_compiled_on_first_use_and_then_is_the_class_own_function():
    thing = record(frozen=True)(type("Thing", (), {"__module__": __name__, "__doc__": "x",
                                                   "__annotations__": {"name": "str"}}))
    assert not callable(vars(thing)["__init__"])  # not compiled yet
    init = thing.__init__
    assert vars(thing)["__init__"] is init and init.__qualname__ == "Thing.__init__"
    assert init.__annotations__ == {"name": "str", "return": None}
    assert thing("a").name == "a" and thing.__init__ is init
    other = record(type("Other", (), {"__module__": __name__, "__doc__": "x",
                                      "__annotations__": {"name": "str"}}))
    assert other("b").name == "b" and vars(other)["__init__"].__qualname__ == "Other.__init__"
