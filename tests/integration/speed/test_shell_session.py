"""ShellSession against a real sshd: one persistent shell, many framed commands."""

from __future__ import annotations

import threading
import time

import pytest

from provisioning.errors import CommandFailed, CommandTimeout, TransportError
from provisioning.machine.unix import UnixMachine
from provisioning.transports.ssh.session import SessionCommand


def test_exit_status_stdout_and_stderr_stay_apart(session):
    result = session.run("echo out; echo err >&2; echo more; exit 7")
    assert result.exit_status == 7
    assert result.stdout == "out\nmore\n"
    assert result.stderr == "err\n"
    assert not result.ok
    ok = session.run("true")
    assert ok.exit_status == 0 and ok.stdout == "" and ok.stderr == ""


def test_every_command_in_a_row_keeps_its_own_result(session):
    results = session.run_many([f"echo {i}; echo e{i} >&2; exit {i % 4}" for i in range(30)])
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(30)]
    assert [r.stderr for r in results] == [f"e{i}\n" for i in range(30)]
    assert [r.exit_status for r in results] == [i % 4 for i in range(30)]


def test_one_shell_serves_every_command(session):
    session.run("true")
    pid = session.pid
    assert pid is not None
    for _ in range(5):
        assert session.run("echo $$").stdout.strip() == str(pid)
    assert session.starts == 1


def test_output_without_trailing_newline(session):
    assert session.run("printf abc").stdout == "abc"
    assert session.run("printf abc >&2").stderr == "abc"
    # and the next command is not glued to it
    assert session.run("printf def").stdout == "def"


def test_binary_ish_and_large_output(session):
    result = session.run(r"printf 'a\000b\001c\377d\n'")
    assert result.stdout == "a\x00b\x01c\ufffdd\n"
    big = session.run("head -c 3000000 /dev/zero | tr '\\0' x; echo; seq 1 5 >&2")
    assert big.stdout == "x" * 3000000 + "\n"
    assert big.stderr == "1\n2\n3\n4\n5\n"
    # text that looks like framing is just output
    tricky = session.run("echo ':ready:1'; echo ':1:0'; echo '__pv 1 x'")
    assert tricky.stdout == ":ready:1\n:1:0\n__pv 1 x\n"
    assert tricky.exit_status == 0


def test_a_command_reading_stdin_does_not_eat_the_next_commands(session):
    results = session.run_many(["cat; echo cat-done", "read line; echo read=$line",
                                "head -c 5; echo head-done", "echo still-here"])
    assert [r.stdout for r in results] == ["cat-done\n", "read=\n", "head-done\n", "still-here\n"]
    assert session.run("echo after").stdout == "after\n"


def test_commands_are_isolated_from_each_other(session):
    session.run("cd /tmp; FOO=1; export BAR=2; set -e; alias x=y")
    result = session.run('pwd; echo "${FOO:-unset} ${BAR:-unset}"')
    assert result.stdout.splitlines() == [session.run("cd; pwd").stdout.strip(), "unset unset"]
    pid = session.pid
    assert session.run("exit 5").exit_status == 5
    assert session.run("if then").exit_status == 2  # a syntax error ends only that command
    assert session.run("echo $#").stdout == "0\n"  # no positional parameters leak in
    assert session.pid == pid


def test_env_is_passed_quoted(session):
    result = session.run('printf "%s|" "$A" "$B"', env={"A": "x y", "B": "it's $HOME"})
    assert result.stdout == "x y|it's $HOME|"
    with pytest.raises(ValueError):
        session.run("true", env={"BAD-NAME": "1"})


def test_timeout_kills_the_command_and_the_session_recovers(session, transport):
    session.run("true")
    old_pid = session.pid
    with pytest.raises(CommandTimeout) as caught:
        session.run("echo partial; sleep 31.4159", timeout=0.5)
    assert caught.value.timeout == 0.5
    assert caught.value.stdout == "partial\n"
    # the next command runs in a fresh shell, and the sleeper is gone from the machine
    after = session.run("echo fine")
    assert after.stdout == "fine\n" and after.ok
    assert session.pid != old_pid
    assert session.starts == 2
    deadline = time.monotonic() + 20  # a guard: gone long before the sleep would end
    while transport.execute("pgrep -f 'slee[p] 31.4159' || true").stdout.strip():
        assert time.monotonic() < deadline, "the timed-out command was left running"
        time.sleep(0.05)


def test_each_command_in_a_batch_has_its_own_timeout(session):
    commands = [SessionCommand("sleep 0.3; echo a", timeout=120),
                SessionCommand("sleep 0.3; echo b", timeout=120),
                SessionCommand("sleep 20", timeout=0.5)]
    with pytest.raises(CommandTimeout) as caught:
        session.run_many(commands)
    assert caught.value.timeout == 0.5 and "sleep 20" in caught.value.command
    assert session.run("echo next").stdout == "next\n"


def test_a_command_that_kills_its_shell_gets_a_result_and_a_new_shell(session):
    session.run("true")
    first = session.pid
    result = session.run("echo bye; kill -9 $$")
    assert result.exit_status != 0
    assert result.stdout == "bye\n"
    assert session.run("echo hello").stdout == "hello\n"
    assert session.pid != first


