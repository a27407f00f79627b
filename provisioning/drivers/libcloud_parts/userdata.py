"""Userdata: a Jinja template rendered per machine (VmShepherd-style), jinja2 imported lazily.

``userdata`` is the template text, or ``file://PATH`` (relative to the config's base dir). The
template sees ``name``, ``machine_options``, ``driver_url``, ``region`` and ``vars`` (the
``userdata_vars`` option, also available by their own names). Undefined names are errors, not
empty strings, so a typo cannot boot a machine with a broken script.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from provisioning.errors import ConfigError

__all__ = ["load_userdata_template", "render_userdata"]


def load_userdata_template(value: str, base_dir: str) -> tuple[str, str]:
    """(template text, where it came from) for the ``userdata`` option."""
    if value.startswith("file://"):
        path = os.path.join(base_dir, os.path.expanduser(value[len("file://"):]))
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read(), path
        except OSError as exc:
            raise ConfigError(f"userdata template {path} cannot be read: {exc.strerror}",
                              key="machine_options.userdata") from exc
    return value, "machine_options.userdata"


def render_userdata(value: str | None, *, name: str, machine_options: Mapping[str, Any],
                    driver_url: str, region: str, base_dir: str) -> str | None:
    if not value:
        return None
    import jinja2

    text, where = load_userdata_template(value, base_dir)
    variables = dict(machine_options.get("userdata_vars") or {})
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    shown = {k: v for k, v in machine_options.items() if k not in ("userdata",)}
    try:
        return env.from_string(text).render(**variables, vars=variables, name=name,
                                            machine_options=shown, driver_url=driver_url,
                                            region=region)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise ConfigError(f"userdata template for {name!r} ({where}"
                          f"{f', line {line}' if line else ''}) does not render: {exc}",
                          key="machine_options.userdata", machine=name) from exc
