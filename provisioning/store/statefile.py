"""Moving state between stores: ``export_state`` to a JSON document, ``import_state`` back.

The document keeps what a store needs to go on managing the machines (each entry's reference,
last action and error) and the store's id, which drivers tag provider resources with: a fresh
target adopts it, so resources a crashed run created are still found after the move. Secrets
never leave: values under secret-looking keys are dropped and counted.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from provisioning.errors import ConfigError
from provisioning.inputs.userfiles import MAX_OUTPUT_BYTES, read_user_text
from provisioning.keys import write_private_file
from provisioning.spec import SECRET_KEYS, ManagedEntry, entry_field_problems

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.store.base import ManagedEntryStore

__all__ = ["export_state", "import_state", "check_export", "dump", "load", "FORMAT", "FORMAT_VERSION"]

FORMAT = "provisioning-state"
FORMAT_VERSION = 1
_SECRET_PARTS = ("password", "passphrase", "secret", "private_key")


def _is_secret(key: str) -> bool:
    key = key.lower()
    return key in SECRET_KEYS or any(part in key for part in _SECRET_PARTS)


def _strip(value: Any) -> tuple[Any, int]:
    """A copy without secret-looking keys, and how many were dropped."""
    if isinstance(value, dict):
        out, dropped = {}, 0
        for key, item in value.items():
            if _is_secret(str(key)):
                dropped += 1
                continue
            out[key], n = _strip(item)
            dropped += n
        return out, dropped
    if isinstance(value, list):
        items = [_strip(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return copy.deepcopy(value), 0


def export_state(store: "ManagedEntryStore", *,
                 derived: Iterable[str] = ()) -> dict[str, Any]:
    """Every entry of the store as plain data (secrets removed), but for the ``derived`` kinds:
    records a run re-reads from the machines (facts), which would only go stale in the file."""
    skip = set(derived)
    kinds = [kind for kind in store.kinds() if kind not in skip]
    entries, removed = [], 0
    for kind in kinds:
        for entry in store.list(kind):
            reference, dropped = _strip(entry.reference)
            deposed, dropped_deposed = _strip(entry.deposed)
            removed += dropped + dropped_deposed
            item = {"kind": kind, "name": entry.name, "reference": reference,
                    "last_action": entry.last_action, "last_error": entry.last_error,
                    "updated_at": entry.updated_at, "cluster": entry.cluster,
                    "group": entry.group}
            if entry.generation or deposed:  # create_before_destroy's, only when it was used
                item.update(generation=entry.generation, deposed=deposed)
            entries.append(item)
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": store.url, "store_id": store.store_id, "secrets_removed": removed,
            "entries": entries}


def _check(document: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigError(f"not a provisioning state export (no \"format\": \"{FORMAT}\"); "
                          "make one with 'converge state export'", file=where)
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ConfigError(f"state export format {version!r} is newer than this provisioning "
                          f"reads ({FORMAT_VERSION}); upgrade provisioning", file=where,
                          key="format_version")
    entries = document.get("entries")
    if not isinstance(entries, list):
        raise ConfigError("\"entries\" must be a list", file=where, key="entries")
    problems = []
    for index, item in enumerate(entries):
        if not (isinstance(item, dict) and isinstance(item.get("kind"), str)
                and isinstance(item.get("name"), str) and item["name"]):
            problems.append(f"entries[{index}]")
        elif wrong := entry_field_problems(item):
            problems.append(f"entries[{index}] ({', '.join(wrong)})")
    if problems:
        raise ConfigError(f"entries need a kind, a name and a reference mapping: "
                          f"{', '.join(problems[:10])}", file=where, key="entries")
    return entries


def check_export(document: Any, where: str) -> None:
    """Refuse a document ``import_state`` would refuse, before any store is opened."""
    _check(document, where)


def import_state(store: "ManagedEntryStore", document: Any, *, replace: bool = False,
                 where: str = "import") -> dict[str, Any]:
    """Write the document's entries into ``store``. Entries that exist with other contents are
    refused (nothing is written) unless ``replace``."""
    entries = _check(document, where)
    plan: list[tuple[str, dict[str, Any], Any]] = []
    conflicts = []
    for item in entries:
        current = store.get(item["kind"], item["name"])
        reference = item.get("reference") or {}
        if current is not None and current.reference == reference:
            plan.append(("unchanged", item, current))
        elif current is not None and current.exists:
            conflicts.append(f"{item['kind']} {item['name']!r}")
            plan.append(("replace", item, current))
        else:
            plan.append(("create", item, current))
    if conflicts and not replace:
        raise ConfigError(f"{len(conflicts)} entries already exist in {store.url} with other "
                          f"contents: {', '.join(conflicts[:10])}; pass --replace to overwrite "
                          "them", file=where)
    warning = None
    source_id = document.get("store_id")
    if isinstance(source_id, str) and source_id:
        target_id = store._meta("store_id", source_id)  # a fresh store takes the source's id
        store._store_id = target_id
        if target_id != source_id:
            warning = (f"the target store has its own id ({target_id}, the export's is "
                       f"{source_id}): resources a crashed run left behind are not adopted by "
                       "tag after the move; run 'converge up' on the old state first")
    counts = {"create": 0, "replace": 0, "unchanged": 0}
    for action, item, current in plan:
        counts[action] += 1
        if action == "unchanged":
            continue
        entry = ManagedEntry.from_row(item["kind"], item["name"], "{}",
                                      current.version if current is not None else 0, store=store)
        entry.reference = item.get("reference") or {}
        entry.last_action = item.get("last_action")
        entry.last_error = item.get("last_error")
        entry.cluster, entry.group = item.get("cluster"), item.get("group")
        entry.generation = int(item.get("generation") or 0)
        entry.deposed = list(item.get("deposed") or [])
        entry.save()
    return {"target": store.url, "created": counts["create"], "replaced": counts["replace"],
            "unchanged": counts["unchanged"], "warning": warning}


def dump(document: dict[str, Any], target: str) -> None:
    """Write an export to a file (mode 0600, atomically) or standard output ('-')."""
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        write_private_file(target, text.encode("utf-8"), create_dirs=False)
    except OSError as exc:
        raise ConfigError(f"cannot write the export: {exc.strerror}", file=target) from exc


def load(source: str) -> Any:
    """Read an export from a file or standard input ('-')."""
    try:
        if source == "-":
            return json.load(sys.stdin)
        # bounded and regular files only: ``state import /dev/zero`` must not read for ever
        return json.loads(read_user_text(source, what="state export", limit=MAX_OUTPUT_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not a JSON state export: {exc}", file=source) from exc
    except RecursionError as exc:  # "[[[[..." nested deeper than any export is
        raise ConfigError("not a state export: JSON nested too deeply; make one with "
                          "'converge state export'", file=source) from exc
