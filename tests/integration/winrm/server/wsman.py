"""A WS-Management (WinRS) server on 127.0.0.1 for testing WinRM clients.

Speaks the protocol pywinrm speaks to Windows: SOAP 1.2 envelopes over HTTP or HTTPS on
``/wsman``; the shell resource (Create, Command, Send, Receive, Signal, Delete) with WS-Man faults
for unknown shells and operation timeouts; Basic authentication and NTLM (pyspnego as the
acceptor, connection-based, with channel binding over HTTPS); and MS-WSMV message encryption
(``multipart/encrypted``, HTTP-SPNEGO-session-encrypted) after NTLM over HTTP. Like a Windows
host with default settings it refuses Basic and unencrypted messages over plain HTTP unless
started with ``allow_unencrypted``, and it refuses envelopes larger than ``max_envelope_kb``.

Commands run in threads through ``interp`` against a directory standing in for drive C:.
Every request is recorded (without secrets) in a JSON-lines log the tests read.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

import interp

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
}
SHELL_NS = NS["rsp"]
CMD_URI = SHELL_NS + "/cmd"
ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = b"--Encrypted Boundary"

FAULT_TIMED_OUT = 2150858793
FAULT_SHELL_NOT_FOUND = 2150858843
FAULT_BAD_URI = 2150858811
FAULT_ENVELOPE_TOO_LARGE = 2150858817
FAULT_UNSUPPORTED = 2150858778

#: bytes of output one Receive response may carry, as a share of the client's MaxEnvelopeSize
OUTPUT_SHARE = 0.70
#: a command's pending output beyond this blocks the command (like a full pipe)
OUTPUT_BACKLOG = 8 * 1024 * 1024


class Command:
    def __init__(self, command_id: str) -> None:
        self.id = command_id
        self.cancel = threading.Event()
        self.stdin = interp.Stdin(self.cancel)
        self.out = {"stdout": bytearray(), "stderr": bytearray()}
        self.cond = threading.Condition()
        self.done = False
        self.exit_code: int | None = None

    def write(self, stream: str, data: bytes) -> None:
        with self.cond:
            while (len(self.out["stdout"]) + len(self.out["stderr"]) > OUTPUT_BACKLOG
                   and not self.cancel.is_set()):
                self.cond.wait(0.2)
            if self.cancel.is_set():
                raise interp.Cancelled()
            self.out[stream] += data
            self.cond.notify_all()

    def finish(self, code: int) -> None:
        with self.cond:
            self.done, self.exit_code = True, code
            self.cond.notify_all()

    def take(self, limit: int, wait: float) -> tuple[bytes, bytes, bool] | None:
        """Output for one Receive, or None when nothing happened within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        with self.cond:
            while not (self.out["stdout"] or self.out["stderr"] or self.done):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)
            chunks = []
            for name in ("stdout", "stderr"):
                buffer = self.out[name]
                size = min(len(buffer), max(0, limit))
                chunks.append(bytes(buffer[:size]))
                del buffer[:size]
                limit -= size
            drained = not self.out["stdout"] and not self.out["stderr"]
            self.cond.notify_all()
            return chunks[0], chunks[1], self.done and drained


class Shell:
    def __init__(self, shell_id: str, user: str, env: dict[str, str], codepage: int) -> None:
        self.id = shell_id
        self.user = user
        self.env = env
        self.codepage = codepage
        self.commands: dict[str, Command] = {}


class WSManServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, *, fs: interp.WinFS, users: dict[str, str], auth: set[str],
                 tls_context=None, cert_der: bytes | None = None, allow_unencrypted: bool = False,
                 max_envelope_kb: int = 150, log_path: str | None = None) -> None:
        super().__init__(address, Handler)
        self.fs = fs
        self.users = users
        self.auth = auth
        self.tls = tls_context is not None
        self.cert_der = cert_der
        self.allow_unencrypted = allow_unencrypted
        self.max_envelope = max_envelope_kb * 1024
        self.shells: dict[str, Shell] = {}
        self.lock = threading.Lock()
        self.log_path = log_path
        self.log_lock = threading.Lock()
        if tls_context is not None:
            self.socket = tls_context.wrap_socket(self.socket, server_side=True)

    def log(self, **event: Any) -> None:
        if not self.log_path:
            return
        event["time"] = round(time.time(), 4)
        with self.log_lock, open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")


