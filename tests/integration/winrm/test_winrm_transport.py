"""WinRMTransport commands, authentication, certificates and timeouts, through unmodified pywinrm
against the WS-Management test server (HTTP and HTTPS, Basic and NTLM)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from provisioning.errors import (
    AuthenticationError,
    CommandTimeout,
    ConfigError,
    ConnectError,
    HostKeyMismatch,
    TransportError,
)
from provisioning.transports.winrm import WinRMTransport, certificate_thumbprints

from .conftest import ENDPOINTS, OTHER_PASSWORD, OTHER_USER, PASSWORD, USER

pytestmark = pytest.mark.timeout(120)
ids = [f"{scheme}-{auth}" for scheme, auth in ENDPOINTS]


@pytest.mark.parametrize("endpoint", ENDPOINTS, indirect=True, ids=ids)
def test_powershell_exit_code_stdout_stderr(endpoint, make_transport):
    server, auth = endpoint
    transport = make_transport(server, auth)
    result = transport.execute("Write-Output 'hello'; Write-Error 'the disk is full'; exit 3")
    assert result.exit_status == 3 and not result.ok
    assert result.stdout.strip() == "hello"
    assert "the disk is full" in result.stderr
    assert "CLIXML" not in result.stderr and "<Objs" not in result.stderr  # decoded for humans
    ok = transport.execute("Write-Output 'fine'")
    assert ok.ok and ok.stdout == "fine\r\n"


@pytest.mark.parametrize("endpoint", ENDPOINTS, indirect=True, ids=ids)
def test_cmd_shell(endpoint, make_transport):
    server, auth = endpoint
    transport = make_transport(server, auth)
    result = transport.execute("echo out & echo err 1>&2 & exit /b 4", shell="cmd")
    assert (result.exit_status, result.stdout, result.stderr) == (4, "out\r\n", "err\r\n")
    missing = transport.execute("no-such-program", shell="cmd")
    assert missing.exit_status == 9009 and "not recognized" in missing.stderr


def test_failed_statement_gives_exit_1_and_unknown_command_is_reported(http_server, make_transport):
    transport = make_transport(http_server)
    result = transport.execute("Get-NoSuchThing")
    assert result.exit_status == 1
    assert "Get-NoSuchThing" in result.stderr and "not recognized" in result.stderr


def test_stdin_reaches_powershell_and_cmd(http_server, make_transport):
    transport = make_transport(http_server)
    text = "first line\nsecond ünïcödé line\n"
    result = transport.execute("$input | Write-Output", input=text)
    assert result.stdout.splitlines() == ["first line", "second ünïcödé line"]
    result = transport.execute("more", shell="cmd", input=b"alpha\r\nbeta\r\n")
    assert result.stdout.splitlines() == ["alpha", "beta"]


def test_output_is_streamed_while_the_command_runs(http_server, make_transport):
    """The command waits, after its first line, for a file the stream callback makes when
    that line arrives: without streaming it would never finish (its timeout fails it)."""
    transport = make_transport(http_server)
    seen: list[tuple[str, str]] = []
    flag = "C:\\Temp\\seen-early"

    def stream(name: str, text: str) -> None:
        seen.append((name, text))
        if "early" in text:
            path = http_server.host_path(flag)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").close()
    result = transport.execute(
        f"Write-Output 'early'; Wait-TestFile -Path '{flag}'; Write-Output 'late'",
        stream=stream, timeout=120)
    assert result.stdout.split() == ["early", "late"]
    assert "".join(text for name, text in seen if name == "stdout") == result.stdout


@pytest.mark.parametrize("shell", ["powershell", "cmd"])
def test_environment_variables(http_server, make_transport, shell):
    transport = make_transport(http_server)
    value = "it's a \u2019quoted\u2019 $value; & more"
    if shell == "powershell":
        result = transport.execute("Write-Output $env:GREETING", env={"GREETING": value})
        assert result.stdout.strip() == value
    else:  # cmd expands %VAR% before `set` runs; child processes (and `set`) see the value
        value = "plain & simple"
        result = transport.execute("set GREETING", shell="cmd", env={"GREETING": value})
        assert result.stdout.strip() == f"GREETING={value}"
    with pytest.raises(ConfigError):
        transport.execute("exit 0", env={"BAD NAME": "x"})


@pytest.mark.parametrize("endpoint", [("http", "ntlm"), ("https", "basic")], indirect=True,
                         ids=["http-ntlm", "https-basic"])
def test_timeout_terminates_the_command_and_the_shell_stays_usable(endpoint, make_transport):
    server, auth = endpoint
    transport = make_transport(server, auth)
    transport.execute("exit 0")
    since = time.time()
    with pytest.raises(CommandTimeout) as caught:
        transport.execute("Write-Output 'before'; Start-Sleep -Seconds 60", timeout=1.5)
    assert caught.value.timeout == 1.5 and "before" in caught.value.stdout
    signals = server.events(since, "signal")
    assert any(s["code"] == "terminate" and s["running"] for s in signals), signals
    deadline = time.monotonic() + 60  # a guard: it stops long before its 60 s sleep ends
    while not any(f.get("cancelled") for f in server.events(since, "finished")):
        assert time.monotonic() < deadline, "the server never stopped the command"
        time.sleep(0.1)
    assert transport.execute("Write-Output 'after'").stdout.strip() == "after"
    assert transport.stats["shells"] == 1


def test_one_shell_is_reused_across_commands(http_server, make_transport):
    transport = make_transport(http_server)
    since = time.time()
    for index in range(5):
        assert transport.execute(f"Write-Output {index}").stdout.strip() == str(index)
    transport.execute("exit 0", shell="cmd")
    commands = http_server.events(since, "command")
    assert len(commands) == 6
    assert len({c["shell"] for c in commands}) == 1
    assert len(http_server.events(since, "create")) == 1
    transport.disconnect()
    assert [e["shell"] for e in http_server.events(since, "delete")] == [commands[0]["shell"]]
    with pytest.raises(TransportError, match="disconnected"):
        transport.execute("exit 0")


def test_a_shell_dropped_by_the_host_is_reopened(http_server, make_transport):
    transport = make_transport(http_server)
    transport.execute("exit 0")
    transport._protocol.close_shell(transport._shell_id, close_session=False)  # as an idle timeout would
    assert transport.execute("Write-Output 'again'").stdout.strip() == "again"
    assert transport.stats["shells"] == 2


@pytest.mark.parametrize("endpoint", ENDPOINTS, indirect=True, ids=ids)
def test_wrong_password_is_an_authentication_error(endpoint, make_transport):
    server, auth = endpoint
    transport = make_transport(server, auth, password="not-the-password")
    with pytest.raises(AuthenticationError) as caught:
        transport.execute("exit 0")
    assert caught.value.host == transport.host
    assert "not-the-password" not in str(caught.value)
    with pytest.raises(AuthenticationError):
        make_transport(server, auth, username="nobody").execute("exit 0")
    with pytest.raises(AuthenticationError):  # available() does not hide refused credentials
        make_transport(server, auth, password="wrong-again").available()


def test_domain_style_user_names_work_with_ntlm(http_server, make_transport):
    transport = make_transport(http_server, "ntlm", username=f"WINTEST\\{OTHER_USER}",
                               password=OTHER_PASSWORD)
    assert transport.execute("Write-Output $env:USERNAME").ok


def test_ntlm_over_http_encrypts_messages(strict_http_server, make_transport):
    """A host with Windows' defaults refuses unencrypted messages over HTTP: NTLM works because
    every message is sealed; Basic (forced on by the user) is refused."""
    since = time.time()
    transport = make_transport(strict_http_server, "ntlm")
    assert transport.execute("Write-Output 'sealed'").stdout.strip() == "sealed"
    assert not strict_http_server.events(since, "refused-unencrypted")
    basic = make_transport(strict_http_server, "basic", allow_unencrypted=True)
    with pytest.raises(AuthenticationError):
        basic.execute("exit 0")
    with pytest.raises(ConfigError, match="unencrypted"):
        WinRMTransport("127.0.0.1", strict_http_server.port, USER, password=PASSWORD,
                       scheme="http", auth="basic")


def test_untrusted_certificate_is_refused(rogue_server, https_server, make_transport, certs):
    since = time.time()
    seen = certificate_thumbprints(certs.rogue_der)
    with pytest.raises(HostKeyMismatch) as caught:
        make_transport(rogue_server, "ntlm", ca_bundle=None).execute("exit 0")
    assert seen["sha1"] in str(caught.value)  # tells the user what to pin if they trust it
    with pytest.raises(HostKeyMismatch):  # our CA did not sign it either
        make_transport(rogue_server, "basic").execute("exit 0")
    wrong_pin = certificate_thumbprints(certs.good_der)["sha256"]
    with pytest.raises(HostKeyMismatch) as caught:
        make_transport(rogue_server, "basic", cert_thumbprint=wrong_pin).execute("exit 0")
    assert caught.value.expected == wrong_pin.lower() and caught.value.seen == seen["sha256"]
    # nothing (no credentials, no command) ever reached the rogue host
    assert rogue_server.events(since, "auth") == [] and rogue_server.events(since, "command") == []


@pytest.mark.parametrize("kind", ["sha1", "sha256"])
@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_pinned_thumbprint_is_accepted(rogue_server, make_transport, certs, kind, auth):
    pin = certificate_thumbprints(certs.rogue_der)[kind]
    formatted = ":".join(pin[i:i + 2] for i in range(0, len(pin), 2)) if kind == "sha1" else pin
    transport = make_transport(rogue_server, auth, cert_thumbprint=formatted)
    assert transport.execute("Write-Output 'pinned'").stdout.strip() == "pinned"


def test_ca_bundle_is_required_for_a_private_ca(https_server, make_transport):
    with pytest.raises(HostKeyMismatch, match="ca_bundle"):
        make_transport(https_server, "basic", ca_bundle=None).execute("exit 0")


def test_unreachable_host_is_a_connect_error(make_transport):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = WinRMTransport("127.0.0.1", port, USER, password=PASSWORD, scheme="http",
                               auth="ntlm", connect_timeout=2)
    try:
        with pytest.raises(ConnectError) as caught:
            transport.execute("exit 0")
        assert str(port) in str(caught.value)
        assert transport.available() is False
    finally:
        transport.disconnect()


def test_credentials_never_appear_in_logs_or_reprs(https_server, make_transport, caplog):
    caplog.set_level(logging.DEBUG)
    good = make_transport(https_server, "ntlm")
    good.execute("Write-Output 'x'")
    good.write_file("C:\\secrets\\probe.txt", b"data")
    bad = make_transport(https_server, "basic", password="Wr0ng-" + PASSWORD)
    with pytest.raises(AuthenticationError) as caught:
        bad.execute("exit 0")
    texts = [r.getMessage() for r in caplog.records] + [repr(good), repr(bad), good.host,
                                                        str(caught.value)]
    for text in texts:
        assert PASSWORD not in text
    with open(https_server.log_path, encoding="utf-8") as handle:
        assert PASSWORD not in handle.read()


def test_missing_pywinrm_names_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['winrm'] = None\n"
        "from provisioning.transports.winrm import WinRMTransport\n"
        "from provisioning.errors import MissingExtra\n"
        "t = WinRMTransport('127.0.0.1', 1, 'u', password='p')\n"
        "try:\n    t.execute('exit 0')\n"
        "except MissingExtra as exc:\n    print('MISSING', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=str(tmp_path))
    assert "MISSING" in out.stdout and "provisioning[winrm]" in out.stdout, out.stderr


def test_import_does_not_load_pywinrm(tmp_path):
    code = ("import sys, provisioning.transports.winrm, provisioning.machine.windows\n"
            "print(sorted(m for m in ('winrm', 'requests', 'spnego') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=str(tmp_path))
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("kwargs, key", [
    ({"auth": "digest"}, "auth"),
    ({"scheme": "ftp"}, "scheme"),
    ({"shell": "bash"}, "shell"),
    ({"connect_timeout": 0}, "connect_timeout"),
    ({"cert_thumbprint": "abc"}, "cert_thumbprint"),
    ({"ca_bundle": "/no/such/ca.pem", "scheme": "https"}, "ca_bundle"),
    ({"auth": "basic", "scheme": "http"}, "scheme"),
    ({"message_encryption": "never"}, "scheme"),
])
def test_bad_settings_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as caught:
        WinRMTransport("127.0.0.1", 5985, USER, password=PASSWORD, **kwargs)
    assert caught.value.key.endswith(key)


def test_errors_from_the_backend_are_all_mapped():
    """Every pywinrm exception class, and the requests errors it lets through, map to ours."""
    import inspect

    import requests.exceptions as rex
    import winrm.exceptions as wex

    from provisioning.errors import ProvisioningError
    from provisioning.transports.winrm import translate_winrm_error as _translate

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = WinRMTransport("127.0.0.1", port, USER, password=PASSWORD, scheme="https",
                               auth="ntlm", connect_timeout=1)
    samples = {
        wex.WSManFaultError: wex.WSManFaultError(500, "m", "r", "reason", wsman_fault_code=1),
        wex.WinRMTransportError: wex.WinRMTransportError("http", 500, "body"),
    }
    classes = [c for _, c in inspect.getmembers(wex, inspect.isclass)
               if issubclass(c, BaseException) and c.__module__ == wex.__name__]
    assert len(classes) >= 7
    for cls in classes:
        exc = samples.get(cls) or cls("boom")
        mapped = _translate(transport, "test", exc)
        assert isinstance(mapped, ProvisioningError), cls
    expected = {
        rex.SSLError: HostKeyMismatch, rex.ConnectTimeout: ConnectError, rex.ReadTimeout: ConnectError,
        rex.ConnectionError: ConnectError, rex.InvalidURL: ConfigError,
        rex.ChunkedEncodingError: TransportError, wex.InvalidCredentialsError: AuthenticationError,
        wex.BasicAuthDisabledError: AuthenticationError, PermissionError: AuthenticationError,
    }
    for cls, ours in expected.items():
        assert type(_translate(transport, "test", cls("boom"))) is ours, cls
    assert _translate(transport, "test", KeyError("x")) is None  # our bugs are not disguised


def test_clixml_stderr_is_decoded_even_when_split_across_receives():
    from provisioning.transports.powershell import ClixmlDecoder, decode_clixml

    text = ('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/'
            '2004/04"><S S="progress">skip me</S><S S="Error">disk full_x000D__x000A_</S></Objs>'
            '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
            '<S S="Warning">careful &amp; slow_x000A_</S></Objs>')
    assert decode_clixml(text) == "disk full\r\ncareful & slow\n"
    for size in (1, 3, 7, 50):
        decoder = ClixmlDecoder()
        pieces = [decoder.feed(text[i:i + size]) for i in range(0, len(text), size)]
        assert "".join(pieces) + decoder.flush() == "disk full\r\ncareful & slow\n"
    assert decode_clixml("plain error\r\n") == "plain error\r\n"


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_pywinrm_session_api_works_against_the_test_server(https_server, certs, auth):
    """pywinrm's own high-level API (not our transport) against the server: the protocol is
    what pywinrm expects, independent of how our transport drives it."""
    import winrm

    session = winrm.Session(f"https://127.0.0.1:{https_server.port}/wsman", auth=(USER, PASSWORD),
                            transport=auth, server_cert_validation="validate",
                            ca_trust_path=certs.ca, proxy=None)
    result = session.run_cmd("echo", ["from", "run_cmd"])
    assert (result.status_code, result.std_out) == (0, b"from run_cmd\r\n")
    result = session.run_ps("Write-Output 'from run_ps'; Write-Error 'oops'; exit 2")
    assert result.status_code == 2 and result.std_out == b"from run_ps\r\n"
    assert b"oops" in result.std_err and b"CLIXML" not in result.std_err
