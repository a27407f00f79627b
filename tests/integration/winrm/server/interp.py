"""The test server's "Windows": a file system under a host directory, cmd.exe and a small
PowerShell subset, just enough for what the WinRM transport and WindowsMachine send.

What is real: command lines are parsed as cmd.exe / powershell.exe would receive them
(``powershell.exe ... -EncodedCommand <base64 UTF-16LE>`` is decoded; PowerShell text is
tokenized with its quoting rules; ``function Name { ... }`` definitions are recognised and a
function can only be called after the script defined it). Errors go to stderr as CLIXML, as
powershell.exe does over WinRS. Paths are Windows paths, case-insensitive, on a drive ``C:``.

What is not: the *bodies* of the transport's library functions are not interpreted; each known
function name runs a Python implementation with the same inputs, outputs and file effects
(docs/windows.md states this). Statements other than commands, pipelines, assignments and
``exit`` (if/foreach/try...) are refused with a clear error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import threading
import uuid
import zipfile
from typing import Any, Callable, Iterable, Iterator

COMPUTER = "WINTEST"
DEFAULT_OWNER = "BUILTIN\\Administrators"
DEFAULT_GROUP = f"{COMPUTER}\\None"
KNOWN_ACCOUNTS = {"builtin\\administrators", "builtin\\users", "nt authority\\system",
                  "everyone", f"{COMPUTER.lower()}\\none"}
CLIXML_NS = "http://schemas.microsoft.com/powershell/2004/04"


class Cancelled(Exception):
    """The WinRS command was terminated (Signal)."""


class ScriptExit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class PSError(Exception):
    """A PowerShell error record (terminating for the statement)."""

    def __init__(self, message: str, category: str = "NotSpecified: (:) [], RuntimeException",
                 error_id: str = "RuntimeException") -> None:
        super().__init__(message)
        self.message = message
        self.category = category
        self.error_id = error_id


# -- process plumbing ----------------------------------------------------------------------
class Stdin:
    """The command's stdin: bytes from Send messages, End closes it."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.buffer = bytearray()
        self.closed = False
        self.cond = threading.Condition()

    def feed(self, data: bytes, end: bool) -> None:
        with self.cond:
            self.buffer += data
            self.closed = self.closed or end
            self.cond.notify_all()

    def readline(self) -> bytes | None:
        with self.cond:
            while True:
                index = self.buffer.find(b"\n")
                if index >= 0:
                    line = bytes(self.buffer[:index + 1])
                    del self.buffer[:index + 1]
                    return line
                if self.closed:
                    if self.buffer:
                        line = bytes(self.buffer)
                        self.buffer.clear()
                        return line
                    return None
                if self.cancel.is_set():
                    raise Cancelled()
                self.cond.wait(0.2)

    def lines(self) -> Iterator[str]:
        while True:
            line = self.readline()
            if line is None:
                return
            yield line.decode("utf-8", "replace").rstrip("\r\n")


class Process:
    """What a running command sees: stdin, two output streams, environment, cancel flag."""

    def __init__(self, fs: "WinFS", env: dict[str, str], write: Callable[[str, bytes], None],
                 cancel: threading.Event, stdin: Stdin, user: str) -> None:
        self.fs = fs
        self.env = env
        self._write = write
        self.cancel = cancel
        self.stdin = stdin
        self.user = user
        self.cwd = env.get("USERPROFILE", "C:\\")

    def out(self, text: str) -> None:
        self._write("stdout", text.encode("utf-8"))

    def err(self, text: str) -> None:
        self._write("stderr", text.encode("utf-8"))

    def sleep(self, seconds: float) -> None:
        if self.cancel.wait(max(0.0, seconds)):
            raise Cancelled()

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()


