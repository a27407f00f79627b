"""WinRMConnection: commands over WS-Management (pywinrm), for Windows machines.

One WinRS shell is opened lazily and reused for every command; each command is a WinRS Command
in it (``cmd.exe /c`` or ``powershell.exe -EncodedCommand``), with its own exit code, output,
stdin and timeout. Files are added by ``WinRMTransport`` (transport.py).

pywinrm, requests and spnego are imported only when a transport connects; their exceptions are
translated to ``provisioning.errors`` in ``errors.py`` and nowhere else.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Iterator, Mapping

from provisioning.errors import (
    CommandResult,
    CommandTimeout,
    ConfigError,
    ConnectError,
    HostKeyMismatch,
    TransportError,
)
from provisioning.transports import powershell as ps
from provisioning.transports.base import (
    DEFAULT_COMMAND_TIMEOUT,
    StreamCallback,
    Transport,
)
from provisioning.transports.winrm.errors import FAULT_SHELL_NOT_FOUND, map_winrm_errors, root_cause
from provisioning.transports.winrm.wire import (
    adapter_class,
    certificate_thumbprints,
    import_pywinrm,
    normalize_thumbprint,
    peer_certificate,
)

__all__ = ["WinRMConnection", "AUTH_METHODS", "DEFAULT_CHUNK_SIZE"]

log = logging.getLogger("provisioning.transports.winrm")

AUTH_METHODS = ("basic", "ntlm", "kerberos", "credssp")
SCHEMES = ("http", "https")
SHELLS = ("powershell", "cmd")
DEFAULT_PORTS = {"http": 5985, "https": 5986}

#: raw bytes per base64 line: keeps every Send envelope below 150 KB, the smallest
#: MaxEnvelopeSizekb a Windows host ships with (2008 R2); newer hosts allow 500 KB
DEFAULT_CHUNK_SIZE = 64 * 1024

#: longest command line WinRS hands to CreateProcess (no cmd.exe in between)
_MAX_COMMAND_LINE = 32000


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


class LineSink:
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
class WinRMConnection(Transport):
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
        self.cert_thumbprint = normalize_thumbprint(cert_thumbprint) if cert_thumbprint else None
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
        der = peer_certificate(self.hostname, self.port, self.connect_timeout)
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
            f"{what}: the certificate of {self.host} is not trusted ({root_cause(exc)}); expected "
            f"{expected}, {seen_text}; {advice}",
            host=self.host, expected=expected, seen=seen["sha256"] if seen else None,
            machine=self.machine)

    def _pin_on_first_use(self) -> None:
        der = peer_certificate(self.hostname, self.port, self.connect_timeout)
        if der is None:
            raise ConnectError(f"cannot fetch the certificate of {self.host} to trust it on first use",
                               host=self.host, machine=self.machine)
        thumbprint = certificate_thumbprints(der)["sha256"]
        self.cert_thumbprint = thumbprint.lower()
        assert self.on_new_certificate is not None
        self.on_new_certificate(thumbprint)

    def _open(self) -> None:
        """Build the pywinrm protocol and open the shell (called with the lock held)."""
        winrm = import_pywinrm()
        if self.scheme == "https" and not self.cert_thumbprint and self.on_new_certificate:
            self._pin_on_first_use()
        validate = "ignore" if self.cert_thumbprint else "validate"
        with map_winrm_errors(self, "connect"):
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
        adapter = adapter_class()(self.connect_timeout, self.cert_thumbprint)
        session.mount("https://", adapter)
        session.mount("http://", adapter_class()(self.connect_timeout, None))
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
            if exc.wsman_fault_code != FAULT_SHELL_NOT_FOUND:
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
        wex = import_pywinrm().exceptions
        WinRMOperationTimeoutError, WSManFaultError = wex.WinRMOperationTimeoutError, wex.WSManFaultError

        started = time.monotonic()
        deadline = started + timeout
        out = _Output("stdout", stream, clixml=False, keep=keep_stdout)
        err = _Output("stderr", stream, clixml=clixml)
        with self._lock, map_winrm_errors(self, f"run {display[:60]!r}"):
            command_id = self._start(command, args, skip_cmd_shell=skip_cmd_shell,
                                     console_stdin=stdin is None)
            protocol, shell_id = self._session()
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
