"""Host keys of cloud nodes: known before the first connection, never trusted blindly.

A node reached over SSH gets its host key verified in the first of these ways that applies:

1. ``transport.host_key`` or ``transport.known_hosts`` given by the user: used as is.
2. ``cloud_init: true`` (the default) and a provider that takes userdata: the node's ed25519
   host key is generated here and handed to cloud-init in the userdata (``ssh_keys``, with
   ``ssh_deletekeys`` and no ``ssh_genkeytypes``, so the node serves exactly that key). Its
   public half is pinned in the machine's reference before the create request, so the first
   connection is already verified. The private half is only ever in memory and in the userdata:
   never in the state, events or logs. A node adopted after a crash gets the public key its
   userdata carries (read back from the provider), so a retried request with a fresh key cannot
   pin the wrong one.
3. A provider that serves the node's console (EC2 ``GetConsoleOutput``): cloud-init prints the
   node's host key fingerprints there between ``-----BEGIN SSH HOST KEY FINGERPRINTS-----`` and
   ``-----END SSH HOST KEY FINGERPRINTS-----``; the key the node presents must be one of them.
4. ``host_key_policy: trust-first-use``: the first key seen is pinned, and the event says so.

With none of these, ``host_key_method`` raises a ``ConfigError`` naming the three options.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import field
from typing import TYPE_CHECKING, Any, Mapping, cast

from provisioning.errors import ConfigError, HostKeyMismatch
from provisioning.inputs.records import record
from provisioning.keys import fingerprint, generate_host_key

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.transports.base import HostKeyCallback, NewHostKey

__all__ = ["HOST_KEY_POLICIES", "GeneratedHostKey", "new_host_key", "host_key_method",
           "userdata_with_host_key", "host_key_in_userdata", "console_host_keys",
           "ConsoleHostKeys", "verify_against_console", "console_checker"]

HOST_KEY_POLICIES = ("verify", "trust-first-use")

_BEGIN_FPRINTS = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
_END_FPRINTS = "-----END SSH HOST KEY FINGERPRINTS-----"
_BEGIN_KEYS = "-----BEGIN SSH HOST KEY KEYS-----"
_END_KEYS = "-----END SSH HOST KEY KEYS-----"
_SHA256 = re.compile(r"\bSHA256:([A-Za-z0-9+/]{43})=?(?![A-Za-z0-9+/])")
_MD5 = re.compile(r"(?<![0-9a-fA-F:])((?:[0-9a-fA-F]{2}:){15}[0-9a-fA-F]{2})(?![0-9a-fA-F:])")
_KEY_LINE = re.compile(r"\b((?:ssh|ecdsa-sha2|sk-ssh|sk-ecdsa)[-\w@.]*) (AAAA[A-Za-z0-9+/]+={0,3})")


@record(frozen=True)
class GeneratedHostKey:
    """A host key made here for a new node. ``private`` never appears in a repr."""

    public: str
    private: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def new_host_key() -> GeneratedHostKey:
    private, public = generate_host_key()
    return GeneratedHostKey(public=public, private=private.decode("ascii"))


# -- which way applies -----------------------------------------------------------------------
def host_key_method(opts: Mapping[str, Any], *, takes_userdata: bool, has_console: bool,
                    machine: str | None = None) -> str:
    """How the node's host key will be verified: ``none`` (not an SSH node), ``configured``,
    ``cloud-init``, ``console`` or ``trust-first-use``. Raises ConfigError when no way applies."""
    transport = opts.get("transport") or {}
    if not isinstance(transport, Mapping) or str(transport.get("kind", "ssh")) != "ssh":
        return "none"
    if transport.get("host_key") or transport.get("known_hosts"):
        return "configured"
    if opts.get("cloud_init", True) and takes_userdata:
        return "cloud-init"
    if has_console:
        return "console"
    if opts.get("host_key_policy") == "trust-first-use":
        return "trust-first-use"
    why = ("cloud_init is false" if not opts.get("cloud_init", True) else
           "no host key was generated here for this node (its provider takes no userdata, or "
           "the node was made or adopted without one)")
    raise ConfigError(
        f"the node's SSH host key cannot be verified: {why}, and the provider serves no console "
        "output to read its fingerprints from. Choose one: (1) an image that runs cloud-init "
        "with cloud_init: true, so the host key is generated here and pinned before the first "
        "connection; (2) the node's key in transport.host_key (or transport.known_hosts); "
        "(3) host_key_policy: trust-first-use, to accept the first key seen (an attacker "
        "between you and the node at that moment would go unnoticed)",
        key="machine_options.host_key_policy", machine=machine)


# -- cloud-init userdata ---------------------------------------------------------------------
def _cloud_config(key: GeneratedHostKey) -> dict[str, Any]:
    return {"ssh_deletekeys": True, "ssh_genkeytypes": [],
            "ssh_keys": {"ed25519_private": key.private, "ed25519_public": key.public}}


_OURS = ("ssh_keys", "ssh_deletekeys", "ssh_genkeytypes")
_PART_TYPES = (("#!", "text/x-shellscript"), ("#include", "text/x-include-url"),
               ("#cloud-boothook", "text/cloud-boothook"), ("## template: jinja", "text/jinja2"),
               ("#part-handler", "text/part-handler"))


def userdata_with_host_key(userdata: str | None, key: GeneratedHostKey,
                           machine: str | None = None) -> str:
    """The userdata handing ``key`` to cloud-init: the user's ``#cloud-config`` with our keys
    merged in, or a MIME multipart of our cloud-config and the user's part (a script...)."""
    import yaml

    ours = _cloud_config(key)
    if not userdata:
        return "#cloud-config\n" + yaml.safe_dump(ours, sort_keys=False)
    if userdata.lstrip().startswith("#cloud-config"):
        try:
            theirs = yaml.safe_load(userdata)
        except yaml.YAMLError as exc:
            raise ConfigError(f"the userdata is #cloud-config but not valid YAML ({exc})",
                              key="machine_options.userdata", machine=machine) from None
        if theirs is None:
            theirs = {}
        if not isinstance(theirs, dict):
            raise ConfigError("the userdata is #cloud-config but not a mapping",
                              key="machine_options.userdata", machine=machine)
        clash = [k for k in _OURS if k in theirs]
        if clash:
            raise ConfigError(
                f"the userdata sets {', '.join(clash)}, which cloud_init: true sets to hand the "
                "node the host key generated here; remove them, or set cloud_init: false and give "
                "the node's key in transport.host_key", key="machine_options.userdata",
                machine=machine)
        return "#cloud-config\n" + yaml.safe_dump({**theirs, **ours}, sort_keys=False)
    return _multipart(ours, userdata)


