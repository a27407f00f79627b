"""The cluster file: load, validate (every problem at once, each with its key path), expand counts.

::

    driver: nspawn:                     # default for every machine
    driver_options: {"nspawn:": {...}}  # per driver URL
    private_key_paths: [./keys]
    machine_options: {transport: {username: root}}   # merged under each machine's own
    name: shop                          # the cluster's name in a shared state (default below)
    state: .provisioning/state.db       # optional; --state and $PROVISIONING_STATE win
    machines:
      web:
        count: 2                        # web-1, web-2 (lowering it destroys the highest)
        prevent_destroy: true           # any planned destroy of this group is an error
        create_before_destroy: true     # a replace creates the new machine, then destroys the old
        machine_options: {...}
        converge: [{file: {...}}, {command: {...}}]
        healthcheck: {tcp: "{{ machine.address }}:22"}
        verify: [test -f /etc/motd]
        sync: [{from: ./app, to: /srv/app}]   # synced folders (docs: local machines)
        ports: ["127.0.0.1:8080:80"]          # forwarded ports, loopback by default
      app:
        after: [web]                    # converged once every web machine is up
        converge: {ansible: {playbook: site.yml}}   # another strategy (a list means steps)
    outputs: {url: "http://{{ machines.web[0].address }}/"}

Instead of ``machines``, a file may give ``platforms`` x ``suites`` (test-kitchen's matrix, see
``provisioning.cluster.matrix``): instances ``SUITE-PLATFORM``.

Relative paths (sources, templates, key directories, the state file) are relative to the
cluster file's directory.

Every machine in a state store belongs to one cluster, named by ``name:``; without it the name
is the cluster file's directory name, with the file's stem appended unless it is ``cluster``
(``~/shop/cluster.yml`` is ``shop``, ``~/shop/db.yml`` is ``shop-db``), so every checkout of
one repository gets the same name.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any, Mapping

from provisioning.cluster.healthcheck import parse_healthchecks
from provisioning.cluster.keycheck import key_problems
from provisioning.cluster.matrix import expand_matrix
from provisioning.cluster.model import ClusterFile, GroupSpec, MachineDefinition, VerifyItem, deep_merge
from provisioning.cluster.topology import check_order
from provisioning.convergence.registry import parse_convergence
from provisioning.driver.local_features import (
    check_local_options,
    parse_forwarded_ports,
    parse_synced_folders,
)
from provisioning.driver.options import LOCAL_OPTION_KEYS, driver_option_problems, validate_options
from provisioning.driver.requestcheck import MAX_NAME, NAME_RE
from provisioning.errors import ConfigError, ConfigProblem
from provisioning.images.definition import parse_images
from provisioning.inputs.schema import Problems, describe_type, did_you_mean, one_or_many
from provisioning.inputs.url import parse_driver_url
from provisioning.inputs.userfiles import read_user_text
from provisioning.inputs.yamlfile import load_yaml_text
from provisioning.registry import driver_class
from provisioning.transports.ssh.option_keys import check_transport_options

__all__ = ["ClusterFile", "MachineDefinition", "VerifyItem", "GroupSpec", "load_cluster",
           "parse_cluster", "DEFAULT_CLUSTER_FILE", "TOP_KEYS", "MACHINE_KEYS",
           "default_cluster_name"]

DEFAULT_CLUSTER_FILE = "cluster.yml"
TOP_KEYS = ("driver", "driver_options", "private_key_paths", "private_keys", "machine_options",
            "machines", "state", "platforms", "suites", "outputs", "images", "name")
MACHINE_KEYS = ("count", "driver", "machine_options", "converge", "healthcheck", "verify",
                "sync", "ports", "after", "prevent_destroy", "create_before_destroy")
MAX_COUNT = 1000


# -- loading ---------------------------------------------------------------------------------
def load_cluster(path: str = DEFAULT_CLUSTER_FILE) -> ClusterFile:
    """Read and validate a cluster file; raises ConfigError holding every problem."""
    if os.path.isdir(path):
        raise ConfigError(f"is a directory; pass the cluster file itself (-f {path}/cluster.yml)",
                          file=path)
    if not os.path.lexists(path):
        raise ConfigError("cluster file not found; create one (see docs/cluster-file.md) or pass "
                          "-f FILE", file=path)
    text = read_user_text(path, what="cluster file")
    try:
        data = load_yaml_text(text, path)
    except ConfigError as exc:
        raise _with_yaml_hint(exc, text) from exc.__cause__
    return parse_cluster(data, path)


def _with_yaml_hint(exc: ConfigError, text: str) -> ConfigError:
    """A YAML error on a line like ``driver: nspawn:`` gets the fix: quote the URL."""
    match = re.match(r"line (\d+)", exc.key or "")
    if not match:
        return exc
    try:
        line = text.splitlines()[int(match.group(1)) - 1]
    except IndexError:
        return exc
    if re.search(r":\s+[a-z][a-z0-9+.-]*:(\S*:)*\s*(#.*)?$", line):
        return ConfigError(f"{exc.problems[0].message}; a value ending in ':' must be quoted in "
                           f"YAML, e.g. driver: \"nspawn:\" (or write the bare scheme: nspawn)",
                           file=exc.file, key=exc.key)
    return exc


def default_cluster_name(path: str) -> str:
    """The name of a cluster file without ``name:``: its directory's name, plus its stem unless
    that is ``cluster`` (lower-cased, other characters turned into '-')."""
    path = os.path.abspath(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    parts = [os.path.basename(os.path.dirname(path)) or "cluster"]
    if stem != "cluster":
        parts.append(stem)
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    return slug[:MAX_NAME].strip("-") or "cluster"


def parse_cluster(data: Any, path: str) -> ClusterFile:
    """Validate already-parsed cluster data (a mapping) that came from ``path``."""
    path = os.path.abspath(path)
    base_dir = os.path.dirname(path)
    problems = Problems(path)
    if data is None:
        problems.add(None, "the file is empty; expected a mapping with at least 'machines'")
        problems.raise_if_any()
    top = problems.mapping(data, "", "a mapping with 'machines' (and optionally driver, "
                                     "machine_options, ...)")
    if top is None:
        problems.raise_if_any()
    assert top is not None
    problems.unknown_keys(top, TOP_KEYS, "")

    default_driver = problems.field(top, "driver", "", str, expected="a driver URL like 'nspawn:'")
    driver_options = problems.mapping(top.get("driver_options", {}), "driver_options",
                                      "a mapping of driver URL to options") or {}
    for url, options in driver_options.items():
        problems.mapping(options, f"driver_options.{url}", "a mapping of options")
    key_paths = problems.string_list(top.get("private_key_paths", []), "private_key_paths",
                                     "a list of directories") if "private_key_paths" in top else []
    private_keys = problems.string_map(top["private_keys"], "private_keys") \
        if "private_keys" in top else {}
    defaults = problems.mapping(top.get("machine_options", {}) or {}, "machine_options") or {}
    state = problems.field(top, "state", "", str, expected="a state URL or path")
    if state and "://" not in state and state != "memory:":
        state = os.path.join(base_dir, os.path.expanduser(state))

    name = problems.field(top, "name", "", str, expected="the cluster's name")
    if name is not None and (not NAME_RE.match(name) or len(name) > MAX_NAME):
        problems.add("name", f"invalid cluster name {name!r}: use lower-case letters, digits and "
                             f"'-' (not at either end), at most {MAX_NAME} characters")
    cluster = ClusterFile(path=path, base_dir=base_dir, driver=default_driver,
                          driver_options=dict(driver_options), private_key_paths=key_paths,
                          private_keys=private_keys, machine_options=defaults, state=state,
                          name=name or default_cluster_name(path))

    if top.get("images") is not None:
        cluster.images = parse_images(top["images"], problems, base_dir=base_dir,
                                      default_driver=default_driver, defaults=defaults,
                                      name_re=NAME_RE, max_name=MAX_NAME)
    for image in cluster.images.values():
        if image.driver_url:
            _check_driver(image.driver_url, image.builder_options(), image.machine_options,
                          image.key_path, problems, cluster)
    matrix = "platforms" in top or "suites" in top
    machines = top.get("machines")
    if matrix:
        if "machines" in top:
            problems.add("machines", "a file has either 'machines' or 'platforms' and 'suites' "
                                     "(a suite may hold its own 'machines'); not both")
        groups = expand_matrix(top, problems, cluster)
    else:
        if "machines" not in top:
            problems.add("machines", "required: a mapping of machine names to their settings "
                                     "(or 'platforms' and 'suites')")
            machines = {}
        machines = problems.mapping(machines, "machines", "a mapping of machine names to "
                                                          "settings (not a list)") or {}
        if "machines" in top and not machines and isinstance(top.get("machines"), Mapping):
            problems.add("machines", "no machines defined")
        groups = [GroupSpec(group, body, f"machines.{group}", group, None, default_driver,
                            defaults) for group, body in machines.items()]
    seen: dict[str, str] = {}
    for spec in groups:
        _add_group(spec, problems, cluster, seen)
    if "outputs" in top:
        cluster.outputs = problems.string_map(top["outputs"], "outputs")
    check_order(cluster, problems)
    _check_driver_options(cluster, problems)
    # the key files in the same round as everything else: one run names every problem (an
    # unknown driver is already reported above, so its lookup here records nothing)
    urls = {d.driver_url for d in cluster.machines.values()}
    quiet = Problems(path)
    problems.extend(key_problems(cluster, {u: _driver_class(u, "driver", quiet) for u in urls}))
    problems.raise_if_any()
    return cluster


def _add_group(spec: GroupSpec, problems: Problems, cluster: ClusterFile,
               seen: dict[str, str]) -> None:
    """Validate one group's settings and add its machines (``count`` expanded) to the cluster."""
    group, key = spec.name, spec.key
    if not NAME_RE.match(group) or len(group) > MAX_NAME:
        problems.add(key, f"invalid machine name {group!r}: use lower-case letters, digits and "
                          f"'-' (not at either end), at most {MAX_NAME} characters")
        return
    body = problems.mapping({} if spec.body is None else spec.body, key,
                            "a mapping of machine settings")
    if body is None:
        return
    problems.unknown_keys(body, MACHINE_KEYS, key)
    count = problems.field(body, "count", key, int, expected="a whole number of machines")
    if count is not None and not 1 <= count <= MAX_COUNT:
        problems.add(f"{key}.count", f"expected a number from 1 to {MAX_COUNT}, got {count}")
        count = None
    if problems.field(body, "prevent_destroy", key, bool, expected="true or false"):
        cluster.prevent_destroy = cluster.prevent_destroy | {group}
    if problems.field(body, "create_before_destroy", key, bool, expected="true or false"):
        cluster.create_before_destroy = cluster.create_before_destroy | {group}
    driver = problems.field(body, "driver", key, str, expected="a driver URL like 'nspawn:'")
    driver = driver or spec.driver
    if driver is None:
        problems.add(f"{key}.driver", "no driver: set 'driver' here or at the top of the "
                                      "file (for example 'driver: nspawn:')")
    own = problems.mapping(body.get("machine_options") or {}, f"{key}.machine_options") or {}
    options = deep_merge(spec.defaults, own)
    _local_features(body, key, count, options, problems, cluster.base_dir)
    strategy, settings = parse_convergence(body.get("converge"), f"{key}.converge", problems,
                                           cluster.base_dir)
    checks = []
    if body.get("healthcheck") is not None:
        checks = parse_healthchecks(body["healthcheck"], f"{key}.healthcheck", problems)
    verify = _parse_verify(body.get("verify"), f"{key}.verify", problems, cluster.base_dir)
    after = tuple(problems.string_list(body["after"], f"{key}.after", "a list of group names")
                  ) if "after" in body else ()
    if driver is not None:
        _check_driver(driver, _with_image_base(options, driver, key, problems, cluster),
                      own, key, problems, cluster)
    if "count" in body:
        names = [f"{group}-{i}" for i in range(1, (count or 0) + 1)]
        indexes: list[int | None] = list(range(1, len(names) + 1))
    else:
        names, indexes = [group], [None]
    for name, index in zip(names, indexes):
        if name in seen:
            problems.add(key, f"machine name {name!r} is defined twice (by {seen[name]} and "
                              f"{key}); rename one")
            continue
        if len(name) > MAX_NAME:
            problems.add(key, f"machine name {name!r} is longer than {MAX_NAME} characters; "
                              "use shorter suite, platform or group names")
            continue
        seen[name] = key
        cluster.machines[name] = MachineDefinition(
            name=name, group=group, index=index, driver_url=driver or "",
            machine_options=options, steps=tuple(settings) if strategy == "steps" else (),
            healthchecks=tuple(checks), verify=tuple(verify), key=key, strategy=strategy,
            settings=settings, after=after, role=spec.role, instance=spec.instance)
        if spec.instance is not None:
            cluster.instances.setdefault(spec.instance, []).append(name)
    cluster.groups[group] = names


