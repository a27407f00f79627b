"""``converge drivers``: the registered schemes, and what one driver URL offers."""

from __future__ import annotations

from typing import Any

import click

from provisioning import __version__
from provisioning.cli.common import common_options, pass_settings
from provisioning.config import Config
from provisioning.driver.options import DriverDescription
from provisioning.errors import DriverNotFound, InvalidDriverURL, ProvisioningError
from provisioning.inputs.url import parse_driver_url
from provisioning.registry import driver_class, driver_for_url, known_schemes, scheme_sources


@click.group(invoke_without_command=True)
@common_options
@click.pass_context
def drivers(ctx: click.Context) -> int | None:
    """List driver schemes and the package providing each (or: drivers describe URL)."""
    if ctx.invoked_subcommand is None:
        return ctx.invoke(list_)
    return None


@drivers.command("list")
@common_options
@pass_settings
def list_(settings) -> int:
    """List driver schemes, the package and version providing each, and whether the pip extra
    it needs is installed."""
    rows = scheme_rows()
    settings.renderer(live=False).table(
        ("SCHEME", "PACKAGE", "VERSION", "EXTRA", "INSTALLED"), rows,
        ("scheme", "package", "version", "extra", "installed"), {"event": "drivers", "drivers": rows})
    return 0


def scheme_rows() -> list[dict]:
    """One row per known scheme: package, version, source, the extra it needs, and whether that
    extra (or, for a third-party package, the driver itself) imports."""
    sources = scheme_sources()
    rows = []
    for scheme in known_schemes():
        source = sources.get(scheme, "?")
        if source == "built-in":
            package, version = "provisioning", __version__
        elif " " in source:
            package, version = source.rsplit(" ", 1)
            source = "entry point"
        else:
            package, version = source, None
        row: dict[str, Any] = {"scheme": scheme, "package": package, "version": version, "source": source,
               "extra": None, "installed": True, "missing": []}
        try:
            cls = driver_class(scheme)
        except ImportError as exc:
            row.update(installed=False, missing=[exc.name or str(exc)])
        else:
            extra = cls.extra
            if extra and source == "built-in":
                row["extra"] = extra
                row["missing"] = _missing_requirements(extra)
                row["installed"] = not row["missing"]
        rows.append(row)
    return rows


def _missing_requirements(extra: str) -> list[str]:
    """Distributions that ``pip install 'provisioning[EXTRA]'`` would add and are absent."""
    import re
    from importlib import metadata

    try:
        requirements = metadata.requires("provisioning") or []
    except metadata.PackageNotFoundError:
        return []
    missing = []
    for line in requirements:
        requirement, _, marker = line.partition(";")
        if not re.search(r"""extra\s*==\s*["']""" + re.escape(extra) + r"""["']""", marker):
            continue
        name = re.split(r"[\s<>=!~\[(;]", requirement.strip(), maxsplit=1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def describe_url(url: str) -> dict:
    """``describe()`` of the driver for URL as plain data, each field with the choices the
    warehouse offers for it. When the driver cannot be built here (missing credentials, an
    unreachable warehouse) its declared fields are still shown, with the reason in
    ``choices_error``."""
    config = Config.load()
    driver = None
    try:
        driver = driver_for_url(url, config)
        description = driver.describe()
    except (DriverNotFound, InvalidDriverURL):
        raise
    except (ProvisioningError, ImportError) as exc:
        cls = type(driver) if driver is not None else driver_class(parse_driver_url(url).scheme)
        info = DriverDescription(scheme=cls.scheme,
                                 driver_url=driver.driver_url if driver is not None else url,
                                 driver_options=list(cls.driver_option_fields),
                                 machine_options=list(cls.machine_option_fields),
                                 capabilities=cls.capabilities.to_dict()).to_dict()
        info["choices_error"] = str(exc)
        return info
    info = description.to_dict()
    for key, fields in (("driver_options", description.driver_options),
                        ("machine_options", description.machine_options)):
        for item, row in zip(fields, info[key]):
            try:
                allowed = driver.choices_for(item, description.choices)
            except ProvisioningError as exc:
                info["choices_error"] = str(exc)
                continue
            if allowed is not None:
                row["choices"] = allowed
    return info


@drivers.command("describe")
@click.argument("url")
@common_options
@pass_settings
def describe(settings, url: str) -> int:
    """Show a driver's options, choices and capabilities for URL (e.g. fake: or nspawn:)."""
    info = describe_url(url)
    renderer = settings.renderer(live=False)
    if settings.json:
        renderer.message("", record={"event": "driver", **info})
        return 0
    lines = [f"{info['driver_url']} (scheme {info['scheme']})"]
    for title, key in (("driver options", "driver_options"), ("machine options", "machine_options")):
        lines.append(f"{title}:")
        for field in info[key] or []:
            marks = [m for m in ("required", "secret") if field.get(m)]
            default = f" (default {field['default']!r})" if field.get("default") not in (None, {}) else ""
            choices = f" one of: {', '.join(map(str, field['choices']))}" if field.get("choices") else ""
            mark = f" [{', '.join(marks)}]" if marks else ""
            lines.append(f"  {field['name']}: {field['type']}{mark}{default}{choices}  {field['help']}")
        if not info[key]:
            lines.append("  (none)")
    for name, values in (info.get("choices") or {}).items():
        lines.append(f"{name}: {', '.join(map(str, values)) or '(none)'}")
    if info.get("choices_error"):
        lines.append(f"choices not listed: {info['choices_error']}")
    lines.append("capabilities: " + ", ".join(k for k, v in info["capabilities"].items() if v))
    renderer.message("\n".join(lines))
    return 0
