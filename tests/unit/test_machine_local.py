"""UnixMachine over LocalTransport: the Machine contract on this host."""

from __future__ import annotations

import os

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.errors import CommandFailed, CommandTimeout
from provisioning.machine.unix import UnixMachine
from provisioning.transports.local import LocalTransport


@pytest.fixture
def machine(tmp_path):
    return UnixMachine("local", LocalTransport(str(tmp_path)), action_handler=RecordingActionHandler())


def test_execute_results_and_failures(machine):
    result = machine.execute("echo out; echo err >&2")
    assert (result.stdout, result.stderr, result.exit_status) == ("out\n", "err\n", 0)
    with pytest.raises(CommandFailed) as info:
        machine.execute("echo broken >&2; exit 4")
    assert info.value.exit_status == 4 and "broken" in str(info.value)
    assert machine.execute("exit 4", check=False).exit_status == 4


def test_timeout_env_stdin_and_stream(machine):
    with pytest.raises(CommandTimeout):
        machine.execute("sleep 5", timeout=0.3)
    assert machine.execute("echo $GREETING", env={"GREETING": "hi"}).stdout == "hi\n"
    assert machine.execute("tr a-z A-Z", input="abc").stdout == "ABC"
    seen = []
    machine.execute("echo one; echo two >&2", stream=lambda name, text: seen.append((name, text)))
    assert ("stdout", "one\n") in seen and ("stderr", "two\n") in seen


def test_write_file_is_idempotent_and_why_run_changes_nothing(machine, tmp_path):
    assert machine.write_file("etc/motd", "hello\n", mode="0640") is True
    assert machine.write_file("etc/motd", "hello\n", mode="0640") is False
    assert oct(os.stat(tmp_path / "etc/motd").st_mode & 0o777) == "0o640"
    planner = UnixMachine("local", machine.transport, action_handler=RecordingActionHandler(why_run=True))
    assert planner.write_file("etc/motd", "changed\n") is True
    assert (tmp_path / "etc/motd").read_text() == "hello\n"
    assert "would update etc/motd (sha256 differs)" in planner.action_handler.parent.descriptions()[0]


def test_files_dirs_attributes_and_os(machine, tmp_path):
    assert machine.create_dir("d/e", mode="0700") is True
    assert machine.is_directory("d/e") and not machine.is_directory("nope")
    assert machine.get_attributes("d/e")["mode"] == "0700"
    (tmp_path / "f").write_text("x")
    assert machine.file_exists("f") and machine.delete_file("f") and not machine.file_exists("f")
    assert machine.delete_file("f") is False
    platform, version, arch = machine.detect_os()
    assert platform and arch == os.uname().machine


def test_upload_download_skip_when_unchanged(machine, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(100_000))
    assert machine.upload_file(str(src), "copy.bin") is True
    assert machine.upload_file(str(src), "copy.bin") is False
    assert machine.download_file("copy.bin", str(tmp_path / "back.bin")) is True
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert machine.download_file("copy.bin", str(tmp_path / "back.bin")) is False


class ElsewhereTransport(LocalTransport):
    """A local transport that says its commands run elsewhere: facts come from commands."""

    def execute(self, command, **options):
        self.commands = getattr(self, "commands", []) + [command]
        return super().execute(command, **options)


def test_facts_read_in_process_equal_what_the_commands_print(tmp_path):
    here = UnixMachine("here", LocalTransport(str(tmp_path)))
    asked = UnixMachine("asked", ElsewhereTransport(str(tmp_path)))
    assert here.transport.runs_here and not asked.transport.runs_here
    facts = asked.facts()
    assert len(asked.transport.commands) == 1  # one round trip for all of them
    assert here.facts() == facts
    assert facts["hostname"] == asked.execute_always("hostname").stdout.strip()
    assert facts["arch"] == asked.execute_always("uname -m").stdout.strip()
    assert here.detect_os() == (facts["os"], facts["version"], facts["arch"])