def _with_image_base(options: dict[str, Any], driver: str, key: str, problems: Problems,
                     cluster: ClusterFile) -> dict[str, Any]:
    """Options as the driver will see them: an ``image`` naming one of the file's images is
    checked as that image's base (the built image id replaces it at ``up``)."""
    image = cluster.images.get(options.get("image"))  # type: ignore[arg-type]
    if image is None:
        return options
    if image.driver_url != driver:
        problems.add(f"{key}.machine_options.image", f"image {image.name!r} is built with "
                                                     f"driver {image.driver_url!r}, this machine "
                                                     f"uses {driver!r}; use one driver for both")
    return {**options, "image": image.base}


def _local_features(body: Mapping[str, Any], key: str, count: int | None,
                    options: dict[str, Any], problems: Problems, base_dir: str) -> None:
    """``sync`` and ``ports`` go to the driver as ``machine_options["sync"|"ports"]``."""
    if "sync" not in body and "ports" not in body:
        return
    if "sync" in body:
        folders = parse_synced_folders(body["sync"], f"{key}.sync", problems, base_dir)
        options["sync"] = [folder.to_data() for folder in folders]
    if "ports" in body:
        ports = parse_forwarded_ports(body["ports"], f"{key}.ports", problems)
        if ports and count is not None and count > 1:
            problems.add(f"{key}.ports", f"{count} machines cannot all bind the same host "
                                         "ports; forward ports on a machine without count")
        options["ports"] = [str(port) for port in ports]