# -- file system ---------------------------------------------------------------------------
class WinFS:
    """Windows paths mapped into ``root/<drive letter>/...``, case-insensitively. The ACL owner
    and group live in a table; the read-only flag is the host file's write bit."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(os.path.join(self.root, "C"), exist_ok=True)
        self.acl: dict[str, tuple[str, str]] = {}
        self.lock = threading.Lock()

    def full_path(self, path: str, cwd: str) -> str:
        """[IO.Path]::GetFullPath: absolute, backslashes, '.' and '..' resolved."""
        text = str(path).replace("/", "\\")
        if len(text) >= 2 and text[1] == ":":
            drive, rest = text[0].upper(), text[2:]
            if not rest.startswith("\\"):
                rest = "\\" + rest
        elif text.startswith("\\"):
            drive, rest = cwd[0].upper(), text
        else:
            drive, rest = cwd[0].upper(), cwd[2:].rstrip("\\") + "\\" + text
        parts: list[str] = []
        for part in rest.split("\\"):
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        return f"{drive}:\\" + "\\".join(parts)

    def host(self, path: str, cwd: str) -> str:
        """The host path for a Windows path; existing components match case-insensitively."""
        full = self.full_path(path, cwd)
        current = os.path.join(self.root, full[0])
        for part in [p for p in full[3:].split("\\") if p]:
            candidate = os.path.join(current, part)
            if not os.path.lexists(candidate) and os.path.isdir(current):
                for entry in os.listdir(current):
                    if entry.lower() == part.lower():
                        candidate = os.path.join(current, entry)
                        break
            current = candidate
        return current

    def key(self, host_path: str) -> str:
        return os.path.relpath(host_path, self.root).lower()

    def owner_group(self, host_path: str) -> tuple[str, str]:
        with self.lock:
            return self.acl.get(self.key(host_path), (DEFAULT_OWNER, DEFAULT_GROUP))

    def set_owner_group(self, host_path: str, owner: str | None, group: str | None) -> None:
        with self.lock:
            current = self.acl.get(self.key(host_path), (DEFAULT_OWNER, DEFAULT_GROUP))
            self.acl[self.key(host_path)] = (owner or current[0], group or current[1])

    @staticmethod
    def is_read_only(host_path: str) -> bool:
        return not os.stat(host_path).st_mode & stat.S_IWUSR

    @staticmethod
    def set_read_only(host_path: str, value: bool) -> None:
        mode = os.stat(host_path).st_mode
        os.chmod(host_path, (mode & ~0o222) if value else (mode | stat.S_IWUSR))


# -- PowerShell tokenizer --------------------------------------------------------------------
SQ = "'\u2018\u2019\u201a\u201b"
DQ = '"\u201c\u201d\u201e'
SPECIAL = set(" \t\r\n;|{}()")


class Tok:
    __slots__ = ("kind", "value", "expand")

    def __init__(self, kind: str, value: Any = None, expand: bool = False) -> None:
        self.kind, self.value, self.expand = kind, value, expand

    def __repr__(self) -> str:
        return f"Tok({self.kind},{self.value!r})"


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
        elif c == "`" and i + 1 < n and text[i + 1] in "\r\n":
            i += 2 if text[i + 1:i + 3] != "\r\n" else 3
        elif c == "<" and text.startswith("<#", i):
            end = text.find("#>", i + 2)
            i = n if end < 0 else end + 2
        elif c == "#":
            while i < n and text[i] not in "\r\n":
                i += 1
        elif c in "\r\n;":
            toks.append(Tok("NL"))
            i += 1
        elif c == "|":
            toks.append(Tok("PIPE"))
            i += 1
        elif c in "{}()":
            toks.append(Tok({"{": "LBRACE", "}": "RBRACE", "(": "LPAREN", ")": "RPAREN"}[c]))
            i += 1
        elif c in SQ:
            i += 1
            value = []
            while True:
                if i >= n:
                    raise PSError("The string is missing the terminator: '.",
                                  "ParserError: (:) [], ParentContainsErrorRecordException",
                                  "TerminatorExpectedAtEndOfString")
                if text[i] in SQ:
                    if i + 1 < n and text[i + 1] in SQ:
                        value.append(text[i])
                        i += 2
                        continue
                    i += 1
                    break
                value.append(text[i])
                i += 1
            toks.append(Tok("STR", "".join(value)))
        elif c in DQ:
            i += 1
            value = []
            while True:
                if i >= n:
                    raise PSError('The string is missing the terminator: ".',
                                  "ParserError: (:) [], ParentContainsErrorRecordException",
                                  "TerminatorExpectedAtEndOfString")
                ch = text[i]
                if ch == "`" and i + 1 < n:
                    value.append("`" + text[i + 1])
                    i += 2
                    continue
                if ch in DQ:
                    if i + 1 < n and text[i + 1] in DQ:
                        value.append('`"')
                        i += 2
                        continue
                    i += 1
                    break
                value.append(ch)
                i += 1
            toks.append(Tok("STR", "".join(value), expand=True))
        elif c == "$":
            j = i + 1
            if j < n and text[j] == "{":
                end = text.index("}", j)
                name, i = text[j + 1:end], end + 1
            else:
                while j < n and (text[j].isalnum() or text[j] in "_:?"):
                    j += 1
                name, i = text[i + 1:j], j
            toks.append(Tok("VAR", name))
        elif c == "=" and text[i + 1:i + 2] != "=" and toks and toks[-1].kind == "VAR":
            toks.append(Tok("ASSIGN"))
            i += 1
        elif c == "-" and i + 1 < n and text[i + 1].isalpha():
            j = i + 1
            while j < n and text[j] not in SPECIAL and text[j] != ":":
                j += 1
            name = text[i + 1:j]
            tok = Tok("PARAM", name)
            if j < n and text[j] == ":":
                tok.expand = True  # -Name:value form: the value follows directly
                j += 1
            toks.append(tok)
            i = j
        else:
            j = i
            while j < n and text[j] not in SPECIAL and not (text[j] in SQ + DQ and j > i
                                                            and text[j - 1] != "="):
                j += 1
            if j == i:
                j += 1
            word = text[i:j]
            if word in ("2>&1", ">$null", "2>$null", "*>$null", ">&2"):
                toks.append(Tok("REDIR", word))
            else:
                toks.append(Tok("WORD", word))
            i = j
    toks.append(Tok("NL"))
    return toks


def expand_string(value: str, variables: dict[str, Any], env: dict[str, str]) -> str:
    out, i, n = [], 0, len(value)
    escapes = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "a": "\a", "b": "\b", "e": "\x1b",
               "f": "\f", "v": "\v"}
    while i < n:
        c = value[i]
        if c == "`" and i + 1 < n:
            out.append(escapes.get(value[i + 1], value[i + 1]))
            i += 2
        elif c == "$" and i + 1 < n and (value[i + 1].isalnum() or value[i + 1] in "_{"):
            j = i + 1
            if value[j] == "{":
                end = value.index("}", j)
                name, i = value[j + 1:end], end + 1
            else:
                while j < n and (value[j].isalnum() or value[j] in "_:"):
                    j += 1
                name, i = value[i + 1:j], j
            out.append(to_text(lookup(name, variables, env)))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def lookup(name: str, variables: dict[str, Any], env: dict[str, str]) -> Any:
    lower = name.lower()
    if lower.startswith("env:"):
        wanted = lower[4:]
        for key, value in env.items():
            if key.lower() == wanted:
                return value
        return None
    return {"true": True, "false": False, "null": None}.get(lower, variables.get(lower))


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


# -- PowerShell execution --------------------------------------------------------------------
class PowerShell:
    """Runs one script in one process; returns the exit code."""

    SWITCHES = {"force", "recurse", "expand", "raw", "nonewline", "noprofile"}

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self.variables: dict[str, Any] = {"erroractionpreference": "Continue"}
        self.functions: set[str] = set()
        self.last_ok = True
        self.clixml_started = False

    # errors as powershell.exe writes them to a redirected stderr
    def write_error(self, err: PSError, line: str) -> None:
        def esc(text: str) -> str:
            text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            return text.replace("\r", "_x000D_").replace("\n", "_x000A_")

        pieces = [f"{line} : {err.message}\r\n" if line else f"{err.message}\r\n",
                  f"    + CategoryInfo          : {err.category}\r\n",
                  f"    + FullyQualifiedErrorId : {err.error_id}\r\n", " \r\n"]
        body = "".join(f'<S S="Error">{esc(p)}</S>' for p in pieces)
        head = "" if self.clixml_started else "#< CLIXML\r\n"
        self.clixml_started = True
        self.proc.err(f'{head}<Objs Version="1.1.0.1" xmlns="{CLIXML_NS}">{body}</Objs>')

    def run(self, script: str) -> int:
        try:
            toks = tokenize(script)
        except PSError as err:
            self.write_error(err, "")
            return 1
        try:
            self.run_tokens(toks)
        except ScriptExit as done:
            return done.code
        return 0 if self.last_ok else 1

    def run_tokens(self, toks: list[Tok]) -> None:
        i = 0
        while i < len(toks):
            tok = toks[i]
            if tok.kind == "NL":
                i += 1
                continue
            if tok.kind == "WORD" and tok.value.lower() == "function":
                name = toks[i + 1].value
                if toks[i + 2].kind != "LBRACE":
                    raise PSError("Missing function body in function declaration.")
                depth, j = 0, i + 2
                while True:
                    if toks[j].kind == "LBRACE":
                        depth += 1
                    elif toks[j].kind == "RBRACE":
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
                    if j >= len(toks):
                        raise PSError("Missing closing '}' in statement block.")
                self.functions.add(name.lower())
                i = j + 1
                continue
            j = i
            while toks[j].kind != "NL":
                if toks[j].kind in ("LBRACE", "RBRACE"):
                    self.fail(PSError("the test server's PowerShell subset has no script blocks "
                                      "or control flow (if/foreach/try)"), toks[i:j])
                    raise ScriptExit(1)
                j += 1
            statement = toks[i:j]
            i = j + 1
            self.proc.check()
            self.statement(statement)

    def describe(self, toks: list[Tok]) -> str:
        return " ".join(f"'{t.value}'" if t.kind == "STR" else
                        ("$" + t.value if t.kind == "VAR" else
                         ("-" + t.value if t.kind == "PARAM" else str(t.value or "|")))
                        for t in toks)

    def fail(self, err: PSError, toks: list[Tok]) -> None:
        self.last_ok = False
        self.write_error(err, self.describe(toks))
        if str(self.variables.get("erroractionpreference", "")).lower() == "stop":
            raise ScriptExit(1)

    def statement(self, toks: list[Tok]) -> None:
        first = toks[0]
        if first.kind == "WORD" and first.value.lower() == "exit":
            code = 0
            if len(toks) > 1:
                code = int(self.value(toks[1]) or 0)
            raise ScriptExit(code)
        if first.kind == "WORD" and first.value.lower() in ("if", "foreach", "while", "try", "for",
                                                            "switch", "do", "param"):
            self.fail(PSError(f"the test server's PowerShell subset does not support "
                              f"'{first.value}'"), toks)
            return
        try:
            if first.kind == "VAR" and len(toks) > 1 and toks[1].kind == "ASSIGN":
                outputs = list(self.pipeline(toks[2:]))
                value: Any = outputs[0] if len(outputs) == 1 else (outputs or None)
                name = first.value
                if name.lower().startswith("env:"):
                    self.proc.env[name[4:]] = to_text(value)
                elif name.lower() != "null":
                    self.variables[name.lower()] = value
                self.last_ok = True
                return
            for item in self.pipeline(toks):
                self.proc.out(to_text(item) + "\r\n")
            self.last_ok = True
        except PSError as err:
            self.fail(err, toks)
        except (Cancelled, ScriptExit):
            raise
        except Exception as exc:  # a .NET exception, as PowerShell would report it
            self.fail(PSError(f"{type(exc).__name__}: {exc}"), toks)

    def value(self, tok: Tok) -> Any:
        if tok.kind == "STR":
            return expand_string(tok.value, self.variables, self.proc.env) if tok.expand else tok.value
        if tok.kind == "VAR":
            if tok.value.lower() == "input":
                return self.proc.stdin.lines()
            return lookup(tok.value, self.variables, self.proc.env)
        if tok.kind == "WORD":
            text = tok.value
            try:
                return int(text)
            except ValueError:
                return text
        raise PSError(f"Unexpected token '{tok.value}' in expression or statement.")

    def pipeline(self, toks: list[Tok]) -> Iterator[Any]:
        stages: list[list[Tok]] = [[]]
        for tok in toks:
            if tok.kind == "PIPE":
                stages.append([])
            elif tok.kind != "REDIR":
                stages[-1].append(tok)
        stream: Iterable[Any] | None = None
        for index, stage in enumerate(stages):
            if not stage:
                raise PSError("An empty pipe element is not allowed.")
            head = stage[0]
            if head.kind != "WORD" or isinstance(self.value(head), int):
                if index != 0 or len(stage) != 1:
                    raise PSError("Expressions are only allowed as the first element of a pipeline.")
                value = self.value(head)
                stream = value if isinstance(value, Iterator) else [value]
                continue
            stream = self.command(head.value, stage[1:], stream)
        return iter(stream or [])

    def command(self, name: str, args: list[Tok], stream: Iterable[Any] | None) -> Iterator[Any]:
        lower = name.lower()
        named: dict[str, Any] = {}
        positional: list[Any] = []
        i = 0
        while i < len(args):
            tok = args[i]
            if tok.kind == "PARAM":
                key = tok.value.lower()
                if key in self.SWITCHES and not tok.expand:
                    named[key] = True
                    i += 1
                    continue
                if i + 1 >= len(args):
                    raise PSError(f"Missing an argument for parameter '{tok.value}'. Specify a "
                                  "parameter of the required type and try again.",
                                  f"InvalidArgument: (:) [{name}], ParameterBindingException",
                                  f"MissingArgument,{name}")
                named[key] = self.value(args[i + 1])
                i += 2
            else:
                positional.append(self.value(tok))
                i += 1
        implementation = BUILTINS.get(lower)
        if implementation is None and lower in self.functions:
            implementation = LIBRARY_IMPLEMENTATIONS.get(lower)
            if implementation is None:
                raise PSError(f"function {name} is defined by the script but the test server has "
                              "no implementation of it")
        if implementation is None:
            raise PSError(f"The term '{name}' is not recognized as the name of a cmdlet, function, "
                          "script file, or operable program. Check the spelling of the name, or if "
                          "a path was included, verify that the path is correct and try again.",
                          f"ObjectNotFound: ({name}:String) [], CommandNotFoundException",
                          "CommandNotFoundException")
        return implementation(self, named, positional, stream)


# -- cmdlets ----------------------------------------------------------------------------------
def _path_arg(named: dict, positional: list, name: str = "cmdlet") -> str:
    path = named.get("literalpath", named.get("path"))
    if path is None and positional:
        path = positional[0]
    if path is None:
        raise PSError(f"{name}: a -Path is required")
    return str(path)


def c_write_output(ps: PowerShell, named, positional, stream):
    if stream is not None:
        yield from stream
    values = positional or ([named["inputobject"]] if "inputobject" in named else [])
    for value in values:
        if isinstance(value, Iterator):
            yield from value
        else:
            yield value


def c_write_host(ps: PowerShell, named, positional, stream):
    text = " ".join(to_text(v) for v in positional + ([named["object"]] if "object" in named else []))
    ps.proc.out(text + ("" if named.get("nonewline") else "\r\n"))
    return iter(())


def c_write_error(ps: PowerShell, named, positional, stream):
    message = to_text(named.get("message", positional[0] if positional else ""))
    raise PSError(message, "NotSpecified: (:) [Write-Error], WriteErrorException",
                  "Microsoft.PowerShell.Commands.WriteErrorException")


def c_start_sleep(ps: PowerShell, named, positional, stream):
    if "milliseconds" in named or "m" in named:
        seconds = float(named.get("milliseconds", named.get("m"))) / 1000
    else:
        seconds = float(named.get("seconds", named.get("s", positional[0] if positional else 0)))
    ps.proc.sleep(seconds)
    return iter(())


def c_wait_test_file(ps: PowerShell, named, positional, stream):
    """Not PowerShell: this test server's way to hold a command until a test makes a file
    (tests prove output streams while a command still runs, without timing it)."""
    host = ps.proc.fs.host(_path_arg(named, positional, "Wait-TestFile"), ps.proc.cwd)
    while not os.path.exists(host):
        ps.proc.sleep(0.02)
    return iter(())


def c_out_null(ps: PowerShell, named, positional, stream):
    for _ in stream or ():
        pass
    return iter(())


def c_test_path(ps: PowerShell, named, positional, stream):
    host = ps.proc.fs.host(_path_arg(named, positional, "Test-Path"), ps.proc.cwd)
    kind = str(named.get("pathtype", "Any")).lower()
    if kind == "leaf":
        yield os.path.isfile(host)
    elif kind == "container":
        yield os.path.isdir(host)
    else:
        yield os.path.exists(host)


def c_new_item(ps: PowerShell, named, positional, stream):
    path = _path_arg(named, positional, "New-Item")
    fs, cwd = ps.proc.fs, ps.proc.cwd
    host = fs.host(path, cwd)
    kind = str(named.get("itemtype", "File")).lower()
    if os.path.exists(host) and not named.get("force"):
        raise PSError(f"An item with the specified name {fs.full_path(path, cwd)} already exists.",
                      "ResourceExists: (:String) [New-Item], IOException",
                      "DirectoryExist,Microsoft.PowerShell.Commands.NewItemCommand")
    if kind == "directory":
        if os.path.isfile(host):
            raise PSError(f"An item with the specified name {fs.full_path(path, cwd)} already exists.")
        os.makedirs(host, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, "w", encoding="utf-8") as handle:
            handle.write(to_text(named.get("value", "")))
    yield fs.full_path(path, cwd)


def c_remove_item(ps: PowerShell, named, positional, stream):
    path = _path_arg(named, positional, "Remove-Item")
    fs, cwd = ps.proc.fs, ps.proc.cwd
    host = fs.host(path, cwd)
    full = fs.full_path(path, cwd)
    if not os.path.lexists(host):
        raise PSError(f"Cannot find path '{full}' because it does not exist.",
                      f"ObjectNotFound: ({full}:String) [Remove-Item], ItemNotFoundException",
                      "PathNotFound,Microsoft.PowerShell.Commands.RemoveItemCommand")
    if os.path.isdir(host):
        if os.listdir(host) and not named.get("recurse"):
            raise PSError(f"The item at {full} has children and the Recurse parameter was not "
                          "specified.")
        shutil.rmtree(host)
    else:
        if fs.is_read_only(host) and not named.get("force"):
            raise PSError(f"Cannot remove item {full}: Not enough permission to perform operation.")
        os.unlink(host)
    return iter(())


def c_get_content(ps: PowerShell, named, positional, stream):
    path = _path_arg(named, positional, "Get-Content")
    host = ps.proc.fs.host(path, ps.proc.cwd)
    if not os.path.isfile(host):
        raise PSError(f"Cannot find path '{ps.proc.fs.full_path(path, ps.proc.cwd)}' because it "
                      "does not exist.")
    with open(host, encoding="utf-8-sig", errors="replace") as handle:
        text = handle.read()
    if named.get("raw"):
        yield text
    else:
        yield from text.splitlines()


def c_set_location(ps: PowerShell, named, positional, stream):
    path = _path_arg(named, positional, "Set-Location")
    full = ps.proc.fs.full_path(path, ps.proc.cwd)
    if not os.path.isdir(ps.proc.fs.host(full, ps.proc.cwd)):
        raise PSError(f"Cannot find path '{full}' because it does not exist.")
    ps.proc.cwd = full
    return iter(())


BUILTINS: dict[str, Callable[..., Iterator[Any]]] = {
    "write-output": c_write_output, "echo": c_write_output, "write": c_write_output,
    "write-host": c_write_host, "write-error": c_write_error, "start-sleep": c_start_sleep,
    "sleep": c_start_sleep, "out-null": c_out_null, "test-path": c_test_path,
    "new-item": c_new_item, "remove-item": c_remove_item, "del": c_remove_item,
    "get-content": c_get_content, "cat": c_get_content, "type": c_get_content,
    "set-location": c_set_location, "cd": c_set_location, "wait-testfile": c_wait_test_file,
}


# -- the transport's library, implemented natively ------------------------------------------
def f_sha256(ps: PowerShell, named, positional, stream):
    host = ps.proc.fs.host(named["path"], ps.proc.cwd)
    if not os.path.isfile(host):
        ps.proc.out("missing\r\n")
        return iter(())
    digest = hashlib.sha256()
    with open(host, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    ps.proc.out(f"sha256 {digest.hexdigest()}\r\n")
    return iter(())


def f_receive(ps: PowerShell, named, positional, stream):
    fs, cwd = ps.proc.fs, ps.proc.cwd
    full = fs.full_path(named["path"], cwd)
    host = fs.host(full, cwd)
    os.makedirs(os.path.dirname(host), exist_ok=True)
    tmp = host + ".provisioning-" + uuid.uuid4().hex + ".tmp"
    digest = hashlib.sha256()
    with open(tmp, "xb") as handle:
        for line in stream or ():
            ps.proc.check()
            if not line:
                continue
            try:
                block = base64.b64decode(line, validate=True)
            except ValueError as exc:
                raise PSError(f'Exception calling "FromBase64String" with "1" argument(s): '
                              f'"The input is not a valid Base-64 string" ({exc})') from exc
            digest.update(block)
            handle.write(block)
    seen = digest.hexdigest()
    if seen != str(named["sha256"]):
        os.unlink(tmp)
        ps.proc.err(f"sha256 mismatch: expected {named['sha256']}, received {seen}\r\n")
        raise ScriptExit(3)
    if named.get("expand"):
        staging = tmp + ".d"
        with zipfile.ZipFile(tmp) as zf:
            zf.extractall(staging)
        os.unlink(tmp)
        old = None
        if os.path.exists(host):
            old = host + ".provisioning-old-" + uuid.uuid4().hex
            os.rename(host, old)
        os.rename(staging, host)
        if old:
            shutil.rmtree(old) if os.path.isdir(old) else os.unlink(old)
    else:
        if os.path.isdir(host):
            os.unlink(tmp)
            raise PSError(f'Exception calling "Move" with "2" argument(s): "Cannot create a file '
                          f'when that file already exists." ({full} is a directory)')
        if os.path.isfile(host) and fs.is_read_only(host):
            fs.set_read_only(host, False)
        os.replace(tmp, host)
    ps.proc.out(f"sha256 {seen}\r\n")
    return iter(())


def f_send(ps: PowerShell, named, positional, stream):
    fs, cwd, proc = ps.proc.fs, ps.proc.cwd, ps.proc
    host = fs.host(named["path"], cwd)
    chunk = int(named["chunksize"])
    kind, source, temp = "file", host, None
    if os.path.isdir(host):
        kind = "zip"
        temp_dir = fs.host(proc.env.get("TEMP", "C:\\Windows\\Temp"), cwd)
        os.makedirs(temp_dir, exist_ok=True)
        temp = source = os.path.join(temp_dir, "provisioning-" + uuid.uuid4().hex + ".zip")
        with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as zf:
            for root, dirs, files in os.walk(host):
                dirs.sort()
                for name in sorted(files):
                    full = os.path.join(root, name)
                    zf.write(full, os.path.relpath(full, host).replace(os.sep, "/"))
    elif not os.path.isfile(host):
        proc.out("missing\r\n")
        return iter(())
    try:
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            proc.out(f"kind {kind} size {os.fstat(handle.fileno()).st_size}\r\n")
            for block in iter(lambda: handle.read(chunk), b""):
                proc.check()
                digest.update(block)
                proc.out(base64.b64encode(block).decode("ascii") + "\r\n")
        proc.out(f"sha256 {digest.hexdigest()}\r\n")
    finally:
        if temp and os.path.exists(temp):
            os.unlink(temp)
    return iter(())


def f_get_attributes(ps: PowerShell, named, positional, stream):
    fs = ps.proc.fs
    host = fs.host(named["path"], ps.proc.cwd)
    if not os.path.exists(host):
        ps.proc.out("missing\r\n")
        return iter(())
    owner, group = fs.owner_group(host)
    data = {"owner": owner, "group": group, "read_only": fs.is_read_only(host),
            "hidden": False, "directory": os.path.isdir(host)}
    ps.proc.out(json.dumps(data, separators=(",", ":")) + "\r\n")
    return iter(())


def f_set_attributes(ps: PowerShell, named, positional, stream):
    fs, cwd = ps.proc.fs, ps.proc.cwd
    full = fs.full_path(named["path"], cwd)
    host = fs.host(full, cwd)
    if not os.path.exists(host):
        raise PSError(f"Cannot find path '{full}' because it does not exist.",
                      f"ObjectNotFound: ({full}:String) [Get-Item], ItemNotFoundException",
                      "PathNotFound,Microsoft.PowerShell.Commands.GetItemCommand")
    read_only = str(named.get("readonly", ""))
    if read_only == "true":
        fs.set_read_only(host, True)
    elif read_only == "false":
        fs.set_read_only(host, False)
    owner, group = str(named.get("owner", "")), str(named.get("group", ""))
    for account in (owner, group):
        if account and _account(account) is None:
            raise PSError('Exception calling "SetOwner" with "1" argument(s): "Some or all '
                          'identity references could not be translated."',
                          "NotSpecified: (:) [], MethodInvocationException",
                          "IdentityNotMappedException")
    if owner or group:
        fs.set_owner_group(host, _account(owner) if owner else None,
                           _account(group) if group else None)
    ps.proc.out("ok\r\n")
    return iter(())


def _account(name: str) -> str | None:
    """Translate a name as NTAccount would: bare names resolve in BUILTIN or on this computer."""
    lower = name.lower()
    if lower in KNOWN_ACCOUNTS or lower in USERS:
        return _canonical(lower)
    for prefix in ("builtin\\", f"{COMPUTER.lower()}\\", "nt authority\\"):
        if prefix + lower in KNOWN_ACCOUNTS or prefix + lower in USERS:
            return _canonical(prefix + lower)
    return None


def _canonical(lower: str) -> str:
    table = {"builtin\\administrators": "BUILTIN\\Administrators", "builtin\\users": "BUILTIN\\Users",
             "nt authority\\system": "NT AUTHORITY\\SYSTEM", "everyone": "Everyone",
             f"{COMPUTER.lower()}\\none": f"{COMPUTER}\\None"}
    if lower in table:
        return table[lower]
    domain, _, user = lower.partition("\\")
    return f"{COMPUTER}\\{USERS.get(lower, user)}"


#: local accounts ("wintest\\name" -> display name), filled by the server from its user list
USERS: dict[str, str] = {}


def f_os(ps: PowerShell, named, positional, stream):
    ps.proc.out(json.dumps({"caption": "Microsoft Windows Server 2022 Datacenter (WinRM test server)",
                            "version": "10.0.20348",
                            "architecture": ps.proc.env.get("PROCESSOR_ARCHITECTURE", "AMD64"),
                            "os_architecture": "64-bit"}, separators=(",", ":")) + "\r\n")
    return iter(())


LIBRARY_IMPLEMENTATIONS: dict[str, Callable[..., Iterator[Any]]] = {
    "get-provisioningsha256": f_sha256,
    "receive-provisioningfile": f_receive,
    "send-provisioningfile": f_send,
    "get-provisioningattributes": f_get_attributes,
    "set-provisioningattributes": f_set_attributes,
    "get-provisioningos": f_os,
}


# -- powershell.exe and cmd.exe --------------------------------------------------------------
def run_powershell_exe(proc: Process, args: list[str]) -> int:
    """powershell.exe's command line: switches, then -EncodedCommand, -Command or -File."""
    i = 0
    script = None
    while i < len(args):
        arg = args[i]
        lower = arg.lower()
        if lower in ("-nologo", "-noprofile", "-noninteractive", "-nop", "-noni"):
            i += 1
        elif lower in ("-executionpolicy", "-ep", "-inputformat", "-outputformat", "-windowstyle"):
            i += 2
        elif lower in ("-encodedcommand", "-enc", "-e", "-ec"):
            try:
                script = base64.b64decode(args[i + 1]).decode("utf-16-le")
            except (ValueError, IndexError):
                proc.err("Cannot process the command because the value specified with "
                         "-EncodedCommand is not properly encoded.\r\n")
                return 1
            break
        elif lower in ("-command", "-c"):
            script = " ".join(args[i + 1:])
            break
        elif lower in ("-file", "-f"):
            host = proc.fs.host(args[i + 1], proc.cwd)
            with open(host, encoding="utf-8-sig") as handle:
                script = handle.read()
            break
        else:
            script = " ".join(args[i:])
            break
    if script is None:
        proc.err("powershell.exe: interactive sessions are not supported by the test server\r\n")
        return 1
    return PowerShell(proc).run(script)


