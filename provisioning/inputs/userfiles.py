"""Reading files the user names (cluster files, config, keys, templates, scripts): bounded.

Every such read goes through ``read_user_file``: the path must be a regular file (not a
directory, FIFO, device such as ``/dev/zero``, or socket), at most ``limit`` bytes, and every
failure is a ``ConfigError`` naming the file (and the key that named it) with the fix. The file
is opened non-blocking so a FIFO cannot hang the run, and is checked with ``fstat`` on the open
descriptor so a swap between check and read does not matter.
"""

from __future__ import annotations

import errno
import json
import os
import stat

from provisioning.errors import ConfigError

__all__ = ["read_user_file", "read_user_text", "check_user_file", "MAX_CONFIG_BYTES",
           "MAX_OUTPUT_BYTES", "MAX_KEY_BYTES", "MAX_TEMPLATE_BYTES", "check_output_file",
           "directory_problem", "creation_problem"]

#: cluster files, provisioning.yml, state exports
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: the largest plan or state export ``check_output_file`` reads to see that it is ours (a
#: 10,000-machine plan is about 5 MB, so the cluster-file limit would be too tight here)
MAX_OUTPUT_BYTES = 256 * 1024 * 1024
#: private keys and host keys (a 16384-bit RSA key in PEM is about 12 KiB)
MAX_KEY_BYTES = 1024 * 1024
#: templates and scripts rendered or read into memory
MAX_TEMPLATE_BYTES = 16 * 1024 * 1024

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _human(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB" if size >= 1024 * 1024 else f"{size // 1024} KiB"


def _fail(path: str, what: str, message: str, key: str | None,
          file: str | None = None) -> ConfigError:
    return ConfigError(f"{what} {path}: {message}", file=file, key=key)


def check_user_file(path: str, *, what: str = "file", limit: int | None = None,
                    key: str | None = None, file: str | None = None) -> None:
    """Raise the ConfigError ``read_user_file`` would, without reading the contents."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _error(path, what, exc, key, file) from exc
    if not stat.S_ISREG(info.st_mode):
        raise _fail(path, what, f"is {_kind(info.st_mode)}; give the path of a regular file",
                    key, file)
    if limit is not None and info.st_size > limit:
        raise _fail(path, what, f"is larger than {_human(limit)} ({info.st_size} bytes); "
                                "is it the right file?", key, file)


def check_output_file(path: str, *, what: str, fmt: str, key: str | None = None) -> None:
    """Refuse to replace anything at ``path`` but an earlier file of ours: a ``what`` whose
    JSON says ``"format": fmt`` (a plan, a state export). A typo in ``--out`` must not
    overwrite a user's file, nor fail half-way on a directory."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _error(path, what, exc, key, None) from exc
    if not stat.S_ISREG(info.st_mode):
        raise _fail(path, what, f"is {_kind(info.st_mode)}; give the path of a file to write",
                    key)
    ours = False
    if info.st_size <= MAX_OUTPUT_BYTES:  # a plan of 500,000 machines; a bigger file is not ours
        try:
            with open(path, "rb") as handle:
                ours = json.load(handle).get("format") == fmt
        except (OSError, ValueError, AttributeError):
            pass
    if not ours:
        raise _fail(path, what, f"exists and is not a {what} written by provisioning; move it "
                                "away or give another path", key)


def creation_problem(path: str, *, writable: bool = True) -> str | None:
    """Why nothing (file or directory) can be made at the missing ``path``, found without
    writing: a symbolic link to nothing on the way (``path`` itself included), a file where a
    directory must go, or (``writable``) a first existing directory this user cannot write.
    None when it looks makeable. The one check behind ``directory_problem`` and the state
    file's."""
    found = path
    while not os.path.lexists(found) and os.path.dirname(found) != found:
        found = os.path.dirname(found)
    if os.path.islink(found) and not os.path.exists(found):
        return f"{found} is a symbolic link to {os.readlink(found)}, which does not exist"
    if found == path:
        return None
    if not os.path.isdir(found):
        return f"{found} is not a directory"
    if writable and not os.access(found, os.W_OK | os.X_OK):
        return f"{found} is not writable"
    return None


def directory_problem(path: str) -> str | None:
    """Why no directory can be made at ``path`` (a file on the way, a parent not writable),
    found without writing anything; None when it exists as a directory or looks makeable."""
    if os.path.isdir(path):
        return None
    if os.path.lexists(path) and os.path.exists(path):
        return f"{path} is not a directory"
    return creation_problem(path)


def read_user_file(path: str, *, what: str = "file", limit: int = MAX_CONFIG_BYTES,
                   key: str | None = None, file: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (else ConfigError)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise _error(path, what, exc, key, file) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _fail(path, what, f"is {_kind(info.st_mode)}; give the path of a regular file",
                        key, file)
        if info.st_size > limit:
            raise _fail(path, what, f"is larger than {_human(limit)} ({info.st_size} bytes); "
                                    "is it the right file?", key, file)
        chunks, total = [], 0
        while True:
            try:
                chunk = os.read(fd, min(1024 * 1024, limit + 1 - total))
            except OSError as exc:
                raise _error(path, what, exc, key, file) from exc
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while we read it
                raise _fail(path, what, f"is larger than {_human(limit)}; is it the right file?",
                            key, file)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_user_text(path: str, *, what: str = "file", limit: int = MAX_CONFIG_BYTES,
                   key: str | None = None, file: str | None = None) -> str:
    """``read_user_file`` decoded as UTF-8 (a ConfigError when it is not UTF-8 text)."""
    data = read_user_file(path, what=what, limit=limit, key=key, file=file)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, what, f"is not UTF-8 text (byte {exc.start})", key, file) from exc


def _error(path: str, what: str, exc: OSError, key: str | None,
           file: str | None = None) -> ConfigError:
    if exc.errno == errno.ENOENT:
        return _fail(path, what, "not found; check the path", key, file)
    if exc.errno == errno.EISDIR:
        return _fail(path, what, "is a directory; give the path of a regular file", key, file)
    if exc.errno == errno.ENOTDIR:
        return _fail(path, what, "a part of the path is not a directory", key, file)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return _fail(path, what, "permission denied; make it readable by this user", key, file)
    if exc.errno == errno.ELOOP:
        return _fail(path, what, "too many levels of symbolic links", key, file)
    if exc.errno == errno.ENAMETOOLONG:
        return _fail(path, what, "the path is too long", key, file)
    return _fail(path, what, f"cannot read: {exc.strerror or exc}", key, file)


def name_problem(path: str | os.PathLike) -> str | None:
    """Why no file or directory can have this name on Linux (a part over 255 bytes, a path
    over 4095), found without writing; shown cut to stay on one screen."""
    raw = os.fsencode(path)
    if len(raw) > 4095 or any(len(part) > 255 for part in raw.split(b"/")):
        return f"the name {os.fsdecode(raw)[:80]!r}... is too long for a file name"
    return None
