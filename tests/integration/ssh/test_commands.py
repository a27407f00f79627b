"""Commands over SSH against a real sshd: output, exit codes, env, stdin, streaming, pty,
timeouts, connection reuse and thread safety."""

from __future__ import annotations

import threading
import time

import pytest

from provisioning.errors import CommandTimeout, ConfigError, TransportError
from provisioning.testing.sshd import _children_of


def _session_processes(host) -> list[str]:
    """Command lines of everything our sshd forked (connections, shells, commands)."""
    lines = []
    for pid in _children_of(host.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                lines.append(handle.read().replace(b"\0", b" ").decode().strip())
        except OSError:
            pass
    return lines


def test_stdout_stderr_and_exit_status(sshd_host, connect):
    transport = connect(sshd_host)
    result = transport.execute("echo out; echo err >&2; exit 7")
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert not result.ok
    assert result.host == f"root@127.0.0.1:{sshd_host.port}"
    assert transport.execute("true").ok


def test_env_values_are_quoted(sshd_host, connect):
    transport = connect(sshd_host)
    value = "two words; $(touch /tmp/never) 'q'"
    result = transport.execute('printf %s "$GREETING"', env={"GREETING": value})
    assert result.stdout == value
    with pytest.raises(ConfigError):
        transport.execute("true", env={"BAD NAME": "x"})


def test_stdin_input_large_and_small(sshd_host, connect):
    transport = connect(sshd_host)
    assert transport.execute("cat", input="hello").stdout == "hello"
    blob = bytes(range(256)) * 20000  # 5 MB through stdin while stdout is read back
    result = transport.execute("sha256sum", input=blob)
    import hashlib

    assert result.stdout.split()[0] == hashlib.sha256(blob).hexdigest()
    # without input the command sees EOF at once instead of hanging
    assert transport.execute("cat", timeout=5).stdout == ""


def test_streaming_reaches_callback_in_order(sshd_host, connect, tmp_path):
    """The command waits, after its first line, for a file the callback makes when that line
    arrives: without streaming it would never finish (its timeout turns that into a failure)."""
    transport = connect(sshd_host)
    seen: list[tuple[str, str]] = []
    flag = tmp_path / "seen-one"  # sshd runs on this host: the same file system

    def stream(name: str, text: str) -> None:
        seen.append((name, text))
        if "one" in text:
            flag.touch()
    result = transport.execute(f"echo one; while [ ! -e {flag} ]; do sleep 0.02; done; "
                               "echo two >&2; echo three", stream=stream, timeout=120)
    out = "".join(text for name, text in seen if name == "stdout")
    err = "".join(text for name, text in seen if name == "stderr")
    assert out == result.stdout == "one\nthree\n"
    assert err == result.stderr == "two\n"


def test_pty_on_request(sshd_host, connect):
    transport = connect(sshd_host)
    assert transport.execute("tty", pty=True).stdout.startswith("/dev/pts/")
    assert transport.execute("tty").exit_status != 0


def test_timeout_kills_the_command_and_connection_stays_usable(sshd_host, connect):
    transport = connect(sshd_host)
    with pytest.raises(CommandTimeout) as caught:
        transport.execute("echo started; sleep 31.5; echo never", timeout=1)
    assert caught.value.timeout == 1 and "sleep 31.5" in caught.value.command
    assert caught.value.host == transport.host
    assert caught.value.stdout == "started\n"
    client = transport._client()
    assert transport.execute("echo still here").stdout == "still here\n"
    assert transport._client() is client, "the timeout must not cost the connection"
    # the remote process group was killed, not left running (gone well before it would end)
    deadline = time.monotonic() + 20
    while [p for p in _session_processes(sshd_host) if p == "sleep 31.5"]:
        assert time.monotonic() < deadline, "the timed-out command was left running"
        time.sleep(0.05)


def test_one_connection_reused_and_thread_safe(sshd_host, connect):
    transport = connect(sshd_host)
    transport.execute("true")
    client = transport._client()
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = transport.execute(f"echo {i}").stdout.strip()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == {i: str(i) for i in range(16)}
    assert transport._client() is client
    connections = [p for p in _session_processes(sshd_host) if p.startswith("sshd: root@notty")]
    assert len(connections) == 1, "every command shares one SSH connection"


def test_reconnects_after_the_server_restarts(sshd_host, connect):
    transport = connect(sshd_host)
    assert transport.execute("echo 1").ok
    sshd_host.restart()
    assert transport.execute("echo 2").stdout == "2\n"


def test_disconnect_refuses_reuse(sshd_host, connect):
    transport = connect(sshd_host)
    transport.execute("true")
    transport.disconnect()
    with pytest.raises(TransportError, match="disconnected"):
        transport.execute("true")
    assert not transport.available()


def test_available(sshd_host, connect):
    assert connect(sshd_host).available()
    sshd_host.stop()
    assert not connect(sshd_host, connect_timeout=1).available()


def test_fast_commands_from_many_threads_never_drop_the_connection(sshd_host, connect):
    """EOF must reach sshd before CLOSE even when a command ends at once: otherwise OpenSSH
    drops the whole connection ("ieof packet referred to nonexistent channel")."""
    transport = connect(sshd_host)
    transport.execute("true")
    client = transport._client()
    errors: list[BaseException] = []

    def work() -> None:
        for _ in range(40):
            try:
                assert transport.execute("true").ok
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert transport._client() is client, "the connection was dropped and made again"
    assert "nonexistent channel" not in sshd_host.log()
