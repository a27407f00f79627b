"""``status`` and a plain ``up`` run without click (``provisioning.cli.quick``): a plain, valid
command line gives what the click group gives, and anything else is the click group's to read."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from provisioning.cli.commands import QUICK
from provisioning.cli.help import GLOBAL_OPTIONS
from provisioning.cli.quick import parse_quick
from tests.integration.cli.helpers import converge

#: the click group, reading the command line itself (the path before quick commands existed)
BY_CLICK = "import sys\nfrom provisioning.cli.group import run\nsys.exit(run(sys.argv[1:]))\n"
#: the console script's entry point, and whether it loaded click
BY_MAIN = ("import sys\nfrom provisioning.cli.main import main\ncode = main(sys.argv[1:])\n"
           "print('CLICK LOADED' if 'click' in sys.modules else 'NO CLICK')\nsys.exit(code)\n")

#: read without click, each as the click group reads it
PLAIN = [["status"], ["status", "--refresh"], ["status", "--all-clusters"],
         ["-v", "status", "-q", "--all-clusters"], ["--output", "json", "status"],
         ["status", "--output=json", "--refresh"], ["-f", "cluster.yml", "status"],
         ["-fcluster.yml", "status", "-vv"], ["status", "--file=cluster.yml", "--parallel", "3"],
         ["--parallel=2", "status", "--parallel", "4"], ["-vvq", "status", "-qv"],
         ["--state", "other.db", "status"], ["-f", "missing.yml", "status"],
         ["--output", "json", "-f", "missing.yml", "status"], ["-f", "bad.yml", "status"],
         ["status", "--output", "json", "-f", "bad.yml"], ["--file", "status", "status"],
         ["up"], ["--output", "json", "up", "--parallel", "10"], ["-v", "up", "-q"],
         ["up", "--state", ".provisioning/state.db"], ["-f", "missing.yml", "up"], ["-f", "bad.yml", "up"],
         ["--output", "json", "up", "-f", "bad.yml"], ["up", "--file=up"]]
#: left to click: help, errors, and forms the quick reader does not take
TO_CLICK = [["status", "--help"], ["status", "-h"], ["-h", "status"], ["status", "extra"],
            ["status", "--"], ["status", "-f"], ["status", "--parallel", "0"],
            ["status", "--parallel", "007"], ["status", "--parallel", "x"],
            ["status", "--parallel", "257"],
            ["status", "--output", "JSON"], ["status", "--refresh=1"], ["status", "-x"],
            ["status", "--verbose=2"], ["status", "--refres"], ["--version", "status"],
            ["status", "-f", "-v"], ["status", "--file="], ["statu"], ["up", "--why-run"],
            ["status", "--why-run"], ["-vx", "status"], ["status", "status"], [],
            ["up", "web-1"], ["up", "--replace"], ["up", "--help"], ["up", "up"],
            ["up", "--parallel", "0"], ["up", "--refresh"], ["--why-run", "up"]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("quick")
    (directory / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  web:\n'
                                           "    count: 2\n")
    # a problem whose message carries an escape sequence: stripped on a pipe by both paths
    (directory / "bad.yml").write_text('driver: "fake:./cloud"\nmachines:\n  "we\\e[31mb":\n'
                                       "    count: nope\n  db: {}\n  cache: {bogus: 1}\n")
    converge("up", cwd=directory, check=True)
    return directory


def _run(code: str, argv: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True,
                          text=True)


def _comparable(text: str) -> list[str]:
    """The lines of ``text`` in order, but for what differs from run to run: machines report
    in the order they finish, and each JSON event says when it happened."""
    return sorted(re.sub(r'"time": [0-9.e+-]+', '"time": T', line)
                  for line in text.splitlines())


@pytest.mark.parametrize("argv", PLAIN + TO_CLICK, ids=" ".join)
def test_the_quick_path_reads_a_command_line_as_click_does(cluster, argv):
    by_click = _run(BY_CLICK, argv, cluster)
    by_main = _run(BY_MAIN, argv, cluster)
    *shown, loaded = by_main.stdout.splitlines(keepends=True)
    assert (by_main.returncode, _comparable("".join(shown)), _comparable(by_main.stderr)) == \
        (by_click.returncode, _comparable(by_click.stdout), _comparable(by_click.stderr))
    assert loaded.strip() == ("NO CLICK" if argv in PLAIN else "CLICK LOADED")
    assert (parse_quick(argv) is not None) == (argv in PLAIN)


def test_the_quick_commands_take_the_flags_their_click_commands_take():
    """``status``: every option of its own; ``up``: none (``--why-run`` and ``--replace`` go to
    click). Each flag read is its click command's, meaning the same."""
    import click

    from provisioning.cli.main import cli

    global_flags = {flag for row in GLOBAL_OPTIONS for flag in row.flags}
    left_to_click = {"up": {"--why-run", "--replace"}}
    for name, (_, flags) in QUICK.items():
        command = cli.get_command(click.Context(cli), name)
        own = {}
        for param in command.params:
            if isinstance(param, click.Option) and not set(param.opts) & global_flags:
                if set(param.opts) & left_to_click.get(name, set()):
                    assert not set(param.opts) & set(flags)
                    continue
                assert param.is_flag and len(param.opts) == 1 and not param.secondary_opts
                own[param.opts[0]] = param.name
        assert own == flags, name


def test_the_quick_reader_sums_counters_and_keeps_the_last_value():
    target, given, keywords = parse_quick(["-vv", "-f", "a.yml", "status", "-q", "--file=b.yml",
                                           "--parallel", "12", "--refresh", "-v"])
    assert target == QUICK["status"][0]
    assert given == {"file": "b.yml", "parallel": 12, "verbose": 3, "quiet": 1}
    assert keywords == {"refresh": True}


def test_shell_completion_is_left_to_click(monkeypatch):
    monkeypatch.setenv("_CONVERGE_COMPLETE", "bash_complete")
    assert parse_quick(["status"]) is None
