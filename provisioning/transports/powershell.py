"""PowerShell text: quoting, ``-EncodedCommand``, CLIXML error decoding, and the small function
library the WinRM transport and ``WindowsMachine`` send to the machine.

Kept apart from ``winrm.py`` because it needs no pywinrm: ``WindowsMachine`` uses it with any
transport that can start ``powershell.exe`` (WinRM, or OpenSSH on Windows).

Every remote operation is one library function with a machine-readable output (a JSON line or a
``key value`` line), so the Python side never scrapes formatted PowerShell tables.
"""

from __future__ import annotations

import base64
import re
from typing import Iterable

__all__ = ["ps_quote", "encode_command", "powershell_argv", "script_with", "LIBRARY",
           "ClixmlDecoder", "decode_clixml"]

#: powershell.exe switches used for every script (no profile, no prompts, no progress bars)
POWERSHELL_SWITCHES = ("-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass")

#: what every script starts with: progress records would otherwise arrive as CLIXML on stderr
PRELUDE = "$ProgressPreference = 'SilentlyContinue'\n"


def ps_quote(text: str) -> str:
    """A PowerShell single-quoted literal: nothing inside is expanded; quotes are doubled.

    PowerShell also treats the typographic quotes U+2018..U+201B as single quotes, so they are
    doubled too."""
    return "'" + re.sub(r"(['\u2018\u2019\u201a\u201b])", r"\1\1", str(text)) + "'"


