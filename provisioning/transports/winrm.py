"""WinRMTransport: commands and files over WS-Management (pywinrm), for Windows machines.

One WinRS shell is opened lazily and reused for every command; each command is a WinRS Command
in it (``cmd.exe /c`` or ``powershell.exe -EncodedCommand``), with its own exit code, output,
stdin and timeout. Files travel as base64 lines on the command's stdin (upload) or stdout
(download), hashed with SHA-256 on both sides, written under a temporary name and moved into
place on the remote side. Directories travel as one zip.

pywinrm, requests and spnego are imported only when a transport connects; their exceptions are
translated to ``provisioning.errors`` in ``_map_errors`` and nowhere else.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import hashlib
import io
import logging
import math
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
import zipfile
from typing import IO, Any, Callable, Iterator, Mapping

from provisioning.errors import (AuthenticationError, CommandTimeout, ConfigError, ConnectError,
                                 HostKeyMismatch, MissingExtra, TransferError, TransportError)
from provisioning.machine.result import CommandResult
from provisioning.transports import powershell as ps
from provisioning.transports.base import (DEFAULT_COMMAND_TIMEOUT, StreamCallback, Transport,
                                          check_sha256, sha256_file)

__all__ = ["WinRMTransport", "winrm_transport_from_options", "AUTH_METHODS", "certificate_thumbprints"]

log = logging.getLogger(__name__)

AUTH_METHODS = ("basic", "ntlm", "kerberos", "credssp")
SCHEMES = ("http", "https")
SHELLS = ("powershell", "cmd")
DEFAULT_PORTS = {"http": 5985, "https": 5986}

#: raw bytes per base64 line: keeps every Send envelope below 150 KB, the smallest
#: MaxEnvelopeSizekb a Windows host ships with (2008 R2); newer hosts allow 500 KB
DEFAULT_CHUNK_SIZE = 64 * 1024

#: WS-Management fault codes we react to
_FAULT_SHELL_NOT_FOUND = 2150858843
_FAULT_ACCESS_DENIED = 5

#: longest command line WinRS hands to CreateProcess (no cmd.exe in between)
_MAX_COMMAND_LINE = 32000


# -- backend loading and the one exception table ---------------------------------------------
def _import_pywinrm() -> Any:
    try:
        import winrm.exceptions  # noqa: F401
        import winrm.protocol
    except ImportError as exc:
        raise MissingExtra("the WinRM transport", "winrm", "pywinrm") from exc
    return winrm


def certificate_thumbprints(der: bytes) -> dict[str, str]:
    """SHA-1 (what Windows shows as ``Thumbprint``) and SHA-256 of a DER certificate."""
    return {"sha1": hashlib.sha1(der).hexdigest().upper(),
            "sha256": hashlib.sha256(der).hexdigest().upper()}


def _normalize_thumbprint(value: str) -> str:
    text = "".join(ch for ch in str(value) if ch not in ": \t").lower()
    if len(text) not in (40, 64) or any(ch not in "0123456789abcdef" for ch in text):
        raise ConfigError(f"cert_thumbprint must be a SHA-1 (40 hex digits, as Windows shows it) or "
                          f"SHA-256 (64 hex digits) certificate fingerprint; got {value!r}",
                          key="machine_options.transport.cert_thumbprint")
    return text


def _peer_certificate(host: str, port: int, timeout: float) -> bytes | None:
    """The DER certificate the endpoint presents, fetched without trusting it (for messages
    and for trust on first use)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


@contextlib.contextmanager
def _map_errors(transport: "WinRMTransport", what: str) -> Iterator[None]:
    """Translate pywinrm/requests/spnego exceptions into ours, most specific first."""
    if transport._closed:
        raise TransportError(f"{what}: the WinRM transport to {transport.host} was disconnected; "
                             "ask the driver for a new machine", host=transport.host,
                             machine=transport.machine)
    try:
        yield
    except TransportError:
        raise
    except Exception as exc:  # the table below decides; anything unknown is re-raised as is
        mapped = _translate(transport, what, exc)
        if mapped is None:
            raise
        raise mapped from exc