def split_cmdline(line: str) -> list[str]:
    """Windows argv rules, simplified: whitespace separates, double quotes group."""
    out, current, quoted, started = [], [], False, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            started = True
        elif ch in " \t" and not quoted:
            if started:
                out.append("".join(current))
                current, started = [], False
        else:
            current.append(ch)
            started = True
    if started:
        out.append("".join(current))
    return out


def _expand_percent(line: str, env: dict[str, str]) -> str:
    out, i = [], 0
    lowered = {k.lower(): v for k, v in env.items()}
    while i < len(line):
        if line[i] == "%":
            end = line.find("%", i + 1)
            if end > i + 1 and line[i + 1:end].lower() in lowered:
                out.append(lowered[line[i + 1:end].lower()])
                i = end + 1
                continue
        out.append(line[i])
        i += 1
    return "".join(out)


def _split_cmd_operators(line: str) -> list[tuple[str, str]]:
    parts, current, op, quoted, i = [], [], "", False, 0
    while i < len(line):
        ch = line[i]
        if ch == '"':
            quoted = not quoted
        if not quoted and ch in "&|" and not (ch == "&" and i > 0 and line[i - 1] == ">"):
            doubled = line[i:i + 2] in ("&&", "||")
            if ch == "|" and not doubled:
                current.append(ch)
                i += 1
                continue
            parts.append((op, "".join(current)))
            op, current = (line[i:i + 2] if doubled else "&"), []
            i += 2 if doubled else 1
            continue
        if ch == "^" and not quoted and i + 1 < len(line):
            current.append(line[i + 1])
            i += 2
            continue
        current.append(ch)
        i += 1
    parts.append((op, "".join(current)))
    return parts


