"""`converge init`: answers checked at the step they are given, a cluster file `converge up
--why-run` accepts, secrets only in the config's credentials, and a real terminal session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from provisioning.config import Config
from provisioning.driver import Driver
from provisioning.driver.options import OptionField
from provisioning.errors import ConfigError
from provisioning.registry import register_driver
from provisioning.scaffold.wizard import FileAnswers, InitWizard, render_cluster_file, write_init_outputs

from .conftest import converge_script


def write_answers(path, answers) -> str:
    path.write_text(yaml.safe_dump(answers))
    return str(path)


def test_answers_make_a_cluster_file_that_up_why_run_accepts(tmp_path, converge):
    write_answers(tmp_path / "answers.yml", {
        "driver": "fake:", "machine": "web", "count": 2, "machine_options": {"size": "medium"}})
    made = converge("init", "--answers", "answers.yml", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    text = (tmp_path / "cluster.yml").read_text()
    comments = [line for line in text.splitlines() if line.strip().startswith("#")]
    assert len(comments) >= 8, "the cluster file explains itself in comments"
    assert any("simulated server size" in line for line in comments), "options carry their help"
    data = yaml.safe_load(text)
    assert data == {"driver": "fake:", "machines": {
        "web": {"count": 2, "machine_options": {"size": "medium"}}}}
    plan = converge("up", "--why-run", "--output", "json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    [document] = [json.loads(line) for line in plan.stdout.splitlines() if line.startswith("{")]
    planned = {m["name"]: m for m in document["machines"]}
    assert {n: m["action"] for n, m in planned.items()} == {"web-1": "create", "web-2": "create"}
    assert any("medium" in s["description"] for m in planned.values() for s in m["steps"])
    from provisioning.drivers.fake import FakeWarehouse
    warehouse = FakeWarehouse(str(tmp_path / ".provisioning" / "fake"))
    assert warehouse.servers() == {} and warehouse.counters()["creates"] == 0, \
        "why-run created a server"


@pytest.mark.parametrize("answers, key, expected", [
    ({"driver": "fake:", "count": "three"}, "count", "expected an integer, got 'three'"),
    ({"driver": "fake:", "count": 2.5}, "count", "expected int"),
    ({"driver": "fake:", "machine_options": {"size": "huge"}}, "machine_options.size",
     "unknown size 'huge'; choices: small, medium, large"),
    ({"driver": "fakee:"}, "driver", "did you mean 'fake'"),
    ({"driver": "fake:", "machine": "Web_1"}, "machine", "lower-case"),
    ({"driver": "fake:", "machine_options": {"sise": "large"}}, "machine_options.sise",
     "did you mean 'machine_options.size'"),
])
def test_a_wrong_answer_is_reported_at_its_step(tmp_path, converge, answers, key, expected):
    write_answers(tmp_path / "answers.yml", answers)
    result = converge("init", "--answers", "answers.yml", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"answers.yml: {key}:" in result.stderr and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cluster.yml").exists()


def test_the_step_number_is_named(tmp_path):
    wizard = InitWizard(FileAnswers({"driver": "fake:", "machine": "db", "count": "x"},
                                    file="a.yml"), Config(base_dir=str(tmp_path)))
    with pytest.raises(ConfigError) as caught:
        wizard.run()
    assert caught.value.key == "count" and "step 3 (how many machines)" in str(caught.value)


def test_init_refuses_to_replace_a_cluster_file_and_needs_a_terminal(tmp_path, converge):
    (tmp_path / "cluster.yml").write_text("driver: fake:\nmachines: {}\n")
    write_answers(tmp_path / "answers.yml", {"driver": "fake:"})
    refused = converge("init", "--answers", "answers.yml", cwd=tmp_path)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    assert (tmp_path / "cluster.yml").read_text() == "driver: fake:\nmachines: {}\n"
    forced = converge("init", "--answers", "answers.yml", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    no_tty = converge("init", "-f", "other.yml", cwd=tmp_path)  # stdin is /dev/null here
    assert no_tty.returncode == 2 and "--answers FILE" in no_tty.stderr


class SecretiveDriver(Driver):
    """A driver with a required secret and a choice that is a function of the warehouse."""

    scheme = "authors-secretive"
    driver_option_fields = (
        OptionField("endpoint", default="https://api.invalid", help="API endpoint"),
        OptionField("password", secret=True, required=True, help="API password"),
    )
    machine_option_fields = (
        OptionField("network", choices_from=lambda driver: driver.networks(), help="network"),
        OptionField("disks", type="list", default=[], help="disk sizes"),
    )

    def networks(self):
        assert self.options_with_secrets()["password"] == "pw-Very-Secret", \
            "choices are listed with the secret the wizard was given"
        return ["net-a", "net-b"]

    def allocate_machine(self, *a): raise NotImplementedError
    def ready_machine(self, *a): raise NotImplementedError
    def connect_to_machine(self, *a): raise NotImplementedError
    def stop_machine(self, *a): raise NotImplementedError
    def destroy_machine(self, *a): raise NotImplementedError


@pytest.fixture
def secretive():
    register_driver(SecretiveDriver.scheme, SecretiveDriver)
    return SecretiveDriver


def test_secrets_go_to_credentials_never_into_the_cluster_file(tmp_path, secretive):
    answers = {"driver": "authors-secretive:", "driver_options": {"password": "pw-Very-Secret"},
               "machine": "db", "count": "1",
               "machine_options": {"network": "net-b", "disks": "10, 20"}}
    result = InitWizard(FileAnswers(answers, file="a.yml"), Config(base_dir=str(tmp_path))).run()
    assert result.credentials == {"password": "pw-Very-Secret"}
    assert result.machine_options == {"network": "net-b", "disks": ["10", "20"]}
    cluster, config = tmp_path / "cluster.yml", tmp_path / "provisioning.yml"
    config.write_text("parallel: 3\n")
    write_init_outputs(result, str(cluster), str(config))
    assert "pw-Very-Secret" not in cluster.read_text()
    assert "provisioning.yml" in cluster.read_text(), "the file says where the secret went"
    assert config.stat().st_mode & 0o777 == 0o600
    saved = yaml.safe_load(config.read_text())
    assert saved["parallel"] == 3, "existing settings are kept"
    assert saved["credentials"] == {"authors-secretive:": {"password": "pw-Very-Secret"}}
    # a driver built from that config sees the secret, through credentials only
    loaded = Config.load(cwd=str(tmp_path), environ={})
    from provisioning.registry import driver_for_url
    driver = driver_for_url("authors-secretive:", loaded)
    assert "password" not in driver.driver_options
    assert driver.options_with_secrets()["password"] == "pw-Very-Secret"


def test_choices_from_a_function_of_the_warehouse_are_enforced(tmp_path, secretive):
    answers = {"driver": "authors-secretive:", "driver_options": {"password": "pw-Very-Secret"},
               "machine_options": {"network": "net-z"}}
    with pytest.raises(ConfigError, match="unknown network 'net-z'; choices: net-a, net-b"):
        InitWizard(FileAnswers(answers), Config(base_dir=str(tmp_path))).run()


def test_a_missing_required_secret_is_reported(tmp_path, secretive):
    with pytest.raises(ConfigError, match="an answer is required: API password") as caught:
        InitWizard(FileAnswers({"driver": "authors-secretive:"}),
                   Config(base_dir=str(tmp_path))).run()
    assert caught.value.key == "driver_options.password"


def test_render_refuses_a_secret_that_leaked_into_a_value(tmp_path, secretive):
    result = InitWizard(FileAnswers({
        "driver": "authors-secretive:", "driver_options": {"password": "pw-Very-Secret"},
        "machine": "pw-very-secret"}), Config(base_dir=str(tmp_path))).run()
    # a machine named like the secret (case differs) is fine; the exact secret is not
    render_cluster_file(result)
    from dataclasses import replace
    leaked = replace(result, machine_options={"network": "pw-Very-Secret"})
    with pytest.raises(Exception, match="contains a secret"):
        render_cluster_file(leaked)


@pytest.mark.slow
def test_wizard_in_a_real_terminal(tmp_path, terminal, converge):
    term = terminal([converge_script(), "init"], cwd=tmp_path)
    term.expect("driver URL")
    term.expect("driver [")
    term.send("fake:")
    term.expect("machine name")
    term.send("")                       # Enter: the default, web
    term.expect("how many machines")
    term.send("three")
    term.expect("expected an integer, got 'three'")
    term.expect("count [1]:")
    term.send("2")
    term.expect("machine option size")
    term.expect("choices: small, medium, large")
    term.send("huge")
    term.expect("unknown size 'huge'; choices: small, medium, large")
    term.expect("machine_options.size [small]:")
    term.send("large")
    for name in ("image", "transport", "ready_delay"):
        term.expect(f"machine option {name}")
        term.expect("]:")
        term.send("")
    term.expect("machine option hold_ready_until")
    term.expect("(Enter to skip):")
    term.send("")
    term.expect("wrote")
    assert term.wait() == 0, term.seen
    data = yaml.safe_load((tmp_path / "cluster.yml").read_text())
    assert data["machines"]["web"] == {"count": 2, "machine_options": {"size": "large"}}
    assert converge("up", "--why-run", cwd=tmp_path).returncode == 0


@pytest.mark.slow
def test_wizard_hides_a_secret_typed_in_a_terminal(tmp_path, terminal, secretive):
    """The secret's prompt does not echo it, and it lands in provisioning.yml only. The driver
    is registered in this process, so the wizard runs in a child forked from it."""
    import sys

    script = (
        "import sys, os\n"
        "sys.path.insert(0, %r)\n"
        "from tests.integration.authors.test_init import SecretiveDriver\n"
        "from provisioning.registry import register_driver\n"
        "register_driver(SecretiveDriver.scheme, SecretiveDriver)\n"
        "from provisioning.cli.main import main\n"
        "sys.exit(main(['init']))\n") % str(Path(__file__).resolve().parents[3])
    term = terminal([sys.executable, "-c", script], cwd=tmp_path)
    term.expect("driver [")
    term.send("authors-secretive:")
    term.expect("driver_options.endpoint [https://api.invalid]:")
    term.send("")
    term.expect("driver_options.password:")
    term.send("pw-Very-Secret")
    term.expect("machine name")
    term.send("db")
    term.expect("count [1]:")
    term.send("")
    term.expect("choices: net-a, net-b")
    term.send("net-a")
    term.expect("machine_options.disks")
    term.send("")
    term.expect("wrote")
    assert term.wait() == 0, term.seen
    assert "pw-Very-Secret" not in term.seen, "a secret typed at the terminal was echoed"
    assert "pw-Very-Secret" not in (tmp_path / "cluster.yml").read_text()
    assert "pw-Very-Secret" in (tmp_path / "provisioning.yml").read_text()
