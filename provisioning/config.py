"""Config: layered settings with the source of every value remembered.

Layers, lowest first: built-in defaults < ``./provisioning.yml`` < the file named by
``$PROVISIONING_CONFIG`` < ``PROVISIONING_*`` environment variables < explicit arguments.
Mappings merge key by key; everything else is replaced by the higher layer.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Mapping

from provisioning.errors import ConfigError
from provisioning.inputs.yamlfile import load_yaml_file

__all__ = ["Config", "DEFAULTS", "load_yaml_file", "check_environment", "MAX_PARALLEL"]

#: the most machines acted on at once: each is a thread (and, on a PostgreSQL state, may hold a
#: connection); more is a typo, not a speed-up
MAX_PARALLEL = 256

DEFAULTS: dict[str, Any] = {
    "driver_options": {},          # driver URL (given or canonical) -> options
    "private_keys": {},            # key name -> path or PEM text
    "private_key_paths": [],       # directories searched for NAME and NAME.pem
    "key_passphrases": {},         # key name -> passphrase (or env PROVISIONING_KEY_PASSPHRASE)
    "state": None,                 # state store URL; None: SQLite beside the cluster file
    "parallel": 10,                # machines acted on at once
    "lock_ttl": 30.0,              # seconds a dead runner's lock outlives it
    "credentials": {},             # secrets by driver URL; never written to cluster files or state
}

#: environment variables read into config (name -> key, parser)
_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "PROVISIONING_STATE": ("state", str),
    "PROVISIONING_PARALLEL": ("parallel", int),
    "PROVISIONING_LOCK_TTL": ("lock_ttl", float),
    "PROVISIONING_PRIVATE_KEY_PATHS": ("private_key_paths", lambda v: v.split(os.pathsep)),
}


_WANTED = {"PROVISIONING_PARALLEL": "a whole number", "PROVISIONING_LOCK_TTL": "a number"}
#: every variable a command reads as a name, path, number or setting: what ``check_environment``
#: checks (others of the prefix are not ours to refuse: a CI job may keep, say, a multi-line
#: key in PROVISIONING_DEPLOY_KEY for its own scripts)
READ_FROM_ENVIRONMENT = frozenset({*_ENV, "PROVISIONING_CONFIG", "PROVISIONING_FAULT",
                                   "PROVISIONING_NSPAWN_IMAGE_CACHE",
                                   "PROVISIONING_LIBVIRT_IMAGE_CACHE", "PROVISIONING_MACHINE"})


def _shown(value: str) -> str:
    """A value as an error shows it: quoted, escaped, cut to stay on one screen."""
    return repr(value[:60]) + (f" (and {len(value) - 60} more characters)"
                               if len(value) > 60 else "")


def check_environment(env: Mapping[str, str]) -> None:
    """ConfigError naming the first variable of ``READ_FROM_ENVIRONMENT`` set that holds a
    control or format character (newline, escape, bidi override) or bytes that are not valid
    text: such a value names a state file, a config file or a directory no one meant, so it
    is refused before anything reads or writes it. Passphrases are secrets: any text."""
    for var in sorted(READ_FROM_ENVIRONMENT.intersection(env)):
        value = env[var]
        if value.isprintable():
            continue
        at, char = next((i, c) for i, c in enumerate(value) if not c.isprintable())
        what = ("a byte that is not valid UTF-8" if "\udc80" <= char <= "\udcff"
                else f"the character {char!r}")
        raise ConfigError(f"environment variable {var} holds {what} at position {at + 1} "
                          f"({_shown(value)}); set it again without it, or unset it "
                          f"(unset {var})", key=var)


def _merge(base: dict[str, Any], top: Mapping[str, Any], sources: dict[str, str], source: str,
           prefix: str = "") -> None:
    for key, value in top.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, sources, source, path + ".")
        else:
            base[key] = copy.deepcopy(value)
            sources[path] = source


def _number_problems(data: Mapping[str, Any], sources: Mapping[str, str]) -> list[str]:
    """``parallel`` a whole number from 1 to ``MAX_PARALLEL``, ``lock_ttl`` a finite number of
    seconds above 0."""
    import math

    problems = []
    parallel = data.get("parallel")
    if isinstance(parallel, bool) or not isinstance(parallel, int) \
            or not 1 <= parallel <= MAX_PARALLEL:
        problems.append(f"parallel ({sources.get('parallel', 'default')}) must be a whole number "
                        f"from 1 to {MAX_PARALLEL}, got {parallel!r}")
    ttl = data.get("lock_ttl")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) \
            or ttl <= 0:
        problems.append(f"lock_ttl ({sources.get('lock_ttl', 'default')}) must be a number of "
                        f"seconds above 0, got {ttl!r}")
    return problems


class Config:
    """Merged settings. ``sources`` maps each key path to the layer that set it."""

    def __init__(self, data: Mapping[str, Any] | None = None, *,
                 sources: Mapping[str, str] | None = None, base_dir: str | None = None) -> None:
        merged = copy.deepcopy(DEFAULTS)
        self.sources: dict[str, str] = {k: "default" for k in DEFAULTS}
        if sources:
            self.sources.update(sources)
        if data:
            _merge(merged, data, self.sources, "explicit")
            if sources:
                self.sources.update(sources)
        self.data = merged
        self.base_dir = os.path.abspath(base_dir or os.getcwd())
        self._validate()

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, explicit: Mapping[str, Any] | None = None, *, cwd: str | None = None,
             environ: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if environ is None else environ
        check_environment(env)
        cwd = os.path.abspath(cwd or os.getcwd())
        data: dict[str, Any] = copy.deepcopy(DEFAULTS)
        sources: dict[str, str] = {k: "default" for k in DEFAULTS}
        layers: list[tuple[str, Any]] = []
        local = os.path.join(cwd, "provisioning.yml")
        if os.path.exists(local):
            layers.append((local, load_yaml_file(local)))
        named = env.get("PROVISIONING_CONFIG")
        if named:
            layers.append((named, load_yaml_file(named)))
        for source, layer in layers:
            if layer is None:
                continue
            if not isinstance(layer, Mapping):
                raise ConfigError("a config file must be a mapping of settings", file=source)
            _merge(data, layer, sources, source)
        env_layer: dict[str, Any] = {}
        for var, (key, parse) in _ENV.items():
            if var in env:
                try:
                    env_layer[key] = parse(env[var])
                except ValueError:
                    raise ConfigError(f"environment variable {var}={_shown(env[var])} is not "
                                      f"{_WANTED.get(var, 'valid')}; set it to one, or unset it "
                                      f"(unset {var})", key=var) from None
                sources[key] = f"env {var}"
        data.update(env_layer)
        if explicit:
            _merge(data, explicit, sources, "explicit")
        config = cls.__new__(cls)
        config.data = data
        config.sources = sources
        config.base_dir = cwd
        config._validate()
        return config

    def _validate(self) -> None:
        problems = []
        for key in ("driver_options", "private_keys", "key_passphrases", "credentials"):
            if not isinstance(self.data.get(key), Mapping):
                problems.append(f"{key} must be a mapping")
        if not isinstance(self.data.get("private_key_paths"), list):
            problems.append("private_key_paths must be a list of directories")
        problems += _number_problems(self.data, self.sources)
        if problems:
            raise ConfigError("; ".join(problems), file=self.sources.get("driver_options"))

    def with_data(self, explicit: Mapping[str, Any], *, source: str = "explicit") -> "Config":
        """A copy with ``explicit`` merged on top (for one cluster file or one command)."""
        clone = Config.__new__(Config)
        clone.data = copy.deepcopy(self.data)
        clone.sources = dict(self.sources)
        clone.base_dir = self.base_dir
        _merge(clone.data, explicit, clone.sources, source)
        clone._validate()
        return clone

    def to_data(self) -> dict[str, Any]:
        """Plain data that rebuilds this config in another process: ``Config(data)``."""
        return copy.deepcopy(self.data)

    # -- accessors -------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def state(self) -> str | None:
        return self.data.get("state")

    @property
    def private_keys(self) -> dict[str, str]:
        keys: dict[str, str] = self.data["private_keys"]
        return keys

    @property
    def private_key_paths(self) -> list[str]:
        return [os.path.join(self.base_dir, os.path.expanduser(p))
                for p in self.data["private_key_paths"]]

    def driver_options_for(self, *urls: str) -> dict[str, Any]:
        """Options for a driver: those under each URL given (later ones win), merged."""
        out: dict[str, Any] = {}
        table = self.data["driver_options"]
        for url in urls:
            if url in table and isinstance(table[url], Mapping):
                _merge(out, table[url], {}, url)
        return out

    def credentials_for(self, *urls: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for url in urls:
            value = self.data["credentials"].get(url)
            if isinstance(value, Mapping):
                out.update(value)
        return out

    def explain(self) -> list[tuple[str, Any, str]]:
        """(key, value, source) for every top-level setting: ``converge config show``."""
        rows = []
        for key in sorted(self.data):
            value = self.data[key]
            if key in ("credentials", "key_passphrases") and value:
                value = {k: "***" for k in value}
            rows.append((key, value, self.sources.get(key, "explicit")))
        return rows