def run_cmd(proc: Process, line: str) -> int:
    """cmd.exe /c LINE: %VAR% expanded once for the whole line first (as cmd does), then
    commands joined by &, && and || run in order."""
    line = _expand_percent(line, proc.env)
    status = 0
    for op, segment in _split_cmd_operators(line):
        if op == "&&" and status != 0 or op == "||" and status == 0:
            continue
        status = _run_cmd_segment(proc, segment.strip())
    return status


class _CmdExit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _run_cmd_segment(proc: Process, segment: str) -> int:
    to_stderr = False
    for marker in (" 1>&2", " >&2", "1>&2", ">&2"):
        if segment.endswith(marker):
            segment, to_stderr = segment[: -len(marker)].rstrip(), True
            break
    write = proc.err if to_stderr else proc.out
    if not segment:
        return 0
    name, _, rest = segment.partition(" ")
    lower = name.lower()
    if lower.startswith("echo") and (lower == "echo" or lower[4:5] in ".("):
        write((rest if lower == "echo" else segment[5:]) + "\r\n")
        return 0
    if lower == "exit":
        words = rest.split()
        if words and words[0].lower() == "/b":
            words = words[1:]
        code = int(words[0]) if words else 0
        raise _CmdExit(code)
    if lower == "rem":
        return 0
    if lower == "ver":
        write("\r\nMicrosoft Windows [Version 10.0.20348.2113]\r\n")
        return 0
    if lower == "set":
        text = rest.strip()
        if text.startswith('"') and text.endswith('"'):
            text = text[1:-1]
        if "=" in text:
            key, _, value = text.partition("=")
            proc.env[key] = value
            return 0
        matches = sorted((k, v) for k, v in proc.env.items() if k.lower().startswith(text.lower()))
        if not matches:
            proc.err(f"Environment variable {text} not defined\r\n")
            return 1
        for key, value in matches:
            write(f"{key}={value}\r\n")
        return 0
    if lower == "type":
        host = proc.fs.host(rest.strip().strip('"'), proc.cwd)
        if not os.path.isfile(host):
            proc.err("The system cannot find the file specified.\r\n")
            return 1
        with open(host, "rb") as handle:
            proc._write("stderr" if to_stderr else "stdout", handle.read())
        return 0
    if lower == "more":
        for text in proc.stdin.lines():
            write(text + "\r\n")
        return 0
    if lower in ("timeout", "ping"):
        args = rest.split()
        seconds = float(args[args.index("/t") + 1]) if "/t" in args else (
            float(args[args.index("-n") + 1]) - 1 if "-n" in args else 1)
        proc.sleep(seconds)
        return 0
    if lower in ("powershell", "powershell.exe"):
        return run_powershell_exe(proc, split_cmdline(rest))
    if lower in ("cmd", "cmd.exe"):
        words = rest.split(None, 1)
        flags = []
        while words and words[0].startswith("/") and words[0].lower() not in ("/c", "/k"):
            flags.append(words[0])
            words = words[1].split(None, 1) if len(words) > 1 else []
        if words and words[0].lower() == "/c":
            inner = words[1] if len(words) > 1 else ""
            if "/s" in [f.lower() for f in flags] and inner.startswith('"') and inner.endswith('"'):
                inner = inner[1:-1]
            try:
                return run_cmd(proc, inner)
            except _CmdExit as done:
                return done.code
    proc.err(f"'{name}' is not recognized as an internal or external command,\r\n"
             "operable program or batch file.\r\n")
    return 9009


def run_command_line(proc: Process, command: str, arguments: list[str], skip_cmd_shell: bool) -> int:
    """What WinRS does with a Command: CreateProcess directly, or through ``cmd.exe /c``."""
    line = " ".join([command, *arguments]).strip()
    try:
        if skip_cmd_shell:
            argv = split_cmdline(line)
            program = argv[0].lower() if argv else ""
            if program.rsplit("\\", 1)[-1] in ("powershell", "powershell.exe"):
                return run_powershell_exe(proc, argv[1:])
            if program.rsplit("\\", 1)[-1] in ("cmd", "cmd.exe"):
                return _run_cmd_segment(proc, line)
            proc.err(f"The system cannot find the file specified: {argv[0] if argv else ''}\r\n")
            return 2
        try:
            return run_cmd(proc, line)
        except _CmdExit as done:
            return done.code
    except Cancelled:
        return -1
