"""Healthchecks: is a converged machine actually serving? ``tcp``, ``http`` or ``command``.

A check is retried until it passes or its ``deadline`` (seconds, default 30) runs out; then the
machine fails ``up`` with the last reason. Targets may use Jinja (``{{ machine.address }}``).
Cluster file forms::

    healthcheck: {tcp: "{{ machine.address }}:22"}
    healthcheck: {http: "http://{{ machine.address }}/", expect: 200, body: "Welcome"}
    healthcheck: [{command: "systemctl is-active nginx", deadline: 60}]

Network checks connect from this host. A driver whose machines live where this host cannot
route (a network namespace) may offer ``open_connection(spec, host, port, timeout) -> socket``;
the check then connects through it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlsplit

from provisioning.convergence.steps import render_string
from provisioning.errors import ProvisioningError
from provisioning.inputs.records import record
from provisioning.inputs.schema import Problems, describe_type, one_or_many

if TYPE_CHECKING:  # pragma: no cover
    import socket

    from provisioning.actions import ActionHandler
    from provisioning.machine.base import Machine

__all__ = ["HealthCheck", "parse_healthchecks", "run_healthchecks", "run_healthcheck",
           "DEFAULT_DEADLINE"]

DEFAULT_DEADLINE = 30.0
KINDS = ("tcp", "http", "command")
_KEYS = KINDS + ("expect", "body", "deadline", "interval", "timeout")

#: (host, port, timeout) -> a connected socket
SocketOpener = Callable[[str, int, float], "socket.socket"]


@record(frozen=True)
class HealthCheck:
    """One check. ``target`` is a ``host:port``, a URL or a command (maybe a Jinja string)."""

    kind: str
    target: str
    key: str
    expect: int = 200
    body: str | None = None
    deadline: float = DEFAULT_DEADLINE
    interval: float = 1.0
    timeout: float = 5.0

    def describe(self) -> str:
        extra = ""
        if self.kind == "http":
            extra = f" expecting {self.expect}" + (f" and {self.body!r}" if self.body else "")
        return f"{self.kind} {self.target}{extra}"


# -- parsing ---------------------------------------------------------------------------------
def parse_healthchecks(value: Any, key: str, problems: Problems) -> list[HealthCheck]:
    if value is None:
        return []
    out = []
    for item, where in one_or_many(value, key):
        check = _parse_one(item, where, problems)
        if check is not None:
            out.append(check)
    return out


def _parse_one(item: Any, key: str, problems: Problems) -> HealthCheck | None:
    body = problems.mapping(item, key, "a healthcheck mapping with one of tcp, http, command")
    if body is None:
        return None
    before = len(problems.items)
    problems.unknown_keys(body, _KEYS, key)
    kinds = [k for k in KINDS if k in body]
    if len(kinds) != 1:
        problems.add(key, "expected exactly one of tcp, http, command; got "
                          + (" and ".join(kinds) if kinds else "none"))
        return None
    kind = kinds[0]
    target = body[kind]
    if kind == "tcp" and isinstance(target, int) and not isinstance(target, bool):
        target = f"{{{{ machine.address }}}}:{target}"
    if not isinstance(target, str) or not target.strip():
        problems.add(f"{key}.{kind}", f"expected {_WHAT[kind]}, got {describe_type(target)}")
        return None
    if kind == "http":
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.add(f"{key}.http", f"expected an http:// or https:// URL, got {target!r}")
    if kind == "tcp" and "{{" not in target:
        _split_host_port(target, problems, f"{key}.tcp")
    for name in ("expect", "body"):
        if name in body and kind != "http":
            problems.add(f"{key}.{name}", f"only http checks take {name!r}")
    expect = problems.field(body, "expect", key, int, default=200, expected="an HTTP status code")
    if not 100 <= expect <= 599:
        problems.add(f"{key}.expect", f"expected an HTTP status code (100-599), got {expect}")
    text = problems.field(body, "body", key, str, expected="text the response body contains")
    deadline = problems.positive_number(body, "deadline", key, DEFAULT_DEADLINE) or DEFAULT_DEADLINE
    interval = problems.positive_number(body, "interval", key, 1.0) or 1.0
    timeout = problems.positive_number(body, "timeout", key, 5.0) or 5.0
    if len(problems.items) != before:
        return None
    return HealthCheck(kind=kind, target=target.strip(), key=key, expect=expect, body=text,
                       deadline=deadline, interval=interval, timeout=timeout)


_WHAT = {"tcp": "host:port or a port number", "http": "a URL", "command": "a command"}


def _split_host_port(text: str, problems: Problems | None = None, key: str = "") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        if problems is not None:
            problems.add(key, f"expected host:port (port 1-65535), got {text!r}")
            return "", 0
        raise ProvisioningError(f"healthcheck target {text!r} is not host:port")
    return host, int(port)


# -- running ---------------------------------------------------------------------------------
def run_healthchecks(checks: list[HealthCheck], machine: "Machine | None",
                     action_handler: "ActionHandler", variables: Mapping[str, Any], *,
                     file: str | None = None, opener: SocketOpener | None = None) -> None:
    """Run every check in order; the first one past its deadline raises ProvisioningError."""
    for check in checks:
        run_healthcheck(check, machine, action_handler, variables, file=file, opener=opener)


def run_healthcheck(check: HealthCheck, machine: "Machine | None", action_handler: "ActionHandler",
                    variables: Mapping[str, Any], *, file: str | None = None,
                    opener: SocketOpener | None = None, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> None:
    target = render_string(check.target, variables, file=file, key=f"{check.key}.{check.kind}")
    label = f"healthcheck {check.kind} {target}"
    if action_handler.why_run:
        action_handler.report_progress(f"would check {check.describe()}")
        return
    probe = {"tcp": _tcp, "http": _http, "command": _command}[check.kind]
    started = clock()
    deadline = started + check.deadline
    attempts = 0
    while True:
        attempts += 1
        reason = probe(check, target, machine, opener)
        if reason is None:
            action_handler.report_progress(f"{label}: passed after {clock() - started:.1f} s",
                                           data={"healthcheck": check.kind, "target": target,
                                                 "attempts": attempts})
            return
        if clock() + check.interval > deadline:
            raise ProvisioningError(
                f"{label} failed for {check.deadline:g} s ({attempts} attempts); last: {reason}",
                machine=machine.name if machine is not None else None)
        sleep(check.interval)


def _connect(host: str, port: int, timeout: float, opener: SocketOpener | None) -> "socket.socket":
    if opener is not None:
        return opener(host, port, timeout)
    import socket  # the socket module (and its selectors) only for a network check

    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _tcp(check: HealthCheck, target: str, machine, opener) -> str | None:
    try:
        host, port = _split_host_port(target)
        _connect(host, port, check.timeout, opener).close()
    except ProvisioningError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    return None


def _http(check: HealthCheck, target: str, machine, opener) -> str | None:
    import http.client

    parts = urlsplit(target)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        sock = _connect(host, port, check.timeout, opener)
        if parts.scheme == "https":
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        conn = http.client.HTTPConnection(host, port, timeout=check.timeout)
        conn.sock = sock
        try:
            conn.request("GET", path, headers={"Host": parts.netloc, "User-Agent": "converge"})
            response = conn.getresponse()
            body = response.read(1 << 20).decode(errors="replace")
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return f"request failed: {exc}"
    if response.status != check.expect:
        return f"status {response.status}, expected {check.expect}"
    if check.body is not None and check.body not in body:
        return f"body does not contain {check.body!r}"
    return None


def _command(check: HealthCheck, target: str, machine, opener) -> str | None:
    if machine is None:
        return "no machine to run the command on"
    result = machine.execute_always(target, check=False, timeout=check.timeout)
    if result.ok:
        return None
    tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
    return f"exited {result.exit_status}" + (f": {tail[0]}" if tail else "")
