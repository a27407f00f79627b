"""Helpers for the CLI tests: run the real ``converge`` console script, fake copies of the
example cluster."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_runner import CONVERGE, converge  # noqa: F401  (the tests import them from here)

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"


def main_in_fresh_interpreter(tmp_path, argv: list[str], never: tuple[str, ...]):
    """``converge ARGV`` in a new interpreter; its last line says which of ``never`` it loaded
    and the exit status. What the interpreter's own start-up loaded (a site-packages .pth may
    load tempfile and shutil before any code of ours runs) is not the command's doing: only
    what the command adds counts."""
    code = ("import sys\nbefore = set(sys.modules)\nfrom provisioning.cli.main import main\n"
            f"rc = main({argv!r})\n"
            "added = set(sys.modules) - before\n"
            f"print('LOADED', sorted(m for m in {never!r} "
            "if any(k == m or k.startswith(m + '.') for k in added)), rc)")
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, check=True)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def fake_copy(source: Path, target: Path) -> Path:
    """The example cluster on the fake: driver: same steps, paths made relative (a fake
    machine's files live in its own directory)."""
    shutil.copytree(source, target)
    cluster = target / "cluster.yml"
    text = cluster.read_text()
    text = text.replace('driver: "nspawn:"', 'driver: "fake:"')
    text = re.sub(r"(?<=[\s\"'\[{(])/(etc|srv)/", r"\1/", text)
    text = text.replace('args: ["/"]', 'args: ["."]')
    cluster.write_text(_without_images(text))
    return cluster


def _without_images(text: str) -> str:
    """Leave out the example's images and the machines booting from them (text cut, so the
    rest stays as written): they install Debian packages, which a fake machine (this host)
    must never do."""
    import yaml

    data = yaml.safe_load(text)
    images = data.get("images") or {}
    gone = [name for name, body in data["machines"].items()
            if ((body or {}).get("machine_options") or {}).get("image") in images]
    text = re.sub(r"(?m)^images:\n(?:(?:[ #].*)?\n)*", "", text)
    for name in gone:
        text = re.sub(rf"(?m)^  {re.escape(name)}:.*\n(?:(?:    .*)?\n)*", "", text)
    return text


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A fake: copy of examples/ in a temporary directory; returns its directory."""
    fake_copy(EXAMPLES, tmp_path / "example")
    return tmp_path / "example"


def warehouse_counters(directory: Path) -> dict:
    from provisioning.drivers.fake import FakeWarehouse

    return FakeWarehouse(str(directory / ".provisioning" / "fake")).counters()


def warehouse_servers(directory: Path) -> dict:
    from provisioning.drivers.fake import FakeWarehouse

    return FakeWarehouse(str(directory / ".provisioning" / "fake")).servers()


def saved_machines(directory: Path) -> list[str]:
    from provisioning.store.sqlite import SQLiteStore

    path = directory / ".provisioning" / "state.db"
    if not path.exists():
        return []
    store = SQLiteStore(str(path))
    try:
        return [e.name for e in store.list("machine")]
    finally:
        store.close()