def _translate(transport: "WinRMTransport", what: str, exc: BaseException) -> Exception | None:
    import requests.exceptions as rex
    from winrm import exceptions as wex

    host, machine = transport.host, transport.machine
    kind = type(exc).__name__
    if isinstance(exc, (wex.AuthenticationError, PermissionError)) or kind in (
            "KerberosExchangeError", "MutualAuthenticationError", "AuthenticationException") or (
            type(exc).__module__.startswith("spnego")):
        return AuthenticationError(
            f"{what}: {host} refused the {transport.auth} credentials of user "
            f"{transport.username!r} ({exc}); check the username and password (or password_env), "
            "and that the auth method is enabled on the host (winrm get winrm/config/service/auth)",
            host=host, machine=machine)
    if isinstance(exc, rex.SSLError):
        return transport._certificate_error(what, exc)
    if isinstance(exc, rex.ConnectTimeout):
        return ConnectError(f"{what}: no answer from {host} within {transport.connect_timeout:g} s; "
                            "is the machine up, WinRM listening on that port, and the firewall open?",
                            host=host, machine=machine)
    if isinstance(exc, rex.ReadTimeout):
        return ConnectError(f"{what}: {host} stopped answering (no reply within "
                            f"{transport.read_timeout:g} s)", host=host, machine=machine)
    if isinstance(exc, rex.ConnectionError):
        return ConnectError(f"{what}: cannot connect to {host}: {_root_cause(exc)}; is the machine up, "
                            "the WinRM service running and the port open?", host=host, machine=machine)
    if isinstance(exc, (rex.InvalidURL, rex.MissingSchema, rex.InvalidSchema, rex.URLRequired)):
        return ConfigError(f"{what}: invalid WinRM endpoint {transport.endpoint}: {exc}",
                           key="machine_options.transport.host")
    if isinstance(exc, rex.RequestException):
        return TransportError(f"{what}: HTTP request to {host} failed: {exc}", host=host,
                              machine=machine)
    if isinstance(exc, wex.WSManFaultError):
        if exc.wsman_fault_code == _FAULT_ACCESS_DENIED:
            return AuthenticationError(f"{what}: {host} denied access to user {transport.username!r}: "
                                       f"{exc.reason}", host=host, machine=machine)
        return TransportError(f"{what}: {host} answered with a WS-Management fault "
                              f"{exc.wsman_fault_code or exc.fault_subcode or ''}: {exc.reason}",
                              host=host, machine=machine)
    if isinstance(exc, wex.WinRMTransportError):
        return TransportError(f"{what}: {host} answered HTTP {exc.code}: "
                              f"{(exc.response_text or '')[:200]}", host=host, machine=machine)
    if isinstance(exc, wex.WinRMOperationTimeoutError):
        return ConnectError(f"{what}: {host} did not complete a WS-Management operation in time",
                            host=host, machine=machine)
    if isinstance(exc, wex.WinRMError):
        text = str(exc)
        if "not installed" in text or "requires" in text or "unsupported auth" in text:
            return ConfigError(f"{what}: {text}", key="machine_options.transport.auth")
        return TransportError(f"{what}: {text}", host=host, machine=machine)
    return None


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__context__ is not None and seen.__context__ is not seen:
        seen = seen.__context__
    text = str(seen)
    return text.split("] ", 1)[-1] if text else type(seen).__name__


_ADAPTER_CLASS: Any = None


def _adapter_class() -> Any:
    """requests HTTPAdapter giving every request our connect timeout and, when pinned,
    checking the certificate's fingerprint on the very connection that carries the request."""
    global _ADAPTER_CLASS
    if _ADAPTER_CLASS is None:
        from requests.adapters import HTTPAdapter

        class _WinRMAdapter(HTTPAdapter):
            def __init__(self, connect_timeout: float, fingerprint: str | None) -> None:
                self._connect_timeout = connect_timeout
                self._fingerprint = fingerprint
                super().__init__()

            def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
                if self._fingerprint:
                    pool_kwargs["assert_fingerprint"] = self._fingerprint
                super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

            def send(self, request, stream=False, timeout=None, verify=True, cert=None,
                     proxies=None):
                read = timeout[1] if isinstance(timeout, tuple) else timeout
                return super().send(request, stream=stream, timeout=(self._connect_timeout, read),
                                    verify=verify, cert=cert, proxies=proxies)

        _ADAPTER_CLASS = _WinRMAdapter
    return _ADAPTER_CLASS