def test_stop_on_error_skips_the_rest(session, tmp_path):
    marker = f"/tmp/provisioning-speed-{time.monotonic_ns()}"
    results = session.run_many(["true", "echo before; false", f"touch {marker}"], stop_on_error=True)
    assert [r.exit_status for r in results] == [0, 1]
    assert session.run(f"test -e {marker}").exit_status == 1
    # without stop_on_error every command runs
    results = session.run_many(["false", f"touch {marker}; echo made"])
    assert [r.exit_status for r in results] == [1, 0]
    session.run(f"rm -f {marker}")


def test_streaming_gets_the_output_without_markers(session):
    chunks: list[tuple[str, str]] = []
    result = session.run("for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.05; done; printf end",
                         stream=lambda name, text: chunks.append((name, text)))
    assert "".join(t for n, t in chunks if n == "stdout") == result.stdout == "1\n2\n3\nend"
    assert "".join(t for n, t in chunks if n == "stderr") == result.stderr == "e1\ne2\ne3\n"


def test_threads_sharing_one_session_each_get_their_own_results(session):
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(15):
                r = session.run(f"echo {k}-{i}; echo err{k}-{i} >&2; exit {(k + i) % 3}")
                assert (r.stdout, r.stderr, r.exit_status) == (f"{k}-{i}\n", f"err{k}-{i}\n", (k + i) % 3)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]


def test_sessions_on_many_machines_run_in_parallel(sshd_host, client_key, tmp_path):
    from provisioning.testing.sshd import start_sshd, stop_all
    from provisioning.transports.ssh import SSHTransport

    hosts = [sshd_host] + [start_sshd(tmp_path, authorized_keys=[client_key.public_openssh])
                           for _ in range(3)]
    transports = [SSHTransport(h.host, h.port, "root", private_key=client_key, host_key=h.host_key)
                  for h in hosts]
    try:
        out: dict[int, list[str]] = {}
        meeting = tmp_path / "meeting"  # the machines run on this host: one file system
        meeting.mkdir()

        def work(index: int) -> None:
            # each command waits until all four sessions have started that round: sessions
            # that did not run at the same time would never get past it (timeout: failure)
            session = transports[index].shell_session()
            out[index] = [session.run(
                f"touch {meeting}/{i}-{index}; while [ $(ls {meeting} | grep -c '^{i}-') "
                f"-lt {len(transports)} ]; do sleep 0.02; done; echo {index}-{i}",
                timeout=120).stdout for i in range(3)]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(transports))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert out == {i: [f"{i}-{k}\n" for k in range(3)] for i in range(len(transports))}
    finally:
        for t in transports:
            t.disconnect()
        stop_all(hosts[1:])


def test_closed_session_and_disconnected_transport_refuse_use(transport):
    session = transport.shell_session()
    assert session.run("echo 1").ok
    transport.disconnect()
    with pytest.raises(TransportError):
        session.run("echo 2")
    with pytest.raises(TransportError):
        transport.shell_session()


def test_machine_execute_many_stops_and_raises_at_the_first_failure(transport):
    machine = UnixMachine("m1", transport)
    results = machine.execute_many(["echo a", "echo b"])
    assert [r.stdout for r in results] == ["a\n", "b\n"]
    with pytest.raises(CommandFailed) as caught:
        machine.execute_many(["echo a", "echo oops >&2; exit 3", "echo never"])
    assert caught.value.exit_status == 3
    assert "oops" in caught.value.result.stderr
    unchecked = machine.execute_many(["exit 3", "echo runs"], check=False)
    assert [r.exit_status for r in unchecked] == [3, 0]


def test_machine_execute_many_under_why_run_runs_nothing(transport):
    from provisioning.actions import ActionHandler

    machine = UnixMachine("m1", transport, action_handler=ActionHandler(why_run=True))
    marker = f"/tmp/provisioning-whyrun-{time.monotonic_ns()}"
    assert machine.execute_many([f"touch {marker}"]) is None
    assert transport.execute(f"test -e {marker}").exit_status == 1


def test_a_session_runs_every_command_in_one_shell_a_channel_each_in_its_own(transport):
    """Why a session is cheaper (the figures are in bench/RESULTS.md, W2): its commands share
    one shell process; each ``execute`` makes sshd start another."""
    session = transport.shell_session()
    in_session = {session.run("echo $$").stdout for _ in range(10)}
    per_channel = {transport.execute("echo $$").stdout for _ in range(10)}
    assert len(in_session) == 1 and session.starts == 1
    assert len(per_channel) == 10


def test_sudo_through_the_session_as_a_non_root_login(tmp_path, client_key, sudo_user):
    from provisioning.testing.sshd import start_sshd
    from provisioning.transports.ssh import SSHTransport

    host = start_sshd(tmp_path, authorized_keys=[client_key.public_openssh], user=sudo_user.name)
    t = SSHTransport(host.host, host.port, sudo_user.name, private_key=client_key,
                     host_key=host.host_key)
    try:
        plain, elevated = t.execute_many(["id -un", "id -un"][:1]) + t.execute_many(["id -un"], sudo=True)
        assert plain.stdout.strip() == sudo_user.name
        assert elevated.stdout.strip() == "root"
    finally:
        t.disconnect()
        host.stop()


def test_local_sha256_is_remembered_until_the_file_changes(tmp_path):
    import hashlib
    import os

    from provisioning.transports.base import sha256_file

    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    path.write_bytes(b"b" * 1000)  # same size; mtime/ctime move on
    os.utime(path, ns=(1, 2))
    assert sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()
