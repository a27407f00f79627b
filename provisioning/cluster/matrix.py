"""test-kitchen's matrix in the cluster file: ``platforms`` x ``suites`` -> instances.

::

    platforms:                          # where: a driver URL and machine options
      bookworm: {driver: "nspawn:", machine_options: {image: "debian:bookworm"}}
      trixie:   {machine_options: {image: "debian:trixie"}}     # driver: the top-level one
    suites:                             # what: converge, verify, healthcheck (+ machine_options)
      default:
        converge: [{command: {run: touch /ok, creates: /ok}}]
        verify: [{testinfra: tests/default}]
        excludes: [trixie]              # or includes: [bookworm]
      app:                              # a suite of several machines: one group per tier
        machines:
          db: {converge: [...]}
          web: {count: 2, after: [db], converge: [...]}

Each suite on each platform it is not excluded from is an instance named ``SUITE-PLATFORM``: one
machine of that name, or, for a suite with ``machines``, the machines ``SUITE-PLATFORM-GROUP``
(``-N`` with ``count``), whose ``after`` and ``machines`` template variable stay inside the
instance. Options merge in this order, later winning: top-level ``machine_options``, the
platform's, the suite's, the group's.
"""

from __future__ import annotations

from typing import Any, Mapping

from provisioning.cluster.model import ClusterFile, GroupSpec, deep_merge
from provisioning.inputs.schema import Problems, did_you_mean

__all__ = ["expand_matrix", "PLATFORM_KEYS", "SUITE_KEYS"]

PLATFORM_KEYS = ("driver", "machine_options")
SUITE_KEYS = ("converge", "verify", "healthcheck", "machine_options", "includes", "excludes",
              "machines")
#: what a one-machine suite passes on to its machine
_MACHINE_KEYS = ("converge", "verify", "healthcheck")


def expand_matrix(top: Mapping[str, Any], problems: Problems,
                  cluster: ClusterFile) -> list[GroupSpec]:
    """The groups of every instance; problems (unknown platform in excludes...) recorded."""
    platforms = _named(top, "platforms", problems)
    suites = _named(top, "suites", problems)
    out: list[GroupSpec] = []
    for platform, pbody in platforms.items():
        problems.unknown_keys(pbody, PLATFORM_KEYS, f"platforms.{platform}")
    for suite, sbody in suites.items():
        key = f"suites.{suite}"
        problems.unknown_keys(sbody, SUITE_KEYS, key)
        chosen = _platforms_for(suite, sbody, list(platforms), problems)
        if platforms and not chosen:
            problems.add(key, "runs on no platform: its 'includes'/'excludes' leave none of "
                              f"{', '.join(platforms)}; name one, or remove the suite")
        for platform in chosen:
            pbody = platforms[platform]
            driver = problems.field(pbody, "driver", f"platforms.{platform}", str,
                                    expected="a driver URL like 'nspawn:'") or cluster.driver
            options = deep_merge(cluster.machine_options,
                                  _mapping(pbody, "machine_options", f"platforms.{platform}",
                                           problems))
            options = deep_merge(options, _mapping(sbody, "machine_options", key, problems))
            instance = f"{suite}-{platform}"
            if "machines" in sbody:
                extra = [k for k in _MACHINE_KEYS if k in sbody]
                for name in extra:
                    problems.add(f"{key}.{name}", f"a suite with 'machines' sets {name!r} on each "
                                                  "of its groups, not on the suite")
                groups = problems.mapping(sbody["machines"], f"{key}.machines",
                                          "a mapping of group names to settings") or {}
                if not groups and isinstance(sbody["machines"], Mapping):
                    problems.add(f"{key}.machines", "no machines defined: give the suite's "
                                                    "groups, or drop 'machines' for one machine")
                for role, body in groups.items():
                    out.append(GroupSpec(f"{instance}-{role}", body, f"{key}.machines.{role}",
                                         role, instance, driver, options))
            else:
                body = {k: sbody[k] for k in _MACHINE_KEYS if k in sbody}
                out.append(GroupSpec(instance, body, key, suite, instance, driver, options))
    return out


def _named(top: Mapping[str, Any], name: str, problems: Problems) -> dict[str, dict]:
    if name not in top:
        problems.add(name, f"required with {'suites' if name == 'platforms' else 'platforms'}: "
                           f"a mapping of {name[:-1]} names to their settings")
        return {}
    value = problems.mapping(top[name] or {}, name, f"a mapping of {name[:-1]} names to their "
                                                    "settings") or {}
    if not value and name in top:
        problems.add(name, f"no {name} defined")
    out = {}
    for item, body in value.items():
        checked = problems.mapping({} if body is None else body, f"{name}.{item}")
        if checked is not None:
            out[item] = checked
    return out


def _mapping(body: Mapping[str, Any], name: str, key: str, problems: Problems) -> dict:
    if name not in body or body[name] is None:
        return {}
    return problems.mapping(body[name], f"{key}.{name}") or {}


def _platforms_for(suite: str, body: Mapping[str, Any], platforms: list[str],
                   problems: Problems) -> list[str]:
    """The platforms a suite runs on: ``includes`` (only these) then minus ``excludes``."""
    chosen = list(platforms)
    for name in ("includes", "excludes"):
        if name not in body:
            continue
        listed = problems.string_list(body[name], f"suites.{suite}.{name}",
                                      "a list of platform names")
        for index, platform in enumerate(listed):
            if platform not in platforms:
                problems.add(f"suites.{suite}.{name}[{index}]",
                             f"no platform {platform!r}{did_you_mean(platform, platforms)}")
        if name == "includes":
            chosen = [p for p in chosen if p in listed]
        else:
            chosen = [p for p in chosen if p not in listed]
    return chosen
