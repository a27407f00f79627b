"""Private keys by name: lookup, generation (ed25519 or RSA), OpenSSH public keys, fingerprints;
random hex for tokens and temporary names.

A key name resolves through ``config.private_keys[name]`` (a path or PEM text), then each
directory of ``config.private_key_paths`` (``name`` and ``name.pem``). Generated private keys are
written 0600 in OpenSSH format, with ``name.pub`` beside them. ``cryptography`` is imported only
when a key is actually used.
"""

from __future__ import annotations

import base64
import os
from dataclasses import field
from typing import TYPE_CHECKING, Any

from provisioning.errors import ConfigError
from provisioning.inputs.records import record
from provisioning.inputs.userfiles import MAX_KEY_BYTES, read_user_file

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.config import Config

__all__ = ["PrivateKey", "find_private_key", "generate_private_key", "ensure_private_key",
           "load_private_key", "read_key_file", "fingerprint", "write_private_file",
           "generate_host_key", "random_hex"]


def random_hex(chars: int = 32) -> str:
    """``chars`` lowercase hex digits from ``os.urandom`` (32 = 128 random bits): lock and run
    tokens, temporary file names, fake resource ids. Not ``uuid.uuid4``: importing ``uuid``
    loads ``platform``, about 10 M instructions of a short command's start-up."""
    if chars < 1:
        raise ValueError(f"random_hex needs at least one digit, not {chars}")
    return os.urandom((chars + 1) // 2).hex()[:chars]


def write_private_file(path: str, data: bytes, *, create_dirs: bool = True) -> None:
    """Write a secret (a key, credentials, a state export) atomically with mode 0600 from the
    first byte (parent directories made 0700 when ``create_dirs``). The one private-file writer."""
    if create_dirs:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{random_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fingerprint(public_openssh: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line (``ssh-ed25519 AAAA... comment``)."""
    import hashlib  # OpenSSL's digests load on first use, not at start-up

    parts = public_openssh.split()
    if len(parts) < 2:
        raise ConfigError(f"not an OpenSSH public key: {public_openssh[:40]!r}")
    blob = base64.b64decode(parts[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@record
class PrivateKey:
    """A loaded private key. ``key`` is the cryptography object."""

    name: str
    path: str | None
    key: Any = field(repr=False)

    @property
    def kind(self) -> str:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return "ed25519"
        if isinstance(self.key, rsa.RSAPrivateKey):
            return "rsa"
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return "ecdsa"
        return type(self.key).__name__

    @property
    def public_openssh(self) -> str:
        """``ssh-ed25519 AAAA... name`` (the line for authorized_keys)."""
        from cryptography.hazmat.primitives import serialization

        line = self.key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH).decode()
        return f"{line} {self.name}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_openssh)

    def private_openssh(self) -> bytes:
        """The unencrypted private key in OpenSSH format (for transports; never logged)."""
        from cryptography.hazmat.primitives import serialization

        data: bytes = self.key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.OpenSSH,
                                             serialization.NoEncryption())
        return data


def _passphrase(config: "Config | None", name: str) -> bytes | None:
    value = None
    if config is not None:
        value = config.get("key_passphrases", {}).get(name)
    env_name = "PROVISIONING_KEY_PASSPHRASE_" + "".join(c if c.isalnum() else "_" for c in name).upper()
    value = value or os.environ.get(env_name) or os.environ.get("PROVISIONING_KEY_PASSPHRASE")
    return value.encode() if value else None


def load_private_key(data: bytes, *, name: str, path: str | None = None,
                     passphrase: bytes | None = None) -> PrivateKey:
    """Parse PEM or OpenSSH private key bytes; a wrong or missing passphrase is a ConfigError."""
    from cryptography.hazmat.primitives import serialization

    where = path or f"private_keys.{name}"
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: Any = serialization.load_ssh_private_key(data, password=passphrase)
        else:
            key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:
        if passphrase is None:
            raise ConfigError(f"key {name!r} is encrypted: set its passphrase in key_passphrases."
                              f"{name} or PROVISIONING_KEY_PASSPHRASE", file=where) from exc
        raise ConfigError(f"key {name!r}: {exc}", file=where) from exc
    except ValueError as exc:
        if passphrase is not None:
            raise ConfigError(f"key {name!r}: wrong passphrase, or not a private key ({exc})",
                              file=where) from exc
        raise ConfigError(f"key {name!r} is not a private key in PEM or OpenSSH format",
                          file=where) from exc
    return PrivateKey(name=name, path=path, key=key)


def read_key_file(path: str, *, name: str, key: str | None = None) -> bytes:
    """The bytes of a private key file: a regular file of bounded size that only its owner can
    read or write (OpenSSH's rule, which refuses "UNPROTECTED PRIVATE KEY FILE")."""
    data = read_user_file(path, what=f"private key {name!r}", limit=MAX_KEY_BYTES, key=key)
    info = os.stat(path)
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        raise ConfigError(f"private key {name!r} at {path} is unprotected (mode "
                          f"{info.st_mode & 0o777:04o}): others could read it, so it is refused "
                          f"as OpenSSH refuses it; fix it with: chmod 600 {path}", key=key)
    return data


def _candidates(config: "Config | None", name: str) -> list[str]:
    paths = []
    if config is not None:
        for directory in config.private_key_paths:
            paths += [os.path.join(directory, name), os.path.join(directory, f"{name}.pem")]
    return paths


def find_private_key(config: "Config | None", name: str) -> PrivateKey:
    """Resolve a key by name, or raise ConfigError listing every place searched."""
    if config is not None and name in config.private_keys:
        value = config.private_keys[name]
        if isinstance(value, str) and "PRIVATE KEY-----" in value:
            return load_private_key(value.encode(), name=name, passphrase=_passphrase(config, name))
        path = os.path.normpath(os.path.join(config.base_dir, os.path.expanduser(str(value))))
        if not os.path.exists(path):
            raise ConfigError(f"private key {name!r} points at {path}, which does not exist",
                              key=f"private_keys.{name}")
        return load_private_key(read_key_file(path, name=name, key=f"private_keys.{name}"),
                                name=name, path=path, passphrase=_passphrase(config, name))
    searched = _candidates(config, name)
    for path in searched:
        if os.path.lexists(path):
            return load_private_key(read_key_file(path, name=name), name=name, path=path,
                                    passphrase=_passphrase(config, name))
    raise ConfigError(
        f"private key {name!r} not found; searched {', '.join(searched) or '(no private_key_paths)'}"
        f"; add it to private_keys or a private_key_paths directory", key="private_keys")


def generate_private_key(path: str, *, name: str | None = None, kind: str = "ed25519",
                         bits: int = 3072) -> PrivateKey:
    """Create a new key pair at ``path`` (0600) and ``path.pub``."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key: Any
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        raise ConfigError(f"unknown key type {kind!r}; use 'ed25519' or 'rsa'", key="key_type")
    private = PrivateKey(name=name or os.path.basename(path), path=os.path.abspath(path), key=key)
    write_private_file(path, private.private_openssh())
    with open(f"{path}.pub", "w", encoding="ascii") as handle:
        handle.write(private.public_openssh + "\n")
    return private


def generate_host_key() -> tuple[bytes, str]:
    """A fresh ed25519 host key made here, so its public half can be pinned before the machine
    first answers: (OpenSSH private key bytes, public line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def ensure_private_key(config: "Config | None", name: str, directory: str, *,
                       kind: str = "ed25519", bits: int = 3072) -> PrivateKey:
    """The key called ``name``; generated in ``directory`` when it exists nowhere."""
    try:
        return find_private_key(config, name)
    except ConfigError:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            # generate beside it, then link into place: when two runs race, one key wins and
            # both use it (a replace would leave the loser's public key in authorized_keys)
            tmp = f"{path}.new-{os.getpid()}-{random_hex(6)}"
            fresh = generate_private_key(tmp, name=name, kind=kind, bits=bits)
            try:
                os.link(tmp, path)
                os.replace(f"{tmp}.pub", f"{path}.pub")
                fresh.path = os.path.abspath(path)
                return fresh
            except FileExistsError:
                pass
            finally:
                for leftover in (tmp, f"{tmp}.pub"):
                    if os.path.exists(leftover):
                        os.unlink(leftover)
        return load_private_key(read_key_file(path, name=name), name=name, path=path,
                                passphrase=_passphrase(config, name))
