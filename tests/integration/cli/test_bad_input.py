"""Malformed cluster files and bad command lines: exit status 2, a one-screen message naming the
file and the key (or the option), never a traceback. Run through the real console script."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.integration.cli.helpers import converge, json_lines

GOOD_MACHINE = "machines:\n  web: {}\n"

#: (id, cluster file text, expected key path, expected words in the message)
BAD_FILES = [
    ("yaml-syntax", "machines:\n  web: {\n", "line", "not valid YAML"),
    ("unquoted-driver-url", 'driver: fake:\nmachines: {web: {}}\n', "line 1", 'driver: "nspawn:"'),
    ("empty-file", "", None, "the file is empty"),
    ("top-level-list", "- web\n- db\n", None, "expected a mapping"),
    ("unknown-top-key", 'driver: "fake:"\nmachnies: {}\nmachines: {web: {}}\n', "machnies",
     "did you mean 'machines'?"),
    ("machines-missing", 'driver: "fake:"\n', "machines", "required"),
    ("machines-is-list", 'driver: "fake:"\nmachines: [web, db]\n', "machines", "not a list"),
    ("no-machines", 'driver: "fake:"\nmachines: {}\n', "machines", "no machines defined"),
    ("machine-not-mapping", 'driver: "fake:"\nmachines: {web: 3}\n', "machines.web",
     "expected a mapping of machine settings"),
    ("bad-machine-name", 'driver: "fake:"\nmachines: {Web_1: {}}\n', "machines.Web_1",
     "invalid machine name"),
    ("count-string", 'driver: "fake:"\nmachines: {web: {count: three}}\n', "machines.web.count",
     "expected a whole number"),
    ("count-zero", 'driver: "fake:"\nmachines: {web: {count: 0}}\n', "machines.web.count",
     "from 1 to"),
    ("count-bool", 'driver: "fake:"\nmachines: {web: {count: true}}\n', "machines.web.count",
     "got true"),
    ("name-collision", 'driver: "fake:"\nmachines: {web: {count: 2}, web-2: {}}\n',
     "machines.web-2", "defined twice"),
    ("unknown-machine-key", 'driver: "fake:"\nmachines: {web: {convrege: []}}\n',
     "machines.web.convrege", "did you mean 'converge'?"),
    ("bad-driver-url", 'driver: "Fake Driver:"\nmachines: {web: {}}\n', "driver",
     "not valid"),
    ("unknown-scheme", 'driver: "fak:"\nmachines: {web: {}}\n', "driver", "did you mean 'fake'?"),
    ("no-driver", "machines: {web: {}}\n", "machines.web.driver", "no driver"),
    ("unknown-machine-option", 'driver: "fake:"\nmachines: {web: {machine_options: {sise: small}}}\n',
     "machines.web.machine_options.sise", "did you mean 'size'?"),
    ("option-choice", 'driver: "fake:"\nmachines: {web: {machine_options: {size: huge}}}\n',
     "machines.web.machine_options.size", "expected one of small, medium, large"),
    ("top-level-option", 'driver: "fake:"\nmachine_options: {imag: x}\nmachines: {web: {}}\n',
     "machine_options.imag", "did you mean 'image'?"),
    ("converge-not-list", 'driver: "fake:"\nmachines: {web: {converge: {file: {}}}}\n',
     "machines.web.converge", "expected a list of steps"),
    ("two-kinds-in-step", 'driver: "fake:"\nmachines: {web: {converge: [{command: ls, directory: /x}]}}\n',
     "machines.web.converge[0]", "one step per list item"),
    ("unknown-step-kind", 'driver: "fake:"\nmachines: {web: {converge: [{fiel: {path: /x}}]}}\n',
     "machines.web.converge[0].fiel", "did you mean 'file'?"),
    ("file-without-path", 'driver: "fake:"\nmachines: {web: {converge: [{file: {content: x}}]}}\n',
     "machines.web.converge[0].file.path", "required"),
    ("file-two-sources", 'driver: "fake:"\nmachines: {web: {converge: [{file: {path: /x, content: a, source: b}}]}}\n',
     "machines.web.converge[0].file", "exactly one of content, source, template"),
    ("file-bad-mode", 'driver: "fake:"\nmachines:\n  web:\n    converge:\n      - command: ls\n      - directory: /x\n      - file: {path: /etc/motd, content: hi, mode: rw-r--r--}\n',
     "machines.web.converge[2].file.mode", "octal mode"),
    ("file-decimal-mode", 'driver: "fake:"\nmachines: {web: {converge: [{file: {path: /x, content: a, mode: 644}}]}}\n',
     "machines.web.converge[0].file.mode", 'quote the mode: "0644"'),
    ("missing-source", 'driver: "fake:"\nmachines: {web: {converge: [{file: {path: /x, source: nothere.txt}}]}}\n',
     "machines.web.converge[0].file.source", "does not exist"),
    ("template-syntax", 'driver: "fake:"\nmachines: {web: {converge: [{file: {path: /x, template: broken.j2}}]}}\n',
     "machines.web.converge[0].file.template", "line 1"),
    ("command-unknown-key", 'driver: "fake:"\nmachines: {web: {converge: [{command: {run: ls, unles: "true"}}]}}\n',
     "machines.web.converge[0].command.unles", "did you mean 'unless'?"),
    ("command-bad-timeout", 'driver: "fake:"\nmachines: {web: {converge: [{command: {run: ls, timeout: -5}}]}}\n',
     "machines.web.converge[0].command.timeout", "positive number"),
    ("command-env-list", 'driver: "fake:"\nmachines: {web: {converge: [{command: {run: ls, env: [A=1]}}]}}\n',
     "machines.web.converge[0].command.env", "mapping of names to strings"),
    ("command-sudo-string", 'driver: "fake:"\nmachines: {web: {converge: [{command: {run: ls, sudo: "yes please"}}]}}\n',
     "machines.web.converge[0].command.sudo", "true or false"),
    ("script-missing", 'driver: "fake:"\nmachines: {web: {converge: [{script: nothere.sh}]}}\n',
     "machines.web.converge[0].script.source", "does not exist"),
    ("healthcheck-two-kinds", 'driver: "fake:"\nmachines: {web: {healthcheck: {tcp: "a:1", command: ls}}}\n',
     "machines.web.healthcheck", "exactly one of tcp, http, command"),
    ("healthcheck-bad-url", 'driver: "fake:"\nmachines: {web: {healthcheck: {http: "localhost/x"}}}\n',
     "machines.web.healthcheck.http", "http:// or https://"),
    ("healthcheck-bad-port", 'driver: "fake:"\nmachines: {web: {healthcheck: {tcp: "127.0.0.1:99999"}}}\n',
     "machines.web.healthcheck.tcp", "host:port"),
    ("healthcheck-deadline", 'driver: "fake:"\nmachines: {web: {healthcheck: {command: ls, deadline: 0}}}\n',
     "machines.web.healthcheck.deadline", "positive number"),
    ("verify-not-command", 'driver: "fake:"\nmachines: {web: {verify: [42]}}\n',
     "machines.web.verify[0]", "expected a command"),
    ("verify-pytest-missing", 'driver: "fake:"\nmachines: {web: {verify: [{pytest: tests/nothere}]}}\n',
     "machines.web.verify[0].pytest", "does not exist"),
    ("key-paths-not-list", 'driver: "fake:"\nprivate_key_paths: {a: b}\nmachines: {web: {}}\n',
     "private_key_paths", "a list of directories"),
    ("driver-options-not-mapping", 'driver: "fake:"\ndriver_options: [a]\nmachines: {web: {}}\n',
     "driver_options", "a mapping of driver URL"),
]


@pytest.mark.parametrize("text,key,words", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_malformed_cluster_file(tmp_path: Path, text: str, key: str | None, words: str):
    (tmp_path / "broken.j2").write_text("Hello {{ machine.name \n")
    (tmp_path / "cluster.yml").write_text(text)
    result = converge("up", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr
    assert "Traceback" not in message + result.stdout
    assert "cluster.yml" in message
    if key is not None:
        assert f": {key}" in message or f"{key}:" in message, message
    assert words in message, message
    assert len(message.splitlines()) <= 25
    assert result.stdout == ""
    assert not (tmp_path / ".provisioning" / "fake").exists()


def test_every_problem_is_reported_at_once(tmp_path: Path):
    (tmp_path / "cluster.yml").write_text(textwrap.dedent("""\
        driver: "fake:"
        machines:
          web:
            count: 2
            machine_options: {size: huge}
            converge:
              - file: {path: /etc/motd, content: hi, mode: "9"}
              - command: {run: ls, timeout: "soon"}
            healthcheck: {http: "ftp://x/"}
          db:
            colour: blue
        """))
    result = converge("up", "--output", "json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: 5 problems:")
    record = json_lines(result.stdout)[-1]
    assert record["event"] == "error" and record["type"] == "ConfigError"
    assert {p["key"] for p in record["problems"]} == {
        "machines.web.machine_options.size", "machines.web.converge[0].file.mode",
        "machines.web.converge[1].command.timeout", "machines.web.healthcheck.http",
        "machines.db.colour"}
    assert all(p["file"] == str(tmp_path / "cluster.yml") for p in record["problems"])


BAD_COMMAND_LINES = [
    ("unknown-command", ["upp"], "Did you mean 'up'?"),
    ("unknown-option", ["up", "--paralel", "3"], "No such option '--paralel'. Did you mean '--parallel'?"),
    ("parallel-zero", ["--parallel", "0", "up"], "--parallel"),
    ("output-format", ["status", "--output", "xml"], "'xml' is not one of 'text', 'json'"),
    ("unknown-machine", ["up", "wbe-1"], "did you mean 'web-1'?"),
    ("exec-no-command", ["exec", "web-1"], "Missing argument"),
    ("exec-unknown-machine", ["exec", "nosuch", "--", "true"], "no machine or group 'nosuch'"),
    ("test-destroy-choice", ["test", "--destroy", "sometimes"], "'sometimes' is not one of"),
    ("describe-bad-url", ["drivers", "describe", "nosuchscheme:"], "no driver for scheme"),
    ("state-url", ["--state", "ftp://host/x", "status"], "unknown state URL"),
    ("missing-file", ["-f", "nothere.yml", "up"], "nothere.yml"),
    ("file-is-directory", ["-f", ".", "status"], "is a directory"),
    ("plan-out-over-a-users-file", ["plan", "--out", "cluster.yml"],
     "exists and is not a plan written by provisioning"),
    ("import-id-too-long", ["import", "web-1", "x" * 5000], "is not a resource id"),
    ("import-id-control-character", ["import", "web-1", "srv-\n1"], "is not a resource id"),
    ("plan-out-a-directory", ["plan", "--out", "."], "is a directory"),
    ("export-over-a-users-file", ["state", "export", "-o", "cluster.yml"],
     "exists and is not a state export"),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in BAD_COMMAND_LINES],
                         ids=[c[0] for c in BAD_COMMAND_LINES])
def test_bad_command_line(tmp_path: Path, args: list[str], words: str):
    cluster = 'driver: "fake:"\nmachines: {web: {count: 2}}\n'
    (tmp_path / "cluster.yml").write_text(cluster)
    result = converge(*args, cwd=tmp_path)
    assert (tmp_path / "cluster.yml").read_text() == cluster
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert words in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) <= 25
    assert not (tmp_path / ".provisioning" / "fake").exists()
