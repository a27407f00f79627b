"""Healthchecks against real listeners on 127.0.0.1 and real commands, with deadlines."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.cluster.healthcheck import parse_healthchecks, run_healthcheck, run_healthchecks
from provisioning.errors import ProvisioningError
from provisioning.inputs.schema import Problems
from provisioning.machine.unix import UnixMachine
from provisioning.transports.local import LocalTransport


def checks(value):
    problems = Problems("cluster.yml")
    found = parse_healthchecks(value, "machines.web.healthcheck", problems)
    assert not problems, [str(p) for p in problems.items]
    return found


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = 200 if self.path == "/ok" else 503
            body = b"all good" if code == 200 else b"down"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


VARS = {"machine": {"name": "web-1", "address": "127.0.0.1"}}


def test_http_status_and_body(http_server):
    handler = RecordingActionHandler()
    run_healthchecks(checks({"http": f"http://{{{{ machine.address }}}}:{http_server}/ok",
                             "expect": 200, "body": "good"}), None, handler, VARS)
    assert any("passed" in d for d in handler.descriptions("progress"))


class FakeClock:
    """The healthcheck's clock and sleep: time passes only when it sleeps, so how many
    attempts fit before the deadline does not depend on how loaded the machine is."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_http_wrong_status_fails_at_deadline(http_server):
    time_ = FakeClock()
    [check] = checks({"http": f"http://127.0.0.1:{http_server}/down", "deadline": 0.6,
                      "interval": 0.1})
    with pytest.raises(ProvisioningError) as info:
        run_healthcheck(check, None, RecordingActionHandler(), VARS, sleep=time_.sleep,
                        clock=time_.clock)
    assert "status 503, expected 200" in str(info.value)
    assert len(time_.sleeps) >= 4 and time_.now <= 0.6  # retried until its deadline, not past
    assert f"({len(time_.sleeps) + 1} attempts)" in str(info.value)


def test_http_body_mismatch(http_server):
    with pytest.raises(ProvisioningError, match="body does not contain 'welcome'"):
        run_healthchecks(checks({"http": f"http://127.0.0.1:{http_server}/ok", "body": "welcome",
                                 "deadline": 0.2, "interval": 0.1}), None,
                         RecordingActionHandler(), VARS)


def test_tcp_waits_for_a_late_listener():
    """The listener opens while the check waits after its second refused attempt."""
    port = free_port()
    listener = socket.socket()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            listener.bind(("127.0.0.1", port))
            listener.listen()
    try:
        handler = RecordingActionHandler()
        [check] = checks({"tcp": port, "deadline": 600, "interval": 0.1})
        run_healthcheck(check, None, handler, VARS, sleep=sleep)
        [passed] = [e for e in handler.events if e.kind == "progress"]
        assert passed.data["attempts"] == 3
    finally:
        listener.close()


def test_tcp_closed_port_fails():
    with pytest.raises(ProvisioningError, match="cannot connect"):
        run_healthchecks(checks({"tcp": f"127.0.0.1:{free_port()}", "deadline": 0.3,
                                 "interval": 0.1}), None, RecordingActionHandler(), VARS)


def test_command_check_runs_on_the_machine(tmp_path):
    machine = UnixMachine("web-1", LocalTransport(str(tmp_path)))
    run_healthchecks(checks({"command": "true"}), machine, RecordingActionHandler(), VARS)
    with pytest.raises(ProvisioningError) as info:
        run_healthchecks(checks([{"command": "echo broken >&2; false", "deadline": 0.2,
                                  "interval": 0.1}]), machine, RecordingActionHandler(), VARS)
    assert info.value.machine == "web-1" and "broken" in str(info.value)


def test_why_run_only_reports():
    handler = RecordingActionHandler(why_run=True)
    run_healthchecks(checks({"tcp": f"127.0.0.1:{free_port()}"}), None, handler, VARS)
    [event] = handler.events
    assert event.kind == "progress" and event.description.startswith("would check tcp 127.0.0.1:")