VERIFY_KINDS = ("pytest", "testinfra")


def _parse_verify(value: Any, key: str, problems: Problems, base_dir: str) -> list[VerifyItem]:
    if value is None:
        return []
    out = []
    for item, where in one_or_many(value, key):
        if isinstance(item, str) and item.strip():
            out.append(VerifyItem("command", item, where))
        elif isinstance(item, Mapping) and len(item) == 1 and next(iter(item)) in VERIFY_KINDS:
            kind = next(iter(item))
            if not isinstance(item[kind], str):
                problems.add(f"{where}.{kind}", f"expected a directory of tests, got "
                                                f"{describe_type(item[kind])}")
                continue
            directory = os.path.join(base_dir, os.path.expanduser(item[kind]))
            if kind == "testinfra" and importlib.util.find_spec("testinfra") is None:
                problems.add(f"{where}.{kind}", "testinfra verify needs the Python package "
                                                "'pytest-testinfra'; install it with: pip install "
                                                "'provisioning[testinfra]'")
            elif not os.path.exists(directory):
                problems.add(f"{where}.{kind}", f"{directory} does not exist (paths are relative "
                                                "to the cluster file)")
            else:
                out.append(VerifyItem(kind, directory, where))
        elif isinstance(item, Mapping):
            extra = [k for k in item if k not in VERIFY_KINDS] or list(item)[1:]
            problems.add(f"{where}.{extra[0]}", f"unknown key {extra[0]!r}"
                                                f"{did_you_mean(str(extra[0]), VERIFY_KINDS)}"
                         if extra[0] not in VERIFY_KINDS else
                         "one of pytest, testinfra per verify entry")
        else:
            problems.add(where, f"expected a command (string), {{pytest: DIR}} or "
                                f"{{testinfra: DIR}}, got {describe_type(item)}")
    return out


