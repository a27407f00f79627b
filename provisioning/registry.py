"""Scheme -> Driver class. Lazy: classes are imported on first use.

Lookup order: ``register_driver`` calls; the built-in module ``provisioning.driver_init.<scheme>``;
the entry-point group ``provisioning.drivers`` (read once through importlib.metadata, and only for
a scheme that is not built in).
"""

from __future__ import annotations

import importlib.util
import threading
from typing import TYPE_CHECKING, Any

import provisioning.driver_init as builtin_drivers
from provisioning.config import Config
from provisioning.errors import ConfigError, DriverNotFound, MissingExtra
from provisioning.inputs.schema import closest
from provisioning.inputs.url import parse_driver_url, validate_scheme
from provisioning.lazy import EntryPoints, load

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.driver import Driver

__all__ = ["register_driver", "driver_class", "driver_for_url", "canonical_url", "known_schemes",
           "scheme_sources", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "provisioning.drivers"
#: pip packages we know provide schemes we do not ship (for DriverNotFound's hint)
KNOWN_PACKAGES = {"vagrant": "provisioning-vagrant", "vsphere": "provisioning-vsphere"}

_lock = threading.Lock()
_registered: dict[str, Any] = {}        # scheme -> class or "module:Class"
_entry_points = EntryPoints(ENTRY_POINT_GROUP)


def register_driver(scheme: str, cls_or_path: Any) -> None:
    """Register a driver class (or a lazy ``"module:Class"`` string) for a scheme."""
    validate_scheme(scheme)
    with _lock:
        _registered[scheme] = cls_or_path


def reload_entry_points() -> None:
    """Forget the cached entry points (after installing a driver package in this process)."""
    _entry_points.forget()


def _builtin_schemes() -> list[str]:
    import pkgutil  # only to list the schemes (its listing imports inspect): not on a start-up
    return [m.name for m in pkgutil.iter_modules(builtin_drivers.__path__) if not m.name.startswith("_")]


def _is_builtin(scheme: str) -> bool:
    """Whether ``_builtin_schemes()`` holds ``scheme``, found without listing them all."""
    return (scheme.isidentifier() and not scheme.startswith("_")
            and importlib.util.find_spec(f"{builtin_drivers.__name__}.{scheme}") is not None)


def known_schemes() -> list[str]:
    return sorted(set(_registered) | set(_entry_points.all()) | set(_builtin_schemes()))


def scheme_sources() -> dict[str, str]:
    """scheme -> where it comes from: 'registered', a distribution 'name version', or 'built-in'."""
    out: dict[str, str] = {s: "built-in" for s in _builtin_schemes()}
    for scheme, ep in _entry_points.all().items():
        dist = getattr(ep, "dist", None)
        out[scheme] = f"{dist.name} {dist.version}" if dist is not None else "entry point"
    for scheme in _registered:
        out[scheme] = "registered"
    return out


def _resolve(target: Any) -> "type[Driver]":
    resolved: type[Driver] = load(target) if isinstance(target, str) else target
    return resolved


def driver_class(scheme: str) -> "type[Driver]":
    """The Driver class for a scheme, importing it now if needed: registered first, then the
    built-in drivers, then installed packages' entry points (so a package never shadows a
    built-in scheme, and a built-in scheme costs no scan of installed packages)."""
    with _lock:
        target = _registered.get(scheme)
    if target is not None:
        return _resolve(target)
    if _is_builtin(scheme):  # before entry points: reading those costs every command
        return _resolve(load(f"{builtin_drivers.__name__}.{scheme}:DRIVER"))
    ep = _entry_points.get(scheme)
    if ep is not None:
        loaded: type[Driver] = ep.load()
        return loaded
    known = known_schemes()
    close = closest(scheme, known)
    hint = f"did you mean {close[0]!r}?" if close else None
    if scheme in KNOWN_PACKAGES:
        hint = f"install it with: pip install {KNOWN_PACKAGES[scheme]}"
    raise DriverNotFound(scheme, known, hint)


def canonical_url(url: str, config: "Config") -> str:
    """The one spelling of a driver URL (``fake:./cloud`` -> ``fake:/abs/cloud``), without
    building the driver (``status`` shows it for machines not created yet)."""
    parsed = parse_driver_url(url)
    cls = driver_class(parsed.scheme)
    try:
        return cls.canonicalize_url(str(parsed), config)
    except ImportError as exc:
        raise MissingExtra(f"the {parsed.scheme}: driver", cls.extra or parsed.scheme,
                           exc.name or str(exc)) from exc


def driver_for_url(url: str, config: "Config | None" = None) -> "Driver":
    """The driver for a URL, built on its canonical form with the options of both URLs merged."""
    config = config or Config.load()
    parsed = parse_driver_url(url)
    cls = driver_class(parsed.scheme)
    canonical = canonical_url(url, config)
    if parse_driver_url(canonical).scheme != parsed.scheme:
        raise ConfigError(f"driver for {parsed.scheme!r} canonicalized {url!r} to another scheme "
                          f"({canonical!r}); this is a bug in that driver", key="driver")
    given = str(parsed)
    if given != canonical and config.driver_options_for(given):
        merged = config.driver_options_for(given, url, canonical)
        config = config.with_data({"driver_options": {canonical: merged}})
    return cls.from_url(canonical, config)