def host_key_in_userdata(userdata: str | None) -> str | None:
    """The public host key a userdata made by ``userdata_with_host_key`` hands to cloud-init."""
    import email

    import yaml

    if not userdata:
        return None
    texts = [userdata]
    if userdata.lstrip().lower().startswith(("content-type:", "mime-version:")):
        message = email.message_from_string(userdata)
        texts = [cast(bytes, part.get_payload(decode=True)).decode("utf-8", "replace")
                 for part in message.walk()
                 if not part.is_multipart() and part.get_content_type() == "text/cloud-config"]
    for text in texts:
        if not text.lstrip().startswith("#cloud-config"):
            continue
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        keys = doc.get("ssh_keys") if isinstance(doc, dict) else None
        if isinstance(keys, dict) and isinstance(keys.get("ed25519_public"), str):
            return " ".join(keys["ed25519_public"].split()[:2])
    return None


def _multipart(ours: dict[str, Any], userdata: str) -> str:
    import email
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    import yaml

    message = MIMEMultipart()
    message.attach(MIMEText("#cloud-config\n" + yaml.safe_dump(ours, sort_keys=False),
                            "cloud-config", "utf-8"))
    head = userdata.lstrip()
    if head.lower().startswith(("content-type:", "mime-version:")):
        given = email.message_from_string(userdata)
        for part in given.walk() if given.is_multipart() else [given]:
            if not part.is_multipart():
                message.attach(part)
    else:
        subtype = next((t for prefix, t in _PART_TYPES if head.startswith(prefix)), "text/plain")
        message.attach(MIMEText(userdata, subtype.split("/", 1)[1], "utf-8"))
    return message.as_string()