def _hold_while_asked(srv: WSManServer, command_id: str) -> None:
    """Not WinRM: while the file ``hold-send`` exists beside drive C, stdin is not taken (a
    test proves a transfer deadline without depending on how fast this host moves bytes)."""
    hold = os.path.join(srv.fs.root, "hold-send")
    if os.path.exists(hold):
        srv.log(event="send-held", command=command_id)
        while os.path.exists(hold):
            time.sleep(0.02)


def envelope(action: str, relates_to: str, body: str) -> bytes:
    return (
        f'<s:Envelope xml:lang="en-US" xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:x="{NS["x"]}" '
        f'xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}" xmlns:p="{NS["p"]}"><s:Header>'
        f"<a:Action>{action}</a:Action><a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def fault(relates_to: str, code: int, reason: str, subcode: str = "w:InternalError") -> bytes:
    body = (
        f"<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>{subcode}</s:Value>"
        f'</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{escape(reason)}</s:Text>'
        f'</s:Reason><s:Detail><f:WSManFault xmlns:f="{NS["f"]}" Code="{code}" '
        f'Machine="127.0.0.1"><f:Message>{escape(reason)}</f:Message></f:WSManFault>'
        "</s:Detail></s:Fault>"
    )
    return envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, body)


def _duration(text: str | None, default: float) -> float:
    match = re.fullmatch(r"PT(\d+(?:\.\d+)?)S", (text or "").strip())
    return float(match.group(1)) if match else default


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WSManServer

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()
        self.ntlm = None          # the connection's NTLM acceptor context
        self.conn_user: str | None = None  # set once NTLM completed on this connection

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # -- HTTP --------------------------------------------------------------------------------
    def _send(self, code: int, data: bytes = b"", headers: list[tuple[str, str]] = (),
              content_type: str = "application/soap+xml;charset=UTF-8") -> None:
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n" + data)  # headers and body in one write
        self.flush_headers()

    def _challenge(self, token: bytes | None = None) -> list[tuple[str, str]]:
        headers = []
        if "ntlm" in self.server.auth:
            headers.append(("WWW-Authenticate",
                            "Negotiate" + (" " + base64.b64encode(token).decode() if token else "")))
        if "basic" in self.server.auth and token is None and (
                self.server.tls or self.server.allow_unencrypted):
            headers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        return headers

    def _channel_bindings(self):
        if not self.server.tls or not self.server.cert_der:
            return None
        import hashlib

        import spnego.channel_bindings

        digest = hashlib.sha256(self.server.cert_der).digest()
        return spnego.channel_bindings.GssChannelBindings(
            application_data=b"tls-server-end-point:" + digest)

    def _authenticate(self) -> tuple[str | None, list[tuple[str, str]]]:
        """(user, headers): user None means answer 401 with ``headers``."""
        header = self.headers.get("Authorization")
        if header is None:
            if self.conn_user:
                return self.conn_user, []
            return None, self._challenge()
        scheme, _, token = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and "basic" in self.server.auth:
            if not (self.server.tls or self.server.allow_unencrypted):
                self.server.log(event="auth", method="basic", ok=False, reason="unencrypted")
                return None, self._challenge()
            try:
                user, _, password = base64.b64decode(token).decode("utf-8").partition(":")
            except ValueError:
                return None, self._challenge()
            ok = self.server.users.get(user.lower()) == password and password != ""
            self.server.log(event="auth", method="basic", user=user, ok=ok)
            return (user if ok else None), ([] if ok else self._challenge())
        if scheme in ("negotiate", "ntlm") and "ntlm" in self.server.auth:
            import spnego
            from spnego.exceptions import SpnegoError

            raw = base64.b64decode(token)
            if raw[:8] == b"NTLMSSP\0" and raw[8:12] == struct.pack("<I", 1) or self.ntlm is None:
                self.ntlm = spnego.server(protocol="ntlm",
                                          channel_bindings=self._channel_bindings())
                self.conn_user = None
            try:
                out = self.ntlm.step(raw)
            except SpnegoError as exc:
                self.ntlm = None
                self.server.log(event="auth", method="ntlm", ok=False, reason=type(exc).__name__)
                return None, self._challenge()
            if not self.ntlm.complete:
                return None, self._challenge(out)
            self.conn_user = str(self.ntlm.client_principal or "")
            self.server.log(event="auth", method="ntlm", user=self.conn_user, ok=True)
            return self.conn_user, []
        return None, self._challenge()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        if self.path.lower() != "/wsman":
            self._send(404)
            return
        user, headers = self._authenticate()
        if user is None:
            self._send(401, b"", headers)
            return
        content_type = self.headers.get("Content-Type", "")
        encrypted = content_type.startswith("multipart/encrypted")
        if encrypted:
            try:
                body = self._decrypt(body)
            except Exception as exc:  # a tampered or mis-keyed message
                self.server.log(event="decrypt-failed", error=str(exc))
                self._send(400)
                return
        if not body:
            self._send(200, b"", headers)
            return
        if not encrypted and not self.server.tls and not self.server.allow_unencrypted:
            self.server.log(event="refused-unencrypted")
            self._send(401, b"", self._challenge())
            return
        status, reply = self._soap(body, user)
        if encrypted:
            reply = self._encrypt(reply)
            content = f'multipart/encrypted;protocol="{ENCRYPTED_PROTOCOL}";boundary="Encrypted Boundary"'
            self._send(status, reply, headers, content_type=content)
        else:
            self._send(status, reply, headers)

    # -- MS-WSMV 2.2.9.1.1 message encryption ------------------------------------------------
    def _decrypt(self, data: bytes) -> bytes:
        if self.ntlm is None or not self.ntlm.complete:
            raise ValueError("encrypted message without an NTLM session")
        parts = [p for p in data.split(BOUNDARY + b"\r\n") if p]
        message = b""
        for index in range(0, len(parts) - 1, 2):
            header, payload = parts[index], parts[index + 1]
            expected = int(header.split(b"Length=")[1].strip())
            if payload.endswith(BOUNDARY + b"--\r\n"):
                payload = payload[: -len(BOUNDARY + b"--\r\n")]
            payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
            size = struct.unpack("<i", payload[:4])[0]
            signature, sealed = payload[4:4 + size], payload[4 + size:]
            plain = self.ntlm.unwrap(signature + sealed).data
            if len(plain) != expected:
                raise ValueError("length mismatch")
            message += plain
        return message

    def _encrypt(self, message: bytes) -> bytes:
        wrapped = self.ntlm.wrap(message, encrypt=True).data
        signature, sealed = wrapped[:16], wrapped[16:]
        return (BOUNDARY + b"\r\n\tContent-Type: " + ENCRYPTED_PROTOCOL.encode() + b"\r\n"
                b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
                + str(len(message)).encode() + b"\r\n" + BOUNDARY + b"\r\n"
                b"\tContent-Type: application/octet-stream\r\n" + struct.pack("<i", len(signature))
                + signature + sealed + BOUNDARY + b"--\r\n")

    # -- SOAP --------------------------------------------------------------------------------
    def _soap(self, data: bytes, user: str) -> tuple[int, bytes]:
        srv = self.server
        try:
            root = ET.fromstring(data)
        except ET.ParseError:
            return 400, b""
        header = root.find("s:Header", NS)
        action = header.findtext("a:Action", "", NS).strip()
        message_id = header.findtext("a:MessageID", "", NS).strip()
        uri = header.findtext("w:ResourceURI", "", NS).strip()
        max_env = int(header.findtext("w:MaxEnvelopeSize", "153600", NS) or 153600)
        timeout = _duration(header.findtext("w:OperationTimeout", None, NS), 60.0)
        selector = header.find("w:SelectorSet/w:Selector[@Name='ShellId']", NS)
        shell_id = selector.text if selector is not None else None
        options = {o.get("Name"): (o.text or "") for o in header.findall("w:OptionSet/w:Option", NS)}
        verb = action.rsplit("/", 1)[-1]
        if len(data) > srv.max_envelope:
            srv.log(event="too-large", action=verb, size=len(data))
            return 500, fault(message_id, FAULT_ENVELOPE_TOO_LARGE,
                              f"The WS-Management service cannot process the request because the "
                              f"request envelope size {len(data)} exceeds MaxEnvelopeSizekb.",
                              "w:EncodingLimit")
        if uri != CMD_URI:
            return 500, fault(message_id, FAULT_BAD_URI, "The WS-Management service cannot process "
                              "the request. The resource URI is not valid.", "w:InvalidResourceURI")
        body = root.find("s:Body", NS)
        if action.endswith("transfer/Create"):
            return self._create(message_id, action, body, options, user)
        with srv.lock:
            shell = srv.shells.get(shell_id or "")
        if shell is None:
            srv.log(event="shell-not-found", action=verb)
            return 500, fault(message_id, FAULT_SHELL_NOT_FOUND, "The request for the Windows Remote "
                              f"Shell with ShellId {shell_id} failed because the shell was not found "
                              "on the server. Possible causes are: the specified ShellId is "
                              "incorrect or the shell no longer exists on the server.",
                              "w:InvalidSelectors")
        if action.endswith("shell/Command"):
            return self._command(message_id, body, options, shell, len(data))
        if action.endswith("shell/Send"):
            stream = body.find("rsp:Send/rsp:Stream", NS)
            command = shell.commands.get(stream.get("CommandId", ""))
            if command is None or command.done:
                return 500, fault(message_id, FAULT_UNSUPPORTED, "The WS-Management service cannot "
                                  "process the request because the command is not running.",
                                  "w:InvalidSelectors")
            _hold_while_asked(srv, command.id)
            payload = base64.b64decode(stream.text or "")
            end = stream.get("End", "false").lower() == "true"
            srv.log(event="send", command=command.id, bytes=len(payload), end=end, size=len(data))
            command.stdin.feed(payload, end)
            return 200, envelope(SHELL_NS + "/SendResponse", message_id, "<rsp:SendResponse/>")
        if action.endswith("shell/Receive"):
            desired = body.find("rsp:Receive/rsp:DesiredStream", NS)
            command = shell.commands.get(desired.get("CommandId", ""))
            if command is None:
                return 500, fault(message_id, FAULT_UNSUPPORTED, "unknown CommandId",
                                  "w:InvalidSelectors")
            limit = int(max_env * OUTPUT_SHARE * 3 / 4)
            taken = command.take(limit, timeout)
            if taken is None:
                return 500, fault(message_id, FAULT_TIMED_OUT, "The WS-Management service cannot "
                                  "complete the operation within the time specified in "
                                  "OperationTimeout.", "w:TimedOut")
            out, err, done = taken
            end = ' End="true"' if done else ""
            streams = "".join(
                f'<rsp:Stream Name="{name}" CommandId="{command.id}"{end}>'
                f"{base64.b64encode(value).decode()}</rsp:Stream>"
                for name, value in (("stdout", out), ("stderr", err)) if value or done)
            state = "Done" if done else "Running"
            code = f"<rsp:ExitCode>{command.exit_code}</rsp:ExitCode>" if done else ""
            reply = (f"<rsp:ReceiveResponse>{streams}<rsp:CommandState CommandId=\"{command.id}\" "
                     f'State="{SHELL_NS}/CommandState/{state}">{code}</rsp:CommandState>'
                     "</rsp:ReceiveResponse>")
            return 200, envelope(SHELL_NS + "/ReceiveResponse", message_id, reply)
        if action.endswith("shell/Signal"):
            signal = body.find("rsp:Signal", NS)
            command = shell.commands.get(signal.get("CommandId", ""))
            code = signal.findtext("rsp:Code", "", NS).rsplit("/", 1)[-1]
            if command is not None:
                srv.log(event="signal", command=command.id, code=code, running=not command.done)
                command.cancel.set()
                if code == "terminate":
                    shell.commands.pop(command.id, None)
            return 200, envelope(SHELL_NS + "/SignalResponse", message_id, "<rsp:SignalResponse/>")
        if action.endswith("transfer/Delete"):
            with srv.lock:
                srv.shells.pop(shell.id, None)
            for command in shell.commands.values():
                command.cancel.set()
            srv.log(event="delete", shell=shell.id)
            return 200, envelope(action + "Response", message_id, "")
        return 500, fault(message_id, FAULT_UNSUPPORTED, f"unsupported action {action}",
                          "w:ActionNotSupported")

    def _create(self, message_id, action, body, options, user) -> tuple[int, bytes]:
        srv = self.server
        shell_node = body.find("rsp:Shell", NS)
        env = {
            "COMPUTERNAME": interp.COMPUTER, "USERNAME": user.split("\\")[-1],
            "USERPROFILE": f"C:\\Users\\{user.split(chr(92))[-1]}",
            "TEMP": f"C:\\Users\\{user.split(chr(92))[-1]}\\AppData\\Local\\Temp",
            "TMP": f"C:\\Users\\{user.split(chr(92))[-1]}\\AppData\\Local\\Temp",
            "PROCESSOR_ARCHITECTURE": "AMD64", "SystemRoot": "C:\\Windows", "OS": "Windows_NT",
        }
        for variable in shell_node.findall("rsp:Environment/rsp:Variable", NS):
            env[variable.get("Name")] = variable.text or ""
        for key in ("USERPROFILE", "TEMP"):
            os.makedirs(srv.fs.host(env[key], "C:\\"), exist_ok=True)
        shell_id = str(uuid.uuid4()).upper()
        codepage = int(options.get("WINRS_CODEPAGE", "437") or 437)
        with srv.lock:
            srv.shells[shell_id] = Shell(shell_id, user, env, codepage)
        srv.log(event="create", shell=shell_id, user=user, codepage=codepage)
        reply = (f"<x:ResourceCreated><a:Address>http://127.0.0.1/wsman</a:Address>"
                 f"<a:ReferenceParameters><w:ResourceURI>{CMD_URI}</w:ResourceURI><w:SelectorSet>"
                 f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
                 f"</a:ReferenceParameters></x:ResourceCreated>")
        return 200, envelope(action + "Response", message_id, reply)

    def _command(self, message_id, body, options, shell: Shell, size: int) -> tuple[int, bytes]:
        line = body.find("rsp:CommandLine", NS)
        program = (line.findtext("rsp:Command", "", NS) or "").strip()
        arguments = [a.text or "" for a in line.findall("rsp:Arguments", NS)]
        skip = options.get("WINRS_SKIP_CMD_SHELL", "FALSE").upper() == "TRUE"
        command = Command(str(uuid.uuid4()).upper())
        shell.commands[command.id] = command
        script = None
        words = " ".join(arguments).split()
        for index, word in enumerate(words[:-1]):
            if word.lower() in ("-encodedcommand", "-enc"):
                try:
                    script = base64.b64decode(words[index + 1]).decode("utf-16-le")
                except ValueError:
                    script = None
        self.server.log(event="command", shell=shell.id, command=command.id, program=program,
                        skip_cmd_shell=skip, script=script,
                        line=None if script else " ".join([program, *arguments]), size=size)
        proc = interp.Process(self.server.fs, dict(shell.env), command.write, command.cancel,
                              command.stdin, shell.user)

        def run() -> None:
            try:
                code = interp.run_command_line(proc, program, arguments, skip)
            except interp.Cancelled:
                code = -1
            except Exception as exc:  # a bug in the test server: show it as the command's error
                try:
                    command.write("stderr", f"test server error: {type(exc).__name__}: {exc}\r\n"
                                  .encode())
                except interp.Cancelled:
                    pass
                code = 1
            command.finish(code)
            self.server.log(event="finished", command=command.id, exit_code=code,
                            cancelled=command.cancel.is_set())

        threading.Thread(target=run, daemon=True, name=f"winrs-{command.id[:8]}").start()
        reply = (f"<rsp:CommandResponse><rsp:CommandId>{command.id}</rsp:CommandId>"
                 "</rsp:CommandResponse>")
        return 200, envelope(SHELL_NS + "/CommandResponse", message_id, reply)
