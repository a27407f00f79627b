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
from provisioning.inputs.templating import render_text
from provisioning.inputs.userfiles import MAX_TEMPLATE_BYTES, read_user_text

__all__ = ["load_userdata_template", "render_userdata"]


def load_userdata_template(value: str, base_dir: str) -> tuple[str, str]:
    """(template text, where it came from) for the ``userdata`` option."""
    if value.startswith("file://"):
        path = os.path.join(base_dir, os.path.expanduser(value[len("file://"):]))
        return read_user_text(path, what="userdata template", limit=MAX_TEMPLATE_BYTES,
                              key="machine_options.userdata"), path
    return value, "machine_options.userdata"


def render_userdata(value: str | None, *, name: str, machine_options: Mapping[str, Any],
                    driver_url: str, region: str, base_dir: str) -> str | None:
    if not value:
        return None
    text, where = load_userdata_template(value, base_dir)
    variables = dict(machine_options.get("userdata_vars") or {})
    shown = {k: v for k, v in machine_options.items() if k not in ("userdata",)}
    try:
        return render_text(text, {**variables, "vars": variables, "name": name,
                                  "machine_options": shown, "driver_url": driver_url,
                                  "region": region},
                           file=None, key="machine_options.userdata",
                           label=f"userdata template for {name!r} ({where})")
    except ConfigError as exc:
        raise ConfigError(exc.problems[0].message, key="machine_options.userdata",
                          machine=name) from exc
