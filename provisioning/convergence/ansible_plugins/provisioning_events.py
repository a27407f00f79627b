"""An ansible callback plugin: every task result of a run as one JSON line, for our count.

Loaded by ``provisioning.convergence.ansible`` through ``ANSIBLE_CALLBACK_PLUGINS``; it writes
to the file named by ``$PROVISIONING_ANSIBLE_EVENTS``. Each line: ``status`` (ok, changed,
failed, unreachable, skipped), ``task``, ``host``, ``action``, ``msg`` and, under ``--diff``,
the ``diff`` ansible reported. Changes are counted from these, never guessed from text.
"""

from __future__ import annotations

import json
import os
import threading

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: provisioning_events
    type: notification
    short_description: task results as JSON lines for provisioning
    description: Writes each task result to the file named by PROVISIONING_ANSIBLE_EVENTS.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "provisioning_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._path = os.environ.get("PROVISIONING_ANSIBLE_EVENTS")
        self._lock = threading.Lock()

    def _write(self, status: str, result, **extra) -> None:
        if not self._path:
            return
        body = getattr(result, "_result", {}) or {}
        task = getattr(result, "_task", None)
        host = getattr(result, "_host", None)
        record = {"status": status,
                  "task": task.get_name() if task is not None else "",
                  "action": getattr(task, "action", "") if task is not None else "",
                  "host": host.get_name() if host is not None else "",
                  "msg": str(body.get("msg") or body.get("stderr") or "")[:2000]}
        diff = body.get("diff")
        if diff and status == "changed":
            record["diff"] = _short_diff(diff)
        record.update(extra)
        with self._lock, open(self._path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str) + "\n")

    def v2_runner_on_ok(self, result) -> None:
        changed = bool((getattr(result, "_result", {}) or {}).get("changed"))
        self._write("changed" if changed else "ok", result)

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        self._write("ignored" if ignore_errors else "failed", result)

    def v2_runner_on_unreachable(self, result) -> None:
        self._write("unreachable", result)

    def v2_runner_on_skipped(self, result) -> None:
        self._write("skipped", result)


def _short_diff(diff) -> list[dict]:
    """The paths a diff is about (not the content: it may hold secrets)."""
    items = diff if isinstance(diff, list) else [diff]
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append({k: item[k] for k in ("before_header", "after_header") if k in item})
    return out
