"""``converge drivers``: the registered schemes, and what one driver URL offers."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, pass_settings


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
    """List driver schemes and the package providing each."""
    from provisioning.registry import known_schemes, scheme_sources

    sources = scheme_sources()
    rows = [{"scheme": s, "package": sources.get(s, "?"), "example": f"{s}:"}
            for s in known_schemes()]
    settings.renderer(live=False).table(("SCHEME", "PACKAGE"), rows, ("scheme", "package"),
                                        {"event": "drivers", "drivers": rows})
    return 0


@drivers.command("describe")
@click.argument("url")
@common_options
@pass_settings
def describe(settings, url: str) -> int:
    """Show a driver's options, choices and capabilities for URL (e.g. fake: or nspawn:)."""
    from provisioning.config import Config
    from provisioning.registry import driver_for_url

    driver = driver_for_url(url, Config.load())
    info = driver.describe().to_dict()
    renderer = settings.renderer(live=False)
    if settings.json:
        renderer.message("", record={"event": "driver", **info})
        return 0
    lines = [f"{info['driver_url']} (scheme {info['scheme']})"]
    for title, key in (("driver options", "driver_options"), ("machine options", "machine_options")):
        lines.append(f"{title}:")
        for field in info[key] or []:
            default = f" (default {field['default']!r})" if field.get("default") not in (None, {}) else ""
            choices = f" one of: {', '.join(map(str, field['choices']))}" if field.get("choices") else ""
            lines.append(f"  {field['name']}: {field['type']}{default}{choices}  {field['help']}")
        if not info[key]:
            lines.append("  (none)")
    for name, values in (info.get("choices") or {}).items():
        lines.append(f"{name}: {', '.join(map(str, values)) or '(none)'}")
    lines.append("capabilities: " + ", ".join(k for k, v in info["capabilities"].items() if v))
    renderer.message("\n".join(lines))
    return 0
