"""The driver guide exists and covers the contract; a driver written from it, outside this
package (examples/driver-outside), installs with pip and passes the conformance suite."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from .conftest import REPO, clean_env, run

GUIDE = REPO / "docs" / "driver-guide.md"
EXAMPLE = REPO / "examples" / "driver-outside"


def test_guide_covers_the_contract():
    text = GUIDE.read_text()
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    for method in ("allocate_machine", "ready_machine", "connect_to_machine", "stop_machine",
                   "destroy_machine"):
        assert any(method in h for h in headings), f"no section on {method}"
    for topic in ("canonical", "reference", "idempotency token", "why-run", "capabilities",
                  "errors to raise", "conformance suite", "publishing"):
        assert any(topic in h.lower() for h in headings), f"no section on {topic}"
    assert '[project.entry-points."provisioning.drivers"]' in text
    assert "DriverConformance" in text and "converge new-driver" in text


def test_example_lives_outside_the_package_and_uses_only_public_pieces():
    source = (EXAMPLE / "provisioning_slots" / "driver.py").read_text()
    assert not (REPO / "provisioning" / "drivers" / "slots.py").exists()
    imported = set(re.findall(r"^from (provisioning[\w.]*) import", source, flags=re.M))
    assert imported == {"provisioning.driver"}, imported  # the driver author's one import
    pyproject = (EXAMPLE / "pyproject.toml").read_text()
    assert '"slots" = "provisioning_slots.driver:SlotsDriver"' in pyproject


@pytest.fixture(scope="module")
def outside_installed(author_venv, tmp_path_factory):
    copy = tmp_path_factory.mktemp("outside") / "driver-outside"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                 "__pycache__"))
    author_venv.pip_install(str(copy))
    return copy


@pytest.mark.slow
def test_outside_driver_passes_the_conformance_suite(author_venv, outside_installed):
    result = run([author_venv.python, "-m", "pytest", "-q", "-rs"], cwd=outside_installed,
                 env=clean_env(), check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 15, result.stdout
    assert "failed" not in result.stdout


@pytest.mark.slow
def test_drivers_lists_installed_packages_and_describes_them(author_venv, outside_installed,
                                                            tmp_path):
    listed = run([author_venv.converge, "drivers", "--output", "json"], cwd=tmp_path,
                 env=clean_env())
    rows = {r["scheme"]: r for r in json.loads(listed.stdout)["drivers"]}
    assert rows["slots"]["package"] == "provisioning-slots"
    assert rows["slots"]["version"] == "0.1.0" and rows["slots"]["source"] == "entry point"
    assert rows["fake"]["package"] == "provisioning" and rows["fake"]["installed"] is True
    text = run([author_venv.converge, "drivers"], cwd=tmp_path, env=clean_env()).stdout
    assert re.search(r"slots\s+provisioning-slots\s+0\.1\.0", text), text
    described = run([author_venv.converge, "drivers", "describe", "slots:", "--output", "json"],
                    cwd=tmp_path, env=clean_env())
    info = json.loads(described.stdout)
    assert info["driver_url"] == f"slots:{tmp_path / '.provisioning' / 'slots'}"
    profile = next(f for f in info["machine_options"] if f["name"] == "profile")
    assert profile["choices"] == ["plain", "build"], "choices from a function of the driver"
    assert info["capabilities"]["stoppable"] is False
    slots = next(f for f in info["driver_options"] if f["name"] == "slots")
    assert (slots["type"], slots["default"]) == ("int", 8)


def test_the_guides_code_blocks_run_with_current_names():
    """Every python block of docs/driver-guide.md runs (fragments see the driver module's
    names), importing nothing through a moved, deprecated name."""
    import warnings

    import provisioning.driver

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "driver-guide.md").read_text(),
                        flags=re.S)
    assert len(blocks) >= 3
    for index, block in enumerate(blocks):
        namespace = {name: getattr(provisioning.driver, name) for name in provisioning.driver.__all__}
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            exec(compile(block, f"driver-guide.md block {index}", "exec"), namespace)
