"""Option fields: typed answers, choices from the warehouse, and `drivers describe` output."""

from __future__ import annotations

import json

import pytest

from provisioning.config import Config
from provisioning.driver.options import OptionField, validate_options
from provisioning.registry import driver_for_url


@pytest.mark.parametrize("field, raw, expected", [
    (OptionField("n", type="int"), " 3 ", 3),
    (OptionField("x", type="float"), "0.5", 0.5),
    (OptionField("b", type="bool"), "Yes", True),
    (OptionField("b", type="bool"), "off", False),
    (OptionField("l", type="list"), "a, b", ["a", "b"]),
    (OptionField("l", type="list"), "[1, 2]", [1, 2]),
    (OptionField("d", type="dict"), "{user: root, port: 22}", {"user": "root", "port": 22}),
    (OptionField("s"), "  text ", "text"),
    (OptionField("n", type="int"), 7, 7),
])
def test_answers_are_parsed_to_the_field_type(field, raw, expected):
    assert field.parse(raw) == expected


@pytest.mark.parametrize("field, raw, message", [
    (OptionField("n", type="int"), "three", "expected an integer, got 'three'"),
    (OptionField("b", type="bool"), "maybe", "expected yes or no"),
    (OptionField("d", type="dict"), "[1]", "expected a mapping"),
    (OptionField("d", type="dict"), "{a: [", r"\{a: \["),
])
def test_bad_answers_say_what_is_expected(field, raw, message):
    with pytest.raises(ValueError, match=message):
        field.parse(raw)


def test_choices_from_the_warehouse_in_validation_and_describe(tmp_path):
    driver = driver_for_url("fake:", Config(base_dir=str(tmp_path)))
    size = OptionField("size", choices_from="sizes")
    assert driver.choices_for(size) == ["small", "medium", "large"]
    assert driver.choices_for(OptionField("zone", choices_from=lambda d: ["z1"])) == ["z1"]
    assert driver.choices_for(OptionField("free")) is None
    problems = validate_options([size], {"size": "huge"}, where="machines.web.machine_options",
                                choices=lambda source: driver.choices_for(
                                    OptionField("x", choices_from=source)))
    assert [(p.key, p.message) for p in problems] == [
        ("machines.web.machine_options.size", "unknown size 'huge'; choices: small, medium, large")]
    assert OptionField("zone", choices_from=lambda d: []).to_dict()["choices_from"] == "zone"


def test_drivers_describe_json_lists_fields_and_choices(tmp_path, converge):
    result = converge("drivers", "describe", "fake:", "--output", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["driver_url"] == f"fake:{tmp_path / '.provisioning' / 'fake'}"
    size = next(f for f in info["machine_options"] if f["name"] == "size")
    assert size["choices"] == ["small", "medium", "large"] and size["default"] == "small"
    assert info["choices"]["sizes"] == ["small", "medium", "large"]
    text = converge("drivers", "describe", "fake:", cwd=tmp_path).stdout
    assert "size: str (default 'small') one of: small, medium, large" in text
    unknown = converge("drivers", "describe", "nope:", cwd=tmp_path)
    assert unknown.returncode == 2 and "known schemes" in unknown.stderr
