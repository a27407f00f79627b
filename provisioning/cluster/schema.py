"""A JSON Schema of the cluster file, for editors (``converge schema``).

Generated from the very definitions the loader validates with: the key lists of the file, of a
machine group, of platforms and suites (``cluster.TOP_KEYS``, ``MACHINE_KEYS``,
``matrix.PLATFORM_KEYS``/``SUITE_KEYS``), of every step kind (``steps._KEYS``), of healthchecks,
verify entries, images (``images.definition.IMAGE_KEYS``) and each registered convergence
strategy's own ``schema()``; so a key added to
the loader shows up here without anyone remembering to. The loader stays the authority (it
checks what a schema cannot: files exist, driver options, ``after`` cycles); the schema gives
completion, hover help and early red squiggles.
"""

from __future__ import annotations

from typing import Any

from provisioning.cluster import healthcheck
from provisioning.cluster.file import MACHINE_KEYS, TOP_KEYS, VERIFY_KINDS
from provisioning.cluster.matrix import PLATFORM_KEYS, SUITE_KEYS
from provisioning.convergence import steps
from provisioning.convergence.registry import known_strategies, strategy_class
from provisioning.images.definition import IMAGE_KEYS

__all__ = ["cluster_schema", "SCHEMA_ID"]

SCHEMA_ID = "https://provisioning.invalid/schemas/cluster.json"

_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_NUMBER = {"type": "number", "exclusiveMinimum": 0}
_MAPPING = {"type": "object"}
#: the type of each key wherever it appears (keys not named here are strings)
_TYPES: dict[str, Any] = {
    "count": {"type": "integer", "minimum": 1, "maximum": 1000},
    "mode": {"type": ["string", "integer"], "description": 'octal, quoted: "0644"'},
    "owner": {"type": ["string", "integer"]}, "group": {"type": ["string", "integer"]},
    "sudo": {"type": "boolean"}, "env": {"type": "object", "additionalProperties": _STRING},
    "timeout": _NUMBER, "deadline": _NUMBER, "interval": _NUMBER,
    "args": _STRINGS, "name": {"anyOf": [_STRING, _STRINGS]},
    "expect": {"type": "integer"}, "tcp": {"type": ["string", "integer"]},
    "machine_options": _MAPPING, "driver_options": {
        "type": "object", "additionalProperties": _MAPPING,
        "description": "options per driver URL ('converge drivers describe URL')"},
    "private_key_paths": {"anyOf": [_STRING, _STRINGS]},
    "private_keys": {"type": "object", "additionalProperties": _STRING},
    "after": {"anyOf": [_STRING, _STRINGS],
              "description": "groups (of the same instance) to bring up first"},
    "includes": {"anyOf": [_STRING, _STRINGS]}, "excludes": {"anyOf": [_STRING, _STRINGS]},
    "outputs": {"type": "object", "additionalProperties": _STRING,
                "description": "templated values printed by 'converge output'"},
    "extra_vars": _MAPPING,
    "prevent_destroy": {"type": "boolean",
                        "description": "a plan that would destroy one of these is an error"},
    "create_before_destroy": {"type": "boolean",
                              "description": "replace: create the new machine, then destroy "
                                             "the old one (when the driver can)"},
}
_DESCRIPTIONS = {
    "driver": "driver URL, quoted: \"nspawn:\"",
    "state": "state store: a path, sqlite:///PATH, postgresql://...",
    "platforms": "test-kitchen platforms: name -> {driver, machine_options}",
    "suites": "test-kitchen suites: name -> {converge, verify, ...}; instances SUITE-PLATFORM",
    "machines": "machine (group) name -> its settings",
}
_NAME = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"


def _object(keys: tuple[str, ...] | list[str], overrides: dict[str, Any] | None = None,
            required: tuple[str, ...] = ()) -> dict[str, Any]:
    properties = {}
    for key in keys:
        schema = dict((overrides or {}).get(key) or _TYPES.get(key) or _STRING)
        if key in _DESCRIPTIONS and "description" not in schema:
            schema["description"] = _DESCRIPTIONS[key]
        properties[key] = schema
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


def _steps() -> dict[str, Any]:
    variants = []
    for kind in steps.STEP_KINDS:
        keys = steps._KEYS[kind]
        body = _object(keys)
        if kind in steps._SHORT:
            body = {"anyOf": [_STRING, body]}
        variants.append(_object((kind,), {kind: body}, required=(kind,)))
    return {"type": "array", "items": {"oneOf": variants}}


def _convergence() -> dict[str, Any]:
    variants: list[dict[str, Any]] = [{"$ref": "#/$defs/steps"}]
    for name in known_strategies():
        try:
            schema = strategy_class(name).schema()
        except ImportError:  # a plug-in whose package is broken: leave it out of the schema
            continue
        variants.append(_object((name,), {name: schema}, required=(name,)))
    return {"anyOf": variants, "description": "a list of steps, or one strategy: "
                                              "{ansible: {playbook: site.yml}}"}


def _healthcheck() -> dict[str, Any]:
    one = {"allOf": [_object(healthcheck._KEYS),
                     {"oneOf": [{"required": [k]} for k in healthcheck.KINDS]}]}
    return {"anyOf": [one, {"type": "array", "items": one}]}


def _verify() -> dict[str, Any]:
    one = {"anyOf": [_STRING] + [_object((k,), required=(k,)) for k in VERIFY_KINDS]}
    return {"anyOf": [one, {"type": "array", "items": one}]}


def cluster_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a cluster file."""
    group_refs = {"converge": {"$ref": "#/$defs/converge"},
                  "healthcheck": {"$ref": "#/$defs/healthcheck"},
                  "verify": {"$ref": "#/$defs/verify"}}
    machine = _object(MACHINE_KEYS, group_refs)
    machines = {"type": "object", "propertyNames": {"pattern": _NAME, "maxLength": 60},
                "additionalProperties": {"anyOf": [{"$ref": "#/$defs/machine"},
                                                   {"type": "null"}]}}
    suite = _object(SUITE_KEYS, dict(group_refs, machines={"$ref": "#/$defs/machines"}))
    image = _object(IMAGE_KEYS, {"converge": {"$ref": "#/$defs/steps"},
                                 "from": {"type": "string", "description": "the base image"},
                                 "packages": {"anyOf": [_STRING, _STRINGS]}},
                    required=("from",))
    top = _object(TOP_KEYS, {
        "machines": dict(machines, description=_DESCRIPTIONS["machines"]),
        "platforms": {"type": "object", "description": _DESCRIPTIONS["platforms"],
                      "additionalProperties": {"anyOf": [_object(PLATFORM_KEYS),
                                                         {"type": "null"}]}},
        "suites": {"type": "object", "description": _DESCRIPTIONS["suites"],
                   "additionalProperties": {"anyOf": [suite, {"type": "null"}]}},
        "images": {"type": "object", "description": "images built once and booted from: "
                                                   "name -> {from, packages, converge, ...}",
                   "additionalProperties": image},
        "name": {"type": "string", "pattern": _NAME, "maxLength": 60,
                 "description": "the cluster's name in the state store (default: from the "
                                "file's directory and stem)"},
    })
    top.update({
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
        "title": "provisioning cluster file",
        "description": "Machines, or platforms x suites, for 'converge' (docs/cluster-file.md)",
        "anyOf": [{"required": ["machines"]}, {"required": ["platforms", "suites"]}],
        "$defs": {"machine": machine, "machines": machines, "steps": _steps(),
                  "converge": _convergence(), "healthcheck": _healthcheck(),
                  "verify": _verify()}})
    return top