_driver_classes: dict[str, Any] = {}


def _driver_class(url: str, key: str, problems: Problems) -> Any:
    """The driver class for a URL, or None after recording why there is none."""
    try:
        scheme = parse_driver_url(url).scheme
        if scheme not in _driver_classes:
            _driver_classes[scheme] = driver_class(scheme)
        return _driver_classes[scheme]
    except ConfigError as exc:
        problems.add(key, exc.problems[0].message if exc.problems else exc.message)
    except ImportError as exc:
        problems.add(key, f"the driver for {url!r} cannot be loaded ({exc}); is its package "
                          "installed?")
    return None


def _check_driver(url: str, options: Mapping[str, Any], own: Mapping[str, Any], key: str,
                  problems: Problems, cluster: ClusterFile) -> None:
    where_driver = f"{key}.driver" if url != cluster.driver else "driver"
    cls = _driver_class(url, where_driver, problems)
    if cls is None:
        return
    local = [k for k in LOCAL_OPTION_KEYS if k in options]
    fields = list(cls.machine_option_fields)
    found = validate_options(fields, {k: v for k, v in options.items() if k not in local},
                             where=f"{key}.machine_options", file=cluster.path,
                             strict=bool(fields))
    if local:  # most machines have neither
        found += check_local_options(options, cls.capabilities, where=key,
                                     file=cluster.path, driver_url=url)
    found += _ssh_transport_problems(fields, options, f"{key}.machine_options", cluster.path)
    known = {(p.key, p.message) for p in problems.items}
    for problem in found:
        option = (problem.key or "").split(".machine_options.", 1)[-1].split(".")[0]
        if option not in own and option in cluster.machine_options:
            problem = ConfigProblem(problem.message, file=cluster.path,
                                    key="machine_options." + (problem.key or "").split(
                                        ".machine_options.", 1)[-1])
        if (problem.key, problem.message) not in known:
            known.add((problem.key, problem.message))
            problems.items.append(problem)


def _ssh_transport_problems(fields: list, options: Mapping[str, Any], where: str,
                            path: str) -> list[ConfigProblem]:
    """A driver declaring ``transport`` as one mapping (``libcloud:``) gets its SSH transport
    keys checked here too (typos, ports, a non-text host_key), not first at allocate."""
    transport = options.get("transport")
    if not isinstance(transport, Mapping) or transport.get("kind", "ssh") != "ssh" or \
            not any(f.name == "transport" for f in fields):
        return []
    try:
        check_transport_options(transport, f"{where}.transport")
    except ConfigError as exc:
        return [ConfigProblem(p.message, file=path, key=p.key) for p in exc.problems]
    return []


def _check_driver_options(cluster: ClusterFile, problems: Problems) -> None:
    for url, options in cluster.driver_options.items():
        if not isinstance(options, Mapping):
            continue
        cls = _driver_class(url, f"driver_options.{url}", problems)
        if cls is not None:
            problems.extend(driver_option_problems(cls, options, where=f"driver_options.{url}",
                                                   file=cluster.path))