# -- the console -----------------------------------------------------------------------------
@record(frozen=True)
class ConsoleHostKeys:
    """What the node printed in its last fingerprint block (and key block, if any)."""

    fingerprints: frozenset[str]
    keys: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.fingerprints or self.keys)


def _last_block(text: str, begin: str, end: str) -> list[str]:
    start = text.rfind(begin)
    if start < 0:
        return []
    stop = text.find(end, start)
    if stop < 0:  # the block is still being written: not trusted half-printed
        return []
    return text[start + len(begin):stop].splitlines()


def console_host_keys(console: str | None) -> ConsoleHostKeys:
    """The host key fingerprints (``SHA256:...``, or ``MD5:aa:bb...`` from older cloud-init) and
    public keys of the node's last boot, read from its console text; empty when not printed yet."""
    if not console:
        return ConsoleHostKeys(frozenset())
    found: set[str] = set()
    for line in _last_block(console, _BEGIN_FPRINTS, _END_FPRINTS):
        found.update("SHA256:" + m for m in _SHA256.findall(line))
        found.update("MD5:" + m.lower() for m in _MD5.findall(line))
    keys = {f"{kind} {blob}" for line in _last_block(console, _BEGIN_KEYS, _END_KEYS)
            for kind, blob in _KEY_LINE.findall(line)}
    return ConsoleHostKeys(frozenset(found), frozenset(keys))


def _md5(public_line: str) -> str:
    digest = hashlib.md5(base64.b64decode(public_line.split()[1]), usedforsecurity=False)
    return "MD5:" + ":".join(f"{b:02x}" for b in digest.digest())


def verify_against_console(seen: str, printed: ConsoleHostKeys, *, host: str,
                           machine: str | None = None) -> str:
    """``seen`` (the key the node presents) when the console vouches for it, else
    HostKeyMismatch. Returns how it matched, for the event."""
    line = " ".join(seen.split()[:2])
    if line in printed.keys:
        return "its public key"
    try:
        sha256, md5 = fingerprint(line), _md5(line)
    except (ConfigError, binascii.Error, IndexError):
        sha256 = md5 = ""
    if sha256 in printed.fingerprints:
        return f"fingerprint {sha256}"
    if md5 in printed.fingerprints:
        return f"fingerprint {md5}"
    shown = ", ".join(sorted(printed.fingerprints | printed.keys)) or "(none)"
    raise HostKeyMismatch(
        f"host key {sha256 or line[:40]} presented by {host} is not among the host keys the node "
        f"printed to its console ({shown}): someone else may be answering at that address; "
        "check the node's console in the provider's console before trusting it",
        host=host, seen=line, machine=machine)


def console_checker(printed: ConsoleHostKeys, pin_verified: "HostKeyCallback",
                    pin_first_use: "HostKeyCallback | None", pin_gateway: "HostKeyCallback", *,
                    machine: str | None) -> "HostKeyCallback":
    """The new-host-key callback of a node verified through its console: a key the console
    vouches for goes to ``pin_verified``; with nothing printed yet, to ``pin_first_use`` (only
    given under ``host_key_policy: trust-first-use``), else it is refused. A gateway's key is
    not the node's: it goes to ``pin_gateway`` (the transport's usual rules)."""

    def check(seen: "NewHostKey") -> None:
        if seen.gateway or seen.kind != "ssh":
            pin_gateway(seen)
            return
        if printed:
            verify_against_console(seen.key, printed, host=seen.host, machine=machine)
            pin_verified(seen)
        elif pin_first_use is not None:
            pin_first_use(seen)
        else:
            raise HostKeyMismatch(
                f"the node at {seen.host} has not printed its host key fingerprints to its "
                "console yet, so its key cannot be verified; run again once it has booted, or "
                "set host_key_policy: trust-first-use", host=seen.host, seen=seen.key,
                machine=machine)

    return check