def encode_command(script: str) -> str:
    """``-EncodedCommand`` argument: base64 of the UTF-16LE script (no quoting problems at all)."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def powershell_argv(script: str) -> list[str]:
    """``powershell.exe`` and its arguments to run ``script``."""
    return ["powershell.exe", *POWERSHELL_SWITCHES, "-EncodedCommand", encode_command(script)]


def script_with(functions: Iterable[str], body: str) -> str:
    """The prelude, the named library functions, then ``body``."""
    parts = [PRELUDE]
    for name in functions:
        parts.append(LIBRARY[name])
    parts.append(body)
    return "\n".join(parts)


# -- the library ---------------------------------------------------------------------------
# Each function is complete PowerShell 5.1 (Windows Server 2016 and later; .NET Framework 4.5+).
# They have NOT been run against a real Windows host yet (see docs/windows.md); the test server
# implements each one natively under the same name and the same output contract.

LIBRARY: dict[str, str] = {}

LIBRARY["Get-ProvisioningSha256"] = r"""
function Get-ProvisioningSha256 {
    param([string]$Path)
    if (Test-Path -LiteralPath $Path -PathType Leaf) {
        $hash = Get-FileHash -LiteralPath $Path -Algorithm SHA256
        [Console]::Out.WriteLine('sha256 ' + $hash.Hash.ToLowerInvariant())
    } else {
        [Console]::Out.WriteLine('missing')
    }
}
"""

# Input: base64 lines on stdin (one chunk a line). Writes a temporary file beside the target,
# hashes while writing, refuses a different sha256, then replaces the target in one step
# (File.Replace when it exists, after clearing its read-only flag; File.Move otherwise).
# With -Expand the data is a zip that is extracted into a temporary directory which then
# takes the target directory's place.
LIBRARY["Receive-ProvisioningFile"] = r"""
function Receive-ProvisioningFile {
    param([string]$Path, [string]$Sha256, [switch]$Expand)
    begin {
        $ErrorActionPreference = 'Stop'
        $Path = [IO.Path]::GetFullPath($Path)
        $parent = [IO.Path]::GetDirectoryName($Path)
        if ($parent -and -not (Test-Path -LiteralPath $parent)) {
            $null = New-Item -ItemType Directory -Path $parent -Force
        }
        $tmp = $Path + '.provisioning-' + [guid]::NewGuid().ToString('N') + '.tmp'
        $stream = [IO.File]::Open($tmp, [IO.FileMode]::CreateNew, [IO.FileAccess]::Write)
        $sha = [Security.Cryptography.SHA256]::Create()
    }
    process {
        if ($_) {
            $bytes = [Convert]::FromBase64String($_)
            $null = $sha.TransformBlock($bytes, 0, $bytes.Length, $null, 0)
            $stream.Write($bytes, 0, $bytes.Length)
        }
    }
    end {
        $null = $sha.TransformFinalBlock([byte[]]@(), 0, 0)
        $stream.Close()
        $seen = -join ($sha.Hash | ForEach-Object { $_.ToString('x2') })
        if ($seen -ne $Sha256) {
            Remove-Item -LiteralPath $tmp -Force
            [Console]::Error.WriteLine("sha256 mismatch: expected $Sha256, received $seen")
            exit 3
        }
        if ($Expand) {
            Add-Type -AssemblyName System.IO.Compression.FileSystem
            $dir = $tmp + '.d'
            [IO.Compression.ZipFile]::ExtractToDirectory($tmp, $dir)
            Remove-Item -LiteralPath $tmp -Force
            $old = $null
            if (Test-Path -LiteralPath $Path) {
                $old = $Path + '.provisioning-old-' + [guid]::NewGuid().ToString('N')
                [IO.Directory]::Move($Path, $old)
            }
            [IO.Directory]::Move($dir, $Path)
            if ($old) { Remove-Item -LiteralPath $old -Recurse -Force }
        } elseif (Test-Path -LiteralPath $Path -PathType Leaf) {
            $existing = Get-Item -LiteralPath $Path -Force
            if ($existing.IsReadOnly) { $existing.IsReadOnly = $false }
            [IO.File]::Replace($tmp, $Path, $null)
        } else {
            [IO.File]::Move($tmp, $Path)
        }
        [Console]::Out.WriteLine('sha256 ' + $seen)
    }
}
"""

# Output: "missing", or "kind file|zip size N", then base64 lines of at most $ChunkSize bytes each, then
# "sha256 HEX" of exactly the bytes sent. A directory is zipped to a temporary file first.
LIBRARY["Send-ProvisioningFile"] = r"""
function Send-ProvisioningFile {
    param([string]$Path, [int]$ChunkSize)
    $ErrorActionPreference = 'Stop'
    $Path = [IO.Path]::GetFullPath($Path)
    $kind = 'file'
    $source = $Path
    if (Test-Path -LiteralPath $Path -PathType Container) {
        Add-Type -AssemblyName System.IO.Compression.FileSystem
        $kind = 'zip'
        $source = [IO.Path]::Combine($env:TEMP, 'provisioning-' + [guid]::NewGuid().ToString('N') + '.zip')
        [IO.Compression.ZipFile]::CreateFromDirectory($Path, $source)
    } elseif (-not (Test-Path -LiteralPath $Path -PathType Leaf)) {
        [Console]::Out.WriteLine('missing')
        return
    }
    try {
        $stream = [IO.File]::OpenRead($source)
        $sha = [Security.Cryptography.SHA256]::Create()
        [Console]::Out.WriteLine("kind $kind size " + $stream.Length)
        $buffer = New-Object byte[] $ChunkSize
        while (($n = $stream.Read($buffer, 0, $ChunkSize)) -gt 0) {
            $null = $sha.TransformBlock($buffer, 0, $n, $null, 0)
            [Console]::Out.WriteLine([Convert]::ToBase64String($buffer, 0, $n))
        }
        $null = $sha.TransformFinalBlock([byte[]]@(), 0, 0)
        $stream.Close()
        [Console]::Out.WriteLine('sha256 ' + (-join ($sha.Hash | ForEach-Object { $_.ToString('x2') })))
    } finally {
        if ($kind -eq 'zip') { Remove-Item -LiteralPath $source -Force -ErrorAction SilentlyContinue }
    }
}
"""

LIBRARY["Get-ProvisioningAttributes"] = r"""
function Get-ProvisioningAttributes {
    param([string]$Path)
    if (-not (Test-Path -LiteralPath $Path)) { [Console]::Out.WriteLine('missing'); return }
    $item = Get-Item -LiteralPath $Path -Force
    $acl = Get-Acl -LiteralPath $Path
    $readOnly = [bool]($item.Attributes -band [IO.FileAttributes]::ReadOnly)
    $hidden = [bool]($item.Attributes -band [IO.FileAttributes]::Hidden)
    $out = [ordered]@{ owner = $acl.Owner; group = $acl.Group; read_only = $readOnly;
                       hidden = $hidden; directory = $item.PSIsContainer }
    [Console]::Out.WriteLine((ConvertTo-Json -InputObject $out -Compress))
}
"""

# -ReadOnly/-Owner/-Group are strings; an empty string means "leave as it is".
LIBRARY["Set-ProvisioningAttributes"] = r"""
function Set-ProvisioningAttributes {
    param([string]$Path, [string]$ReadOnly = '', [string]$Owner = '', [string]$Group = '')
    $ErrorActionPreference = 'Stop'
    $item = Get-Item -LiteralPath $Path -Force
    if ($ReadOnly -eq 'true') {
        $item.Attributes = $item.Attributes -bor [IO.FileAttributes]::ReadOnly
    } elseif ($ReadOnly -eq 'false') {
        $item.Attributes = $item.Attributes -band (-bnot [IO.FileAttributes]::ReadOnly)
    }
    if ($Owner -or $Group) {
        $acl = Get-Acl -LiteralPath $Path
        if ($Owner) { $acl.SetOwner([Security.Principal.NTAccount]$Owner) }
        if ($Group) { $acl.SetGroup([Security.Principal.NTAccount]$Group) }
        Set-Acl -LiteralPath $Path -AclObject $acl
    }
    [Console]::Out.WriteLine('ok')
}
"""

LIBRARY["Get-ProvisioningOS"] = r"""
function Get-ProvisioningOS {
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    $out = [ordered]@{ caption = $os.Caption; version = $os.Version;
                       architecture = $env:PROCESSOR_ARCHITECTURE; os_architecture = $os.OSArchitecture }
    [Console]::Out.WriteLine((ConvertTo-Json -InputObject $out -Compress))
}
"""


# -- CLIXML --------------------------------------------------------------------------------
_CLIXML_HEADER = "#< CLIXML"
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def decode_clixml(text: str) -> str:
    """The error/warning text inside PowerShell's CLIXML stderr (``#< CLIXML`` then ``<Objs>``
    documents); text that is not CLIXML comes back unchanged."""
    decoder = ClixmlDecoder()
    return decoder.feed(text) + decoder.flush()


class ClixmlDecoder:
    """Incremental: feed stderr text as it arrives, get readable text out as soon as each
    ``<Objs>`` document is complete. Progress records are dropped; error, warning, verbose and
    information strings are kept."""

    _KEEP = {"Error", "Warning", "Verbose", "Debug", "Information"}

    def __init__(self) -> None:
        self._buffer = ""
        self._mode: str | None = None  # None: undecided, "clixml", "plain"

    def feed(self, text: str) -> str:
        self._buffer += text
        if self._mode is None:
            stripped = self._buffer.lstrip("\r\n")
            if len(stripped) < len(_CLIXML_HEADER) and _CLIXML_HEADER.startswith(stripped):
                return ""
            self._mode = "clixml" if stripped.startswith(_CLIXML_HEADER) else "plain"
            if self._mode == "clixml":
                self._buffer = stripped[len(_CLIXML_HEADER):]
        if self._mode == "plain":
            out, self._buffer = self._buffer, ""
            return out
        parts: list[str] = []
        while True:
            end = self._buffer.find("</Objs>")
            if end < 0:
                break
            start = self._buffer.find("<Objs")
            document = self._buffer[start:end + len("</Objs>")] if 0 <= start < end else ""
            self._buffer = self._buffer[end + len("</Objs>"):]
            parts.append(self._strings(document))
            # a new "#< CLIXML" header may start the next block (one per process write burst)
            self._buffer = self._buffer.lstrip("\r\n")
            if self._buffer.startswith(_CLIXML_HEADER):
                self._buffer = self._buffer[len(_CLIXML_HEADER):]
        return "".join(parts)

    def flush(self) -> str:
        rest, self._buffer = self._buffer, ""
        if self._mode == "clixml" and rest.strip():
            return rest  # an unfinished document: better shown raw than lost
        return rest if self._mode != "clixml" else ""

    def _strings(self, document: str) -> str:
        if not document:
            return ""
        import xml.etree.ElementTree as ET  # only when PowerShell reported an error

        try:
            root = ET.fromstring(document)
        except ET.ParseError:
            return document
        pieces = []
        for node in root.iter():
            if node.tag.rsplit("}", 1)[-1] == "S" and node.get("S") in self._KEEP and node.text:
                pieces.append(_unescape(node.text))
        return "".join(pieces)
