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

import copy
import importlib.util
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from provisioning.driver.requestcheck import MAX_NAME, NAME_RE
from provisioning.errors import ConfigError, ConfigProblem
from provisioning.inputs.schema import Problems, describe_type, did_you_mean, one_or_many

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.healthcheck import HealthCheck
    from provisioning.config import Config
    from provisioning.convergence.base import ConvergenceStrategy
    from provisioning.convergence.steps import Step

__all__ = ["ClusterFile", "MachineDefinition", "VerifyItem", "GroupSpec", "load_cluster",
           "parse_cluster", "DEFAULT_CLUSTER_FILE", "TOP_KEYS", "MACHINE_KEYS",
           "default_cluster_name"]

DEFAULT_CLUSTER_FILE = "cluster.yml"
TOP_KEYS = ("driver", "driver_options", "private_key_paths", "private_keys", "machine_options",
            "machines", "state", "platforms", "suites", "outputs", "images", "name")
MACHINE_KEYS = ("count", "driver", "machine_options", "converge", "healthcheck", "verify",
                "sync", "ports", "after", "prevent_destroy")
MAX_COUNT = 1000


@dataclass(frozen=True)
class VerifyItem:
    """One verification: a command run on the machine, or a directory of pytest (our fixtures)
    or pytest-testinfra tests (its ``host`` fixture) run against it."""

    kind: str          # "command", "pytest" or "testinfra"
    value: str
    key: str


@dataclass(frozen=True)
class MachineDefinition:
    """One machine after count expansion and option merging.

    ``group`` is the name that selects it with its siblings; ``role`` the group as written in
    its scope (``db`` inside instance ``app-bookworm``), which ``after`` and the ``machines``
    template variable use; ``instance`` is the matrix instance (``SUITE-PLATFORM``) it belongs
    to, None in a plain ``machines:`` file. ``strategy``/``settings``: its convergence."""

    name: str
    group: str
    index: int | None
    driver_url: str
    machine_options: Mapping[str, Any]
    steps: tuple["Step", ...] = ()
    healthchecks: tuple["HealthCheck", ...] = ()
    verify: tuple[VerifyItem, ...] = ()
    key: str = ""
    strategy: str = "none"
    settings: Any = None
    after: tuple[str, ...] = ()
    role: str = ""
    instance: str | None = None

    def variables(self) -> dict[str, Any]:
        """What templates see as ``machine`` (name and address are added when it is ready)."""
        return {"name": self.name, "group": self.role or self.group, "index": self.index,
                "instance": self.instance, "driver_url": self.driver_url,
                "options": copy.deepcopy(dict(self.machine_options))}


