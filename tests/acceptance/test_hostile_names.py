"""Names no file can have (a part over 255 bytes) and places nothing can be written: exit 2, a
message on one screen, nothing written; never an internal error."""

from __future__ import annotations

import os

import pytest

from tests.acceptance.test_hostile_inputs import _files, refused
from tests.cli_runner import converge

LONG = "a" * 300


def test_a_fake_cloud_url_too_long_for_a_file_name_is_refused_on_one_screen(tmp_path):
    """``fake:`` + 100000 characters: the state file was created, then every machine failed
    with a message holding the whole URL (100 KB on the terminal)."""
    result = refused(tmp_path, f'driver: "fake:{"a" * 100000}"\nmachines:\n  web: {{}}\n', "up",
                     expect="is too long for a file name")
    assert len(result.stderr) < 2000, result.stderr[:3000]


@pytest.mark.parametrize("args", [(LONG,), ("abc", "--module", LONG)], ids=["name", "module"])
def test_new_driver_with_a_name_too_long_for_a_file_writes_nothing(tmp_path, args):
    """Was an internal error (exit 1, 'this is a bug'), with --module leaving a half-written
    package behind."""
    result = converge("new-driver", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is too long for a file name" in result.stderr and "internal error" not in result.stderr
    assert _files(tmp_path) == []


def test_new_driver_where_nothing_can_be_written_is_the_users_error(tmp_path):
    """A ``--directory`` in /proc was an internal FileNotFoundError."""
    result = converge("new-driver", "abc", "--directory", "/proc/sys", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot write the driver package at /proc/sys/provisioning-abc" in result.stderr
    assert not os.path.exists("/proc/sys/provisioning-abc")


@pytest.mark.parametrize("where", ["flag", "file"])
@pytest.mark.parametrize("char", ["\n", "\x01", "\u202e"], ids=["newline", "control", "bidi"])
def test_a_state_location_with_a_control_character_is_refused_before_anything(tmp_path, where,
                                                                             char):
    """``--state $'a\\nb'`` (or ``state:`` in the file) made a state file with a newline or a
    bidi override in its name and ran; ``$PROVISIONING_STATE`` was already refused."""
    state = f"st{char}ate.db"
    cluster = 'driver: "fake:./cloud"\nmachines:\n  web: {}\n'
    if where == "file":
        refused(tmp_path, cluster + f"state: {state!r}\n".replace("'", '"'), "up",
                expect="state: the state location holds the character")
    else:
        refused(tmp_path, cluster, "--state", state, "up",
                expect="--state: the state location holds the character")


def test_watch_of_a_machine_the_file_does_not_have_creates_no_state_file(tmp_path):
    refused(tmp_path, 'driver: "fake:./cloud"\nmachines:\n  web: {}\n', "watch", "--once", "wbe",
            expect="no machine or group 'wbe' in this cluster")


def test_an_ssh_host_with_no_way_to_log_in_is_refused_before_the_state_file(tmp_path):
    """No key_name, password_env, use_agent or ssh_config: the state file was written and the
    host registered, then connecting failed with exit 2."""
    refused(tmp_path, 'driver: "ssh:"\nmachines:\n  web:\n    machine_options:\n'
                      '      transport: {host: 127.0.0.1, port: 1}\n', "up",
            expect="machines.web.machine_options.transport.key_name: no way to log in")


@pytest.mark.parametrize("step,expect", [
    ("file: {path: /x, content: a, owner: '-rf /'}", "owner: '-rf /' is not an owner name"),
    ("directory: {path: /srv, group: '--reference=/etc/shadow'}", "is not a group name"),
    ("file: {path: /x, content: a, owner: 'root:root'}", "is not an owner name"),
], ids=["dash-owner", "dash-group", "colon"])
def test_an_owner_or_group_chown_would_misread_is_refused_before_any_machine(tmp_path, step,
                                                                             expect):
    """``owner: '-rf /'`` reached ``chown '-rf /' -- PATH`` on a created machine (exit 1)."""
    refused(tmp_path, 'driver: "fake:./cloud"\nmachines:\n  web:\n    converge:\n'
                      f'      - {step}\n', "up", expect=expect)