# -- output handling -----------------------------------------------------------------------
class _Output:
    """Decodes one stream (UTF-8, code page 65001) incrementally, optionally turning PowerShell
    CLIXML into text, keeping it and/or streaming it."""

    def __init__(self, name: str, stream: StreamCallback | None, *, clixml: bool,
                 keep: bool = True) -> None:
        self.name = name
        self.stream = stream
        self.keep = keep
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.clixml = ps.ClixmlDecoder() if clixml else None
        self.parts: list[str] = []

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self.decoder.decode(data, final)
        if self.clixml is not None:
            text = self.clixml.feed(text) + (self.clixml.flush() if final else "")
        if text:
            if self.keep:
                self.parts.append(text)
            if self.stream is not None:
                self.stream(self.name, text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class _LineSink:
    """Splits streamed stdout into lines for the download protocol."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.buffer = ""

    def __call__(self, name: str, text: str) -> None:
        if name != "stdout":
            return
        self.buffer += text
        while True:
            index = self.buffer.find("\n")
            if index < 0:
                return
            line, self.buffer = self.buffer[:index].rstrip("\r"), self.buffer[index + 1:]
            self.on_line(line)

    def close(self) -> None:
        if self.buffer.strip():
            self.on_line(self.buffer.rstrip("\r\n"))
        self.buffer = ""


# -- the transport -------------------------------------------------------------------------
class WinRMTransport(Transport):
    """A WinRM connection to one Windows machine. Thread-safe: commands run one at a time
    through the one shell. ``sudo`` and ``pty`` have no meaning over WinRM and are ignored: a
    command runs with the token of the login user (use an administrator account)."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        username: str = "Administrator",
        *,
        password: str | None = None,
        scheme: str | None = None,
        auth: str = "ntlm",
        path: str = "/wsman",
        ca_bundle: str | None = None,
        cert_thumbprint: str | None = None,
        on_new_certificate: Callable[[str], None] | None = None,
        message_encryption: str = "auto",
        allow_unencrypted: bool = False,
        connect_timeout: float = 10.0,
        operation_timeout: float = 20.0,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        transfer_timeout: float = 600.0,
        shell: str = "powershell",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        proxy: str | None = None,
        kerberos_hostname_override: str | None = None,
        kerberos_delegation: bool = False,
        machine: str | None = None,
    ) -> None:
        key = "machine_options.transport"
        if auth not in AUTH_METHODS:
            raise ConfigError(f"unknown WinRM auth {auth!r}; use one of {', '.join(AUTH_METHODS)}",
                              key=f"{key}.auth")
        scheme = scheme or ("https" if auth == "basic" else "http")
        if scheme not in SCHEMES:
            raise ConfigError(f"WinRM scheme must be http or https, got {scheme!r}", key=f"{key}.scheme")
        if shell not in SHELLS:
            raise ConfigError(f"WinRM shell must be powershell or cmd, got {shell!r}", key=f"{key}.shell")
        if message_encryption not in ("auto", "always", "never"):
            raise ConfigError("message_encryption must be auto, always or never",
                              key=f"{key}.message_encryption")
        if scheme == "http" and not allow_unencrypted and (
                auth == "basic" or message_encryption == "never"):
            raise ConfigError(
                f"WinRM {auth} auth over plain http would send "
                f"{'the password' if auth == 'basic' else 'every command'} unencrypted; use "
                "scheme: https, or ntlm/kerberos/credssp (which encrypt messages), or set "
                "allow_unencrypted: true for a lab network", key=f"{key}.scheme")
        for name, value in (("connect_timeout", connect_timeout), ("operation_timeout", operation_timeout),
                            ("command_timeout", command_timeout), ("transfer_timeout", transfer_timeout)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}",
                                  key=f"{key}.{name}")
        if not isinstance(chunk_size, int) or not 1024 <= chunk_size <= 4 * 1024 * 1024:
            raise ConfigError("chunk_size must be an integer between 1024 and 4194304 bytes",
                              key=f"{key}.chunk_size")
        if ca_bundle is not None and not os.path.isfile(ca_bundle):
            raise ConfigError(f"ca_bundle {ca_bundle!r} is not a file; give the path of a PEM file "
                              "with the CA certificates that signed the WinRM listener's certificate",
                              key=f"{key}.ca_bundle")
        self.hostname = host
        self.scheme = scheme
        self.port = int(port or DEFAULT_PORTS[scheme])
        self.username = username
        self._password = password
        self.auth = auth
        self.path = path if path.startswith("/") else "/" + path
        self.ca_bundle = ca_bundle
        self.cert_thumbprint = _normalize_thumbprint(cert_thumbprint) if cert_thumbprint else None
        self.on_new_certificate = on_new_certificate
        self.message_encryption = message_encryption
        self.connect_timeout = float(connect_timeout)
        self.operation_timeout = max(1, int(math.ceil(operation_timeout)))
        self.read_timeout = float(self.operation_timeout + max(10, self.connect_timeout))
        self.default_timeout = float(command_timeout)
        self.transfer_timeout = float(transfer_timeout)
        self.shell = shell
        self.chunk_size = chunk_size
        self.proxy = proxy
        self.kerberos_hostname_override = kerberos_hostname_override
        self.kerberos_delegation = kerberos_delegation
        self.machine = machine
        bracketed = f"[{host}]" if ":" in host else host
        self.endpoint = f"{scheme}://{bracketed}:{self.port}{self.path}"
        self.host = f"{username}@{bracketed}:{self.port} ({scheme}, {auth})"
        self._lock = threading.RLock()
        self._protocol: Any = None
        self._shell_id: str | None = None
        self._closed = False
        #: counters for callers and tests: shells opened, commands run
        self.stats = {"shells": 0, "commands": 0}

    def __repr__(self) -> str:  # never shows the password
        return f"<WinRMTransport {self.endpoint} user={self.username!r} auth={self.auth}>"

    # -- connection --------------------------------------------------------------------------
    def _certificate_error(self, what: str, exc: BaseException) -> Exception:
        der = _peer_certificate(self.hostname, self.port, self.connect_timeout)
        seen = certificate_thumbprints(der) if der else None
        seen_text = (f"it presented a certificate with SHA-1 thumbprint {seen['sha1']} "
                     f"(SHA-256 {seen['sha256']})") if seen else "its certificate could not be read"
        if self.cert_thumbprint:
            expected = self.cert_thumbprint
            advice = ("if the certificate was replaced on purpose, update cert_thumbprint "
                      "(Get-ChildItem WSMan:\\localhost\\Listener\\*\\CertificateThumbprint on the host)")
        else:
            expected = f"a certificate for {self.hostname} signed by " + (
                f"a CA in {self.ca_bundle}" if self.ca_bundle else "a trusted CA")
            advice = "give ca_bundle (the CA's PEM) or pin cert_thumbprint"
        return HostKeyMismatch(
            f"{what}: the certificate of {self.host} is not trusted ({_root_cause(exc)}); expected "
            f"{expected}, {seen_text}; {advice}",
            host=self.host, expected=expected, seen=seen["sha256"] if seen else None,
            machine=self.machine)

    def _pin_on_first_use(self) -> None:
        der = _peer_certificate(self.hostname, self.port, self.connect_timeout)
        if der is None:
            raise ConnectError(f"cannot fetch the certificate of {self.host} to trust it on first use",
                               host=self.host, machine=self.machine)
        thumbprint = certificate_thumbprints(der)["sha256"]
        self.cert_thumbprint = thumbprint.lower()
        assert self.on_new_certificate is not None
        self.on_new_certificate(thumbprint)

    def _open(self) -> None:
        """Build the pywinrm protocol and open the shell (called with the lock held)."""
        winrm = _import_pywinrm()
        if self.scheme == "https" and not self.cert_thumbprint and self.on_new_certificate:
            self._pin_on_first_use()
        validate = "ignore" if self.cert_thumbprint else "validate"
        with _map_errors(self, "connect"):
            protocol = winrm.protocol.Protocol(
                self.endpoint, transport=self.auth, username=self.username,
                password=self._password, server_cert_validation=validate,
                ca_trust_path=self.ca_bundle if validate == "validate" else None,
                read_timeout_sec=int(self.read_timeout), operation_timeout_sec=self.operation_timeout,
                message_encryption=self.message_encryption, proxy=self.proxy,
                kerberos_hostname_override=self.kerberos_hostname_override,
                kerberos_delegation=self.kerberos_delegation)
            try:
                self._build_session(protocol)
                shell_id = protocol.open_shell(codepage=65001, noprofile=True)
            except BaseException:
                protocol.transport.close_session()
                raise
        self._protocol, self._shell_id = protocol, shell_id
        self.stats["shells"] += 1
        log.debug("winrm %s: shell %s opened", self.host, shell_id)

    def _build_session(self, protocol: Any) -> None:
        """Let pywinrm set up authentication, mount our adapter, then set up message encryption
        (so even the first authenticated request honours the connect timeout and the pin)."""
        backend = protocol.transport
        wanted = backend.message_encryption
        backend.message_encryption = "never"
        try:
            session = backend.build_session()
        finally:
            backend.message_encryption = wanted
        adapter = _adapter_class()(self.connect_timeout, self.cert_thumbprint)
        session.mount("https://", adapter)
        session.mount("http://", _adapter_class()(self.connect_timeout, None))
        auth = session.auth
        available = (self.auth == "credssp" or hasattr(auth, "session_security")
                     or bool(getattr(auth, "winrm_encryption_available", False)))
        if wanted == "always" or (wanted == "auto" and self.scheme == "http"):
            if available:
                backend.setup_encryption(session)
            elif wanted == "always":
                raise ConfigError(f"message_encryption: always, but {self.auth} auth cannot encrypt "
                                  "messages; use ntlm, kerberos or credssp, or https",
                                  key="machine_options.transport.message_encryption")

    def _session(self) -> tuple[Any, str]:
        if self._closed:
            raise TransportError(f"the WinRM transport to {self.host} was disconnected; ask the "
                                 "driver for a new machine", host=self.host, machine=self.machine)
        if self._protocol is None or self._shell_id is None:
            self._open()
        return self._protocol, self._shell_id  # type: ignore[return-value]

    def _reopen(self) -> None:
        self._drop_shell()
        self._open()

    def _drop_shell(self) -> None:
        protocol, shell_id = self._protocol, self._shell_id
        self._protocol = self._shell_id = None
        if protocol is not None and shell_id is not None:
            try:
                protocol.close_shell(shell_id)
            except Exception as exc:  # closing is best effort: the host drops idle shells itself
                log.debug("winrm %s: closing shell %s failed: %s", self.host, shell_id, exc)

    # -- commands ----------------------------------------------------------------------------
    def _start(self, command: str, args: list[str], *, skip_cmd_shell: bool,
               console_stdin: bool) -> str:
        from winrm.exceptions import WSManFaultError

        protocol, shell_id = self._session()
        try:
            return protocol.run_command(shell_id, command, args, console_mode_stdin=console_stdin,
                                        skip_cmd_shell=skip_cmd_shell)
        except WSManFaultError as exc:
            if exc.wsman_fault_code != _FAULT_SHELL_NOT_FOUND:
                raise
        # the host dropped our shell (idle timeout, service restart): open a new one, once
        log.debug("winrm %s: shell gone, reopening", self.host)
        self._reopen()
        protocol, shell_id = self._session()
        return protocol.run_command(shell_id, command, args, console_mode_stdin=console_stdin,
                                    skip_cmd_shell=skip_cmd_shell)

    def _run(self, command: str, args: list[str], *, display: str, timeout: float,
             stream: StreamCallback | None, stdin: Iterator[bytes] | None,
             skip_cmd_shell: bool, clixml: bool, keep_stdout: bool = True) -> CommandResult:
        """One WinRS command: start it, feed stdin, receive until done or past ``timeout``."""
        wex = _import_pywinrm().exceptions
        WinRMOperationTimeoutError, WSManFaultError = wex.WinRMOperationTimeoutError, wex.WSManFaultError

        started = time.monotonic()
        deadline = started + timeout
        out = _Output("stdout", stream, clixml=False, keep=keep_stdout)
        err = _Output("stderr", stream, clixml=clixml)
        with self._lock, _map_errors(self, f"run {display[:60]!r}"):
            command_id = self._start(command, args, skip_cmd_shell=skip_cmd_shell,
                                     console_stdin=stdin is None)
            protocol, shell_id = self._protocol, self._shell_id
            self.stats["commands"] += 1
            finished = False
            try:
                if stdin is not None:
                    self._send_stdin(protocol, shell_id, command_id, stdin, deadline, display,
                                     timeout, out, err)
                exit_status = -1
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._timeout(display, timeout, out, err)
                    protocol.operation_timeout_sec = max(1, min(self.operation_timeout,
                                                                int(math.ceil(remaining))))
                    try:
                        stdout, stderr, exit_status, done = protocol.get_command_output_raw(
                            shell_id, command_id)
                    except WinRMOperationTimeoutError:
                        continue  # no output within the operation timeout: ask again
                    out.feed(stdout)
                    err.feed(stderr)
                    if done:
                        break
                out.feed(b"", final=True)
                err.feed(b"", final=True)
                finished = True
            finally:
                protocol.operation_timeout_sec = self.operation_timeout
                with contextlib.suppress(WSManFaultError, Exception):
                    # terminate on timeout/errors, release the command's resources otherwise
                    protocol.cleanup_command(shell_id, command_id)
                if not finished:
                    log.debug("winrm %s: command %s stopped early", self.host, command_id)
        return CommandResult(command=display, exit_status=exit_status, stdout=out.text,
                             stderr=err.text, host=self.host, duration=time.monotonic() - started)

    def _send_stdin(self, protocol: Any, shell_id: str, command_id: str, stdin: Iterator[bytes],
                    deadline: float, display: str, timeout: float, out: _Output,
                    err: _Output) -> None:
        from winrm.exceptions import WSManFaultError

        pending = next(stdin, None)
        while pending is not None:
            if time.monotonic() > deadline:
                raise self._timeout(display, timeout, out, err)
            following = next(stdin, None)
            try:
                protocol.send_command_input(shell_id, command_id, pending, end=following is None)
            except WSManFaultError as exc:
                # the command ended before reading all its input: its output says why
                log.debug("winrm %s: stdin refused (%s)", self.host, exc.reason)
                return
            pending = following

    def _timeout(self, display: str, timeout: float, out: _Output, err: _Output) -> CommandTimeout:
        return CommandTimeout(display, timeout, host=self.host, machine=self.machine,
                              stdout=out.text, stderr=err.text)

    def execute(self, command: str, *, timeout: float | None = None,
                stream: StreamCallback | None = None, env: Mapping[str, str] | None = None,
                sudo: bool = False, input: bytes | str | None = None, pty: bool = False,
                shell: str | None = None) -> CommandResult:
        """Run ``command`` in PowerShell (default) or ``cmd``; ``shell`` overrides the
        transport's default for one call."""
        shell = shell or self.shell
        timeout = self.default_timeout if timeout is None else float(timeout)
        stdin = None
        if input is not None:
            data = input.encode("utf-8") if isinstance(input, str) else bytes(input)
            stdin = _chunks(data, 48 * 1024)
        if shell == "powershell":
            return self.run_powershell(command, timeout=timeout, stream=stream, env=env,
                                       stdin=stdin)
        if shell != "cmd":
            raise ConfigError(f"shell must be powershell or cmd, got {shell!r}")
        line = _cmd_env_prefix(env) + command
        return self._run(line, [], display=command, timeout=timeout, stream=stream, stdin=stdin,
                         skip_cmd_shell=False, clixml=False)

    def run_powershell(self, script: str, *, timeout: float | None = None,
                       stream: StreamCallback | None = None, env: Mapping[str, str] | None = None,
                       stdin: Iterator[bytes] | None = None, functions: tuple[str, ...] = (),
                       keep_stdout: bool = True) -> CommandResult:
        """Run a PowerShell script through ``powershell.exe -EncodedCommand``; ``functions``
        names library functions (``powershell.LIBRARY``) to define first."""
        timeout = self.default_timeout if timeout is None else float(timeout)
        full = ps.script_with(functions, _ps_env_prefix(env) + script)
        argv = ps.powershell_argv(full)
        if sum(len(a) + 1 for a in argv) > _MAX_COMMAND_LINE:
            raise ConfigError(
                f"PowerShell script of {len(script)} characters is too long for one WinRM command "
                "line (about 12000 characters fit); upload it as a .ps1 file and run it with "
                "powershell -File")
        return self._run(argv[0], argv[1:], display=script, timeout=timeout, stream=stream,
                         stdin=stdin, skip_cmd_shell=True, clixml=True, keep_stdout=keep_stdout)

    # -- files -------------------------------------------------------------------------------
    def remote_sha256(self, path: str) -> str | None:
        result = self.run_powershell(f"Get-ProvisioningSha256 -Path {ps.ps_quote(path)}",
                                     functions=("Get-ProvisioningSha256",), timeout=self.transfer_timeout)
        words = result.stdout.split()
        if result.ok and len(words) == 2 and words[0] == "sha256":
            return words[1].lower()
        if result.ok and words == ["missing"]:
            return None
        raise TransferError(f"cannot hash {path} on {self.host}: "
                            f"{(result.stderr or result.stdout).strip()[:300]}",
                            host=self.host, machine=self.machine)

    def _upload(self, source: IO[bytes], size: int, sha256: str, remote_path: str, *,
                expand: bool = False, what: str) -> None:
        def lines() -> Iterator[bytes]:
            for block in iter(lambda: source.read(self.chunk_size), b""):
                yield base64.b64encode(block) + b"\r\n"

        call = (f"$input | Receive-ProvisioningFile -Path {ps.ps_quote(remote_path)} "
                f"-Sha256 {ps.ps_quote(sha256)}" + (" -Expand" if expand else ""))
        stdin = lines() if size else iter([b""])
        try:
            result = self.run_powershell(call, functions=("Receive-ProvisioningFile",),
                                         stdin=stdin, timeout=self.transfer_timeout)
        except CommandTimeout as exc:
            raise TransferError(f"{what}: timed out after {self.transfer_timeout:g} s; raise "
                                "transfer_timeout", host=self.host, machine=self.machine) from exc
        words = result.stdout.split()
        seen = words[1] if result.ok and len(words) >= 2 and words[0] == "sha256" else None
        if seen is None:
            raise TransferError(f"{what}: failed on {self.host} (exit {result.exit_status}): "
                                f"{(result.stderr or result.stdout).strip()[:300]}",
                                host=self.host, machine=self.machine)
        check_sha256(sha256, seen, what=what, host=self.host)

    def write_file(self, path: str, content: bytes, *, mode: int | None = None) -> None:
        """Write ``content`` atomically. ``mode`` is ignored here (Windows has no mode bits;
        ``WindowsMachine.set_attributes`` maps it to the read-only flag)."""
        self._upload(io.BytesIO(content), len(content), hashlib.sha256(content).hexdigest(), path,
                     what=f"write {path}")

    def upload_file(self, local_path: str, remote_path: str) -> None:
        if os.path.isdir(local_path):
            self.upload_directory(local_path, remote_path)
            return
        what = f"upload {local_path} -> {remote_path}"
        try:
            size = os.path.getsize(local_path)
            digest = sha256_file(local_path)
            with open(local_path, "rb") as source:
                self._upload(source, size, digest, remote_path, what=what)
        except OSError as exc:
            raise TransferError(f"{what}: {exc}", host=self.host, machine=self.machine) from exc

    def upload_directory(self, local_dir: str, remote_dir: str) -> None:
        """Replace ``remote_dir`` with a copy of ``local_dir`` (one zip, extracted beside the
        target, then moved into its place)."""
        what = f"upload directory {local_dir} -> {remote_dir}"
        with tempfile.TemporaryFile() as archive:
            try:
                _zip_directory(local_dir, archive)
            except OSError as exc:
                raise TransferError(f"{what}: {exc}", host=self.host, machine=self.machine) from exc
            size = archive.tell()
            archive.seek(0)
            digest = hashlib.sha256()
            for block in iter(lambda: archive.read(1 << 20), b""):
                digest.update(block)
            archive.seek(0)
            self._upload(archive, size, digest.hexdigest(), remote_dir, expand=True, what=what)

    def _download(self, remote_path: str, sink: IO[bytes], what: str) -> str | None:
        """Stream ``remote_path`` into ``sink``; returns the kind ("file" or "zip"), or None when
        the path does not exist. Verifies the sha256 of what arrived."""
        state: dict[str, Any] = {"kind": None, "size": None, "sha256": None, "missing": False}
        digest = hashlib.sha256()
        received = 0

        def on_line(line: str) -> None:
            nonlocal received
            if not line:
                return
            if state["kind"] is None and not state["missing"]:
                words = line.split()
                if words == ["missing"]:
                    state["missing"] = True
                elif len(words) == 4 and words[0] == "kind" and words[2] == "size":
                    state["kind"], state["size"] = words[1], int(words[3])
                else:
                    raise TransferError(f"{what}: unexpected first line {line[:80]!r}",
                                        host=self.host, machine=self.machine)
            elif line.startswith("sha256 "):
                state["sha256"] = line.split()[1].lower()
            else:
                block = base64.b64decode(line)
                digest.update(block)
                sink.write(block)
                received += len(block)

        lines = _LineSink(on_line)
        call = (f"Send-ProvisioningFile -Path {ps.ps_quote(remote_path)} "
                f"-ChunkSize {self.chunk_size}")
        try:
            result = self.run_powershell(call, functions=("Send-ProvisioningFile",), stream=lines,
                                         timeout=self.transfer_timeout, keep_stdout=False)
        except CommandTimeout as exc:
            raise TransferError(f"{what}: timed out after {self.transfer_timeout:g} s; raise "
                                "transfer_timeout", host=self.host, machine=self.machine) from exc
        lines.close()
        if state["missing"]:
            return None
        if not result.ok or state["kind"] is None or state["sha256"] is None:
            raise TransferError(f"{what}: failed on {self.host} (exit {result.exit_status}): "
                                f"{result.stderr.strip()[:300] or 'incomplete output'}",
                                host=self.host, machine=self.machine)
        if received != state["size"]:
            raise TransferError(f"{what}: received {received} of {state['size']} bytes",
                                host=self.host, machine=self.machine)
        check_sha256(state["sha256"], digest.hexdigest(), what=what, host=self.host)
        return state["kind"]

    def read_file(self, path: str) -> bytes | None:
        buffer = io.BytesIO()
        kind = self._download(path, buffer, f"read {path}")
        if kind is None:
            return None
        if kind != "file":
            raise TransferError(f"read {path}: it is a directory, not a file", host=self.host,
                                machine=self.machine)
        return buffer.getvalue()

    def download_file(self, remote_path: str, local_path: str) -> None:
        """Copy a remote file (or directory) here, atomically."""
        what = f"download {remote_path} -> {local_path}"
        target = os.path.abspath(local_path)
        parent = os.path.dirname(target)
        try:
            os.makedirs(parent, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(dir=parent, prefix=".provisioning-", delete=False)
        except OSError as exc:
            raise TransferError(f"{what}: {exc}", host=self.host, machine=self.machine) from exc
        try:
            with handle:
                kind = self._download(remote_path, handle, what)
            if kind is None:
                raise TransferError(f"{what}: {remote_path} does not exist on {self.host}",
                                    host=self.host, machine=self.machine)
            if kind == "zip":
                _replace_directory_from_zip(handle.name, target)
            else:
                os.replace(handle.name, target)
        except OSError as exc:
            raise TransferError(f"{what}: {exc}", host=self.host, machine=self.machine) from exc
        finally:
            if os.path.exists(handle.name):
                os.unlink(handle.name)

    # -- lifecycle ---------------------------------------------------------------------------
    def connect(self, timeout: float | None = None) -> None:
        """Authenticate and open the shell now (``wait_until_connectable`` calls this).
        ``timeout`` bounds the TCP/TLS connect when shorter than ``connect_timeout``."""
        with self._lock:
            if self._protocol is not None:
                return
            configured = self.connect_timeout
            if timeout is not None:
                self.connect_timeout = max(0.5, min(configured, float(timeout)))
            try:
                self._session()
            finally:
                self.connect_timeout = configured

    def available(self) -> bool:
        """True when WinRM answers and runs a command; False while it is unreachable. Refused
        credentials and untrusted certificates raise: waiting will not fix them."""
        try:
            return self.execute("exit 0", shell="cmd", timeout=self.connect_timeout + 30).ok
        except ConnectError:
            with self._lock:
                self._protocol = self._shell_id = None
            return False

    def disconnect(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._drop_shell()
            self._closed = True


# -- helpers -------------------------------------------------------------------------------
def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    if not data:
        yield b""
        return
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _check_env_name(name: str) -> None:
    if not name or any(ch in name for ch in "=\r\n\0\"'`$;&|<>^% "):
        raise ConfigError(f"invalid environment variable name {name!r}")


def _ps_env_prefix(env: Mapping[str, str] | None) -> str:
    lines = []
    for name, value in (env or {}).items():
        _check_env_name(name)
        lines.append(f"$env:{name} = {ps.ps_quote(str(value))}\n")
    return "".join(lines)


def _cmd_env_prefix(env: Mapping[str, str] | None) -> str:
    parts = []
    for name, value in (env or {}).items():
        _check_env_name(name)
        text = str(value)
        if any(ch in text for ch in '"%\r\n'):
            raise ConfigError(f"environment value of {name} contains \", % or a newline, which "
                              "cmd cannot pass safely; use the powershell shell for it")
        parts.append(f'set "{name}={text}" && ')
    return "".join(parts)


def _zip_directory(local_dir: str, archive: IO[bytes]) -> None:
    """Zip a directory with stable order and timestamps (the same tree gives the same bytes)."""
    if not os.path.isdir(local_dir):
        raise FileNotFoundError(f"not a directory: {local_dir}")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(local_dir):
            dirs.sort()
            rel_root = os.path.relpath(root, local_dir)
            if rel_root != "." and not files and not dirs:
                info = zipfile.ZipInfo(rel_root.replace(os.sep, "/") + "/", (1980, 1, 1, 0, 0, 0))
                zf.writestr(info, b"")
            for name in sorted(files):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
                info = zipfile.ZipInfo(rel, (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as source, zf.open(info, "w") as target:
                    shutil.copyfileobj(source, target, 1 << 20)


def _replace_directory_from_zip(archive: str, target: str) -> None:
    """Extract into a sibling temporary directory, then swap it into ``target``'s place."""
    parent = os.path.dirname(target)
    staging = tempfile.mkdtemp(dir=parent, prefix=".provisioning-")
    old = None
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)  # zipfile drops absolute paths and ".." components
        if os.path.exists(target):
            old = f"{target}.provisioning-old-{uuid.uuid4().hex}"
            os.replace(target, old)
        os.replace(staging, target)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            if os.path.isdir(old):
                shutil.rmtree(old, ignore_errors=True)
            elif os.path.exists(old):
                os.unlink(old)


# the options builder lives in winrm_options.py; imported last (it imports this module)
from provisioning.transports.winrm_options import winrm_transport_from_options  # noqa: E402