@dataclass
class ClusterFile:
    """A validated cluster file."""

    path: str
    base_dir: str
    driver: str | None
    driver_options: dict[str, Any] = field(default_factory=dict)
    private_key_paths: list[str] = field(default_factory=list)
    private_keys: dict[str, str] = field(default_factory=dict)
    machine_options: dict[str, Any] = field(default_factory=dict)
    machines: dict[str, MachineDefinition] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    state: str | None = None
    #: matrix instance -> its machine names (empty for a plain ``machines:`` file)
    instances: dict[str, list[str]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    #: ``images:``, name -> provisioning.images.ImageDefinition
    images: dict[str, Any] = field(default_factory=dict)
    #: the cluster's name in the state store (``name:``, else ``default_cluster_name(path)``)
    name: str = ""
    #: groups with ``prevent_destroy: true``: a plan that would destroy one of them is an error
    prevent_destroy: frozenset[str] = frozenset()

    def config(self, base: "Config | None" = None) -> "Config":
        """Settings for this cluster: ``provisioning.yml`` beside it, the environment, then the
        cluster's own driver options and keys."""
        from provisioning.config import Config

        base = base or Config.load(cwd=self.base_dir)
        extra: dict[str, Any] = {"driver_options": self.driver_options,
                                 "private_keys": self.private_keys}
        if self.private_key_paths:
            extra["private_key_paths"] = [os.path.join(self.base_dir, os.path.expanduser(p))
                                          for p in self.private_key_paths] + \
                list(base.data.get("private_key_paths") or [])
        return base.with_data(extra, source=self.path)

    def state_url(self, explicit: str | None, config: "Config | None" = None) -> str | None:
        """--state wins, then $PROVISIONING_STATE (config), then the file's ``state``."""
        return explicit or (config.state if config is not None else None) or self.state

    def select(self, names: Iterable[str] = ()) -> list[MachineDefinition]:
        """Machines by name or group name (all when none given), in file order."""
        names = list(names)
        if not names:
            return list(self.machines.values())
        wanted: list[str] = []
        problems = Problems(self.path)
        for name in names:
            if name in self.machines:
                members = [name]
            elif name in self.groups:
                members = self.groups[name]
            elif name in self.instances:
                members = self.instances[name]
            else:
                choices = list(self.machines) + [g for g in self.groups if g not in self.machines]
                choices += [i for i in self.instances if i not in choices]
                problems.add(f"machines.{name}", f"no machine or group {name!r} in this cluster"
                                                 f"{did_you_mean(name, choices)}")
                continue
            wanted += [m for m in members if m not in wanted]
        problems.raise_if_any()
        return [self.machines[n] for n in self.machines if n in wanted]

    def choose(self, patterns: Iterable[str] = ()) -> list[MachineDefinition]:
        """Machines by name, group, instance, or a regular expression over instance names (and
        machine names), like test-kitchen's ``kitchen verify REGEX``; all when none given."""
        patterns = list(patterns)
        exact = [p for p in patterns if p in self.machines or p in self.groups
                 or p in self.instances]
        chosen = {d.name for d in self.select(exact)} if exact else set()
        for pattern in patterns:
            if pattern in exact:
                continue
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{pattern!r} is no machine, group or instance, nor a valid "
                                  f"regular expression ({exc})", file=self.path) from exc
            found = {d.name for d in self.machines.values()
                     if regex.search(d.instance or d.name) or regex.search(d.name)}
            if not found:
                self.select([pattern])  # raises the did-you-mean for a mistyped name
            chosen |= found
        return [d for d in self.machines.values() if not patterns or d.name in chosen]

    def login_target(self, name: str) -> str:
        """The machine ``converge login NAME`` opens: the machine itself, or the first machine
        of an instance or group (``converge login app-bookworm`` -> ``app-bookworm-db``)."""
        if name in self.machines:
            return name
        members = self.instances.get(name) or self.groups.get(name)
        return members[0] if members else name

    def instance_of(self, definition: MachineDefinition) -> str:
        """The name its verify result is recorded under: its matrix instance, else itself."""
        return definition.instance or definition.name

    def convergence(self, definition: MachineDefinition,
                    machines: Mapping[str, Any] | None = None) -> "ConvergenceStrategy":
        """The machine's strategy, built from its ``converge`` settings; ``machines`` is what
        templates see as ``machines`` (see ``provisioning.cluster.topology.machines_view``)."""
        from provisioning.convergence.base import ConvergenceContext
        from provisioning.convergence.registry import strategy_class

        name = definition.strategy
        if name == "steps" and not definition.settings:
            name = "none"
        context = ConvergenceContext(self.base_dir, self.path,
                                     self.variables(definition, machines))
        return strategy_class(name).from_settings(definition.settings, context)

    def variables(self, definition: MachineDefinition,
                  machines: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Template variables: ``machine``, ``options``, ``cluster`` (names and groups) and
        ``machines`` (group -> machines with their addresses, when known)."""
        return {"machine": definition.variables(),
                "options": copy.deepcopy(dict(definition.machine_options)),
                "cluster": self._cluster_view(),
                # shared, not copied: copying every machine's view for each machine made a
                # fleet's cost grow with the square of its size; templates only read them
                "machines": dict(machines or {})}

    def _cluster_view(self) -> dict[str, Any]:
        """``cluster`` for templates: names and groups, built once per file."""
        view = self.__dict__.get("_view")
        if view is None or len(view["machines"]) != len(self.machines):
            view = {"machines": list(self.machines),
                    "groups": {g: list(m) for g, m in self.groups.items()}, "file": self.path,
                    "name": self.name}
            self.__dict__["_view"] = view
        return view


# -- loading ---------------------------------------------------------------------------------
def load_cluster(path: str = DEFAULT_CLUSTER_FILE) -> ClusterFile:
    """Read and validate a cluster file; raises ConfigError holding every problem."""
    from provisioning.inputs.userfiles import read_user_text
    from provisioning.inputs.yamlfile import load_yaml_text

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

    from provisioning.images.definition import parse_images

    cluster.images = parse_images(top.get("images"), problems, base_dir=base_dir,
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
        from provisioning.cluster.matrix import expand_matrix

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
    from provisioning.cluster.topology import check_order

    check_order(cluster, problems)
    _check_driver_options(cluster, problems)
    problems.raise_if_any()
    from provisioning.cluster.keycheck import key_problems

    urls = {d.driver_url for d in cluster.machines.values()}
    problems.extend(key_problems(cluster, {u: _driver_class(u, "driver", problems) for u in urls}))
    problems.raise_if_any()
    return cluster


@dataclass(frozen=True)
class GroupSpec:
    """One group to expand into machines: ``name`` is its full name (``app-bookworm-db``),
    ``role`` the group as written in its scope (``db``), ``instance`` its matrix instance."""

    name: str
    body: Any
    key: str
    role: str
    instance: str | None
    driver: str | None
    defaults: Mapping[str, Any]


def _add_group(spec: GroupSpec, problems: Problems, cluster: ClusterFile,
               seen: dict[str, str]) -> None:
    """Validate one group's settings and add its machines (``count`` expanded) to the cluster."""
    from provisioning.cluster.healthcheck import parse_healthchecks
    from provisioning.convergence.registry import parse_convergence

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
    driver = problems.field(body, "driver", key, str, expected="a driver URL like 'nspawn:'")
    driver = driver or spec.driver
    if driver is None:
        problems.add(f"{key}.driver", "no driver: set 'driver' here or at the top of the "
                                      "file (for example 'driver: nspawn:')")
    own = problems.mapping(body.get("machine_options") or {}, f"{key}.machine_options") or {}
    options = _deep_merge(spec.defaults, own)
    _local_features(body, key, count, options, problems, cluster.base_dir)
    strategy, settings = parse_convergence(body.get("converge"), f"{key}.converge", problems,
                                           cluster.base_dir)
    checks = parse_healthchecks(body.get("healthcheck"), f"{key}.healthcheck", problems)
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
    from provisioning.driver.local_features import parse_forwarded_ports, parse_synced_folders

    if "sync" in body:
        folders = parse_synced_folders(body["sync"], f"{key}.sync", problems, base_dir)
        options["sync"] = [folder.to_data() for folder in folders]
    if "ports" in body:
        ports = parse_forwarded_ports(body["ports"], f"{key}.ports", problems)
        if ports and count is not None and count > 1:
            problems.add(f"{key}.ports", f"{count} machines cannot all bind the same host "
                                         "ports; forward ports on a machine without count")
        options["ports"] = [str(port) for port in ports]


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
    from provisioning.registry import driver_class
    from provisioning.url import parse_driver_url

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
    from provisioning.driver.options import validate_options

    where_driver = f"{key}.driver" if url != cluster.driver else "driver"
    cls = _driver_class(url, where_driver, problems)
    if cls is None:
        return
    from provisioning.driver.local_features import LOCAL_OPTION_KEYS, check_local_options

    fields = list(getattr(cls, "machine_option_fields", ()))
    found = validate_options(fields, {k: v for k, v in options.items()
                                      if k not in LOCAL_OPTION_KEYS},
                             where=f"{key}.machine_options", file=cluster.path,
                             strict=bool(fields))
    found += check_local_options(options, getattr(cls, "capabilities", None), where=key,
                                 file=cluster.path, driver_url=url)
    known = {(p.key, p.message) for p in problems.items}
    for problem in found:
        option = (problem.key or "").split(".machine_options.", 1)[-1].split(".")[0]
        if option not in own and option in cluster.machine_options:
            problem = ConfigProblem(problem.message, file=cluster.path,
                                    key="machine_options." + problem.key.split(
                                        ".machine_options.", 1)[-1])
        if (problem.key, problem.message) not in known:
            known.add((problem.key, problem.message))
            problems.items.append(problem)


def _check_driver_options(cluster: ClusterFile, problems: Problems) -> None:
    from provisioning.driver.options import validate_options

    for url, options in cluster.driver_options.items():
        if not isinstance(options, Mapping):
            continue
        cls = _driver_class(url, f"driver_options.{url}", problems)
        fields = list(getattr(cls, "driver_option_fields", ()) or ())
        if cls is not None and fields:
            problems.extend(validate_options(fields, options, where=f"driver_options.{url}",
                                             file=cluster.path, strict=True))
