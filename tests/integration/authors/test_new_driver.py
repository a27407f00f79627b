"""`converge new-driver`: the package it writes installs with pip, registers its scheme through
the entry point, and passes the conformance suite out of the box."""

from __future__ import annotations

import json
import re

import pytest

from provisioning.errors import ConfigError, InvalidDriverURL
from provisioning.scaffold import driver_names, new_driver

from .conftest import clean_env, run


@pytest.fixture(scope="module")
def demo_installed(author_venv, tmp_path_factory):
    """`converge new-driver demo` (the venv's console script), then `pip install` of it."""
    where = tmp_path_factory.mktemp("new-driver")
    made = run([author_venv.converge, "new-driver", "demo", "--output", "json"], cwd=where,
               env=clean_env())
    info = json.loads(made.stdout)
    author_venv.pip_install(info["root"])
    return info


@pytest.mark.slow
def test_generated_package_is_found_through_its_entry_point(author_venv, demo_installed, tmp_path):
    assert demo_installed["package"] == "provisioning-demo"
    probe = ("import json; from provisioning import driver_for_url; "
             "from provisioning.registry import scheme_sources; d = driver_for_url('demo:'); "
             "print(json.dumps([type(d).__module__, type(d).__name__, d.driver_url, "
             "scheme_sources()['demo']]))")
    out = run([author_venv.python, "-c", probe], cwd=tmp_path, env=clean_env()).stdout
    module, cls, url, source = json.loads(out)
    assert (module, cls) == ("provisioning_demo.driver", "DemoDriver")
    assert url == f"demo:{tmp_path / '.provisioning' / 'demo'}"
    assert source == "provisioning-demo 0.1.0"
    # installed from a wheel, not imported from the generated tree
    where = run([author_venv.python, "-c", "import provisioning_demo; print(provisioning_demo.__file__)"],
                cwd=tmp_path, env=clean_env()).stdout
    assert str(author_venv.root) in where


@pytest.mark.slow
def test_generated_package_passes_the_conformance_suite(author_venv, demo_installed):
    result = run([author_venv.python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"],
                 cwd=demo_installed["root"], env=clean_env(), check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 15, result.stdout
    assert "failed" not in result.stdout and "error" not in result.stdout.lower()
    # the conformance cases really ran (not skipped): the crash and race cases are there
    verbose = run([author_venv.python, "-m", "pytest", "-q", "--co", "tests/test_conformance.py"],
                  cwd=demo_installed["root"], env=clean_env()).stdout
    assert "test_crash_between_create_and_save_is_adopted" in verbose
    assert "test_concurrent_allocates_of_one_name_create_one_machine" in verbose
    # the only cases skipped are those the scaffold is honestly not concerned by (a generic
    # driver mounts no folders and captures no images; its local machines speak no SSH, so
    # have no host key to pin): never a case that should have run
    allowed = ("not applicable: the driver declares mounts_folders=False",
               "not applicable: the driver declares images=False",
               "not applicable: the driver's machines do not speak SSH")
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all(any(reason in line for reason in allowed) for line in skips), result.stdout
    assert len(skips) <= len(allowed), result.stdout


@pytest.mark.slow
def test_demo_driver_drives_a_cluster_from_converge_init(author_venv, demo_installed, tmp_path):
    """init with a secret -> the secret is in provisioning.yml (0600), never in the cluster
    file; `converge up --why-run` accepts the file and creates nothing; `converge up` works."""
    (tmp_path / "answers.json").write_text(json.dumps({
        "driver": "demo:", "driver_options": {"api_token": "tok-S3CRET-42"},
        "machine": "app", "count": 2, "machine_options": {"size": "large"}}))
    env = clean_env()
    run([author_venv.converge, "init", "--answers", "answers.json"], cwd=tmp_path, env=env)
    cluster = (tmp_path / "cluster.yml").read_text()
    assert "tok-S3CRET-42" not in cluster
    assert '"demo:"' in cluster and '"large"' in cluster
    secrets = tmp_path / "provisioning.yml"
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert "tok-S3CRET-42" in secrets.read_text()
    plan = run([author_venv.converge, "up", "--why-run", "--output", "json"], cwd=tmp_path, env=env)
    [document] = [json.loads(line) for line in plan.stdout.splitlines() if line.startswith("{")]
    assert document["machines"] and all(m["action"] == "create" for m in document["machines"]), \
        plan.stdout
    assert not (tmp_path / ".provisioning" / "demo").exists(), "why-run must create nothing"
    run([author_venv.converge, "up"], cwd=tmp_path, env=env)
    machines = list((tmp_path / ".provisioning" / "demo").glob("m-*/machine.json"))
    assert len(machines) == 2
    assert all(json.loads(m.read_text())["size"] == "large" for m in machines)
    run([author_venv.converge, "destroy"], cwd=tmp_path, env=env)
    assert not list((tmp_path / ".provisioning" / "demo").glob("m-*"))


def test_new_driver_refuses_to_overwrite(tmp_path, converge):
    first = converge("new-driver", "demo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    driver_py = tmp_path / "provisioning-demo" / "provisioning_demo" / "driver.py"
    driver_py.write_text("# my own work\n")
    again = converge("new-driver", "demo", cwd=tmp_path)
    assert again.returncode == 2
    assert "refusing to overwrite" in again.stderr and "driver.py" in again.stderr
    assert "Traceback" not in again.stderr
    assert driver_py.read_text() == "# my own work\n"


@pytest.mark.parametrize("name, expected", [
    ("Demo", "lower-case"),
    ("9demo", "lower-case"),
    ("my_driver", "lower-case"),
    ("fake", "built into provisioning"),
    ("x+y", "--module"),
])
def test_bad_names_are_refused_with_a_reason(tmp_path, converge, name, expected):
    result = converge("new-driver", name, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written for a bad name"


def test_names_derived_from_a_hyphenated_scheme(tmp_path):
    names = driver_names("my-cloud")
    assert (names.module, names.dist, names.class_name) == (
        "provisioning_my_cloud", "provisioning-my-cloud", "MyCloudDriver")
    made = new_driver("my-cloud", tmp_path)
    for rel in made.files:
        text = (made.root / rel).read_text()
        assert "{{" not in text, f"{rel} kept a placeholder"
        if rel.endswith(".py"):
            compile(text, rel, "exec")
    pyproject = (made.root / "pyproject.toml").read_text()
    assert '"my-cloud" = "provisioning_my_cloud.driver:MyCloudDriver"' in pyproject
    assert (made.root / ".ci" / "run").stat().st_mode & 0o111


def test_module_override_makes_a_plus_scheme_possible(tmp_path):
    made = new_driver("x+y", tmp_path, module="provisioning_xy")
    assert (made.root / "provisioning_xy" / "driver.py").exists()
    with pytest.raises(ConfigError, match="not a valid Python module name"):
        driver_names("ok", module="class")
    with pytest.raises(InvalidDriverURL):
        driver_names("")
