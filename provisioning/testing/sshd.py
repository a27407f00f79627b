"""Throwaway OpenSSH ``sshd`` hosts on 127.0.0.1, for our tests and for driver authors'.

Each host is one real ``/usr/sbin/sshd -D`` process (Debian package ``openssh-server``) with its
own config, ed25519 host key and authorized_keys file, started as a child of this process so that
stopping it kills exactly that PID and the session processes it forked, nothing else::

    host = start_sshd(tmp_dir, authorized_keys=[key.public_openssh])
    host.port, host.host_key          # where to connect, the key to pin
    host.restart_with_new_host_key()  # same port, new key: a pinned client must now refuse it
    host.stop()

As a pytest plugin (``pytest_plugins = ["provisioning.testing.sshd"]``) it provides the fixtures
``client_key`` (an ed25519 key, once per session), ``sshd_host`` (a fresh host per test, authorizing
``client_key``) and ``sudo_user`` (a non-root login with passwordless sudo).

sshd takes the *first* value it reads for most keywords, so ``extra_config`` is written before our
defaults (and any ``Match`` block in it after them): it overrides, it does not append.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import field
from typing import Any, Iterator, Sequence

from provisioning.inputs.records import record
from provisioning.keys import generate_private_key, load_private_key

__all__ = ["SSHDHost", "start_sshd", "sshd_hosts", "stop_all", "TestUser", "ensure_test_user",
           "SSHD_PATH", "sshd_available", "client_key", "sshd_host", "sudo_user"]

SSHD_PATH = "/usr/sbin/sshd"
_START_TIMEOUT = 15.0


def sshd_available() -> str | None:
    """None when sshd hosts can run here, else why not (for a skip reason)."""
    if not os.path.exists(SSHD_PATH):
        return f"{SSHD_PATH} is missing: apt-get install openssh-server"
    if os.geteuid() != 0:
        return "sshd test hosts need root (sshd refuses to run privilege separation otherwise)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (read from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields start after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _write(path: str, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def _public_line(pub_path: str) -> str:
    with open(pub_path, encoding="ascii") as handle:
        return " ".join(handle.read().split()[:2])


@record
class SSHDHost:
    """One running sshd. ``host_key`` is its public key line (``ssh-ed25519 AAAA...``)."""

    directory: str
    port: int
    user: str
    authorized_keys_path: str
    extra_config: str = ""
    skip_bashrc: bool = True
    host: str = "127.0.0.1"
    host_key: str = ""
    process: subprocess.Popen | None = field(default=None, repr=False)
    _owned_key_dir: str | None = field(default=None, repr=False)

    # -- paths -------------------------------------------------------------------------------
    @property
    def config_path(self) -> str:
        return os.path.join(self.directory, "sshd_config")

    @property
    def host_key_path(self) -> str:
        return os.path.join(self.directory, "ssh_host_ed25519_key")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "sshd.log")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def known_hosts_line(self) -> str:
        """The line a known_hosts file needs for this host."""
        return f"[{self.host}]:{self.port} {self.host_key}"

    def log(self) -> str:
        """What sshd logged so far (for failure messages)."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    # -- life cycle --------------------------------------------------------------------------
    def _generate_host_key(self) -> None:
        for path in (self.host_key_path, self.host_key_path + ".pub"):
            if os.path.exists(path):
                os.unlink(path)
        generate_private_key(self.host_key_path, name=f"sshd-test-{self.port}")
        self.host_key = _public_line(self.host_key_path + ".pub")

    def _write_config(self) -> None:
        before, match = self.extra_config, ""
        lines = self.extra_config.splitlines(keepends=True)
        for index, line in enumerate(lines):
            if line.strip().lower().startswith("match "):
                before, match = "".join(lines[:index]), "".join(lines[index:])
                break
        body = f"""# written by provisioning.testing.sshd; extra_config first: sshd keeps the first value
{before}
Port {self.port}
ListenAddress {self.host}
HostKey {self.host_key_path}
PidFile none
AuthorizedKeysFile {self.authorized_keys_path}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
MaxStartups 200
MaxSessions 100
PrintMotd no
PrintLastLog no
AllowTcpForwarding yes
AllowAgentForwarding yes
Subsystem sftp internal-sftp
LogLevel VERBOSE
{"SetEnv SHLVL=1" if self.skip_bashrc else ""}
{match}"""
        _write(self.config_path, body, 0o600)

    def _spawn(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self._write_config()
        check = subprocess.run([SSHD_PATH, "-t", "-f", self.config_path], capture_output=True,
                               text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejects its config {self.config_path}: {check.stderr.strip()}")
        self.process = subprocess.Popen(
            [SSHD_PATH, "-D", "-f", self.config_path, "-E", self.log_path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def _wait_ready(self, timeout: float = _START_TIMEOUT) -> bool:
        """True once sshd answers with its banner; False if it exited (port taken...)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"sshd on port {self.port} did not answer within {timeout:g} s; "
                           f"log:\n{self.log()[-2000:]}")

    def _terminate(self) -> None:
        """Kill our sshd and the session processes it forked (exactly those PIDs)."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            descendants = _children_of(proc.pid)
            proc.terminate()
            for child in descendants:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.process = None

    def stop(self) -> None:
        """Stop sshd (idempotent) and remove files it owns outside ``directory``."""
        self._terminate()
        if self._owned_key_dir:
            shutil.rmtree(self._owned_key_dir, ignore_errors=True)
            self._owned_key_dir = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same host key."""
        self._terminate()
        self._spawn()
        if not self._wait_ready():
            raise RuntimeError(f"sshd did not come back on port {self.port}:\n{self.log()[-2000:]}")

    def restart_with_new_host_key(self) -> str:
        """Same port, a freshly generated host key (returns its public line)."""
        self._terminate()
        self._generate_host_key()
        self._spawn()
        if not self._wait_ready():
            raise RuntimeError(f"sshd did not come back on port {self.port}:\n{self.log()[-2000:]}")
        return self.host_key

    def restart_with_host_key(self, private_openssh: bytes | str) -> str:
        """Same port, the given private host key (as a cloud node gets it from cloud-init);
        returns its public line."""
        data = private_openssh.encode() if isinstance(private_openssh, str) else private_openssh
        public = load_private_key(data, name="given host key").public_openssh
        self._terminate()
        _write(self.host_key_path, data.decode("ascii"), 0o600)
        _write(self.host_key_path + ".pub", public + "\n", 0o644)
        self.host_key = " ".join(public.split()[:2])
        self._spawn()
        if not self._wait_ready():
            raise RuntimeError(f"sshd did not come back on port {self.port}:\n{self.log()[-2000:]}")
        return self.host_key

    def set_authorized_keys(self, keys: Sequence[str]) -> None:
        """Replace the keys allowed to log in (read by sshd at every login: no restart)."""
        _write(self.authorized_keys_path, "".join(k.strip() + "\n" for k in keys), 0o644)

    def __enter__(self) -> "SSHDHost":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _prepare(tmp_dir: str, authorized_keys: Sequence[str], port: int | None, user: str,
             extra_config: str, skip_bashrc: bool) -> SSHDHost:
    reason = sshd_available()
    if reason:
        raise RuntimeError(reason)
    chosen = port or _free_port()
    directory = tempfile.mkdtemp(prefix=f"sshd-{chosen}-", dir=tmp_dir)
    owned = None
    if user != "root":
        # sshd reads authorized_keys as the login user: keep it where that user can read it
        owned = tempfile.mkdtemp(prefix="provisioning-sshd-keys-")
        os.chmod(owned, 0o755)
        keys_path = os.path.join(owned, "authorized_keys")
    else:
        keys_path = os.path.join(directory, "authorized_keys")
    host = SSHDHost(directory=directory, port=chosen, user=user, authorized_keys_path=keys_path,
                    extra_config=extra_config, skip_bashrc=skip_bashrc, _owned_key_dir=owned)
    host.set_authorized_keys(authorized_keys)
    host._generate_host_key()
    return host


def start_sshd(tmp_dir: str | os.PathLike, *, authorized_keys: list[str], port: int | None = None,
               user: str = "root", extra_config: str = "", skip_bashrc: bool = True) -> SSHDHost:
    """Start one sshd on 127.0.0.1 and wait until it answers.

    ``user`` is the login the host is meant for (its authorized_keys must be readable by it).
    ``skip_bashrc`` hands sessions ``SHLVL=1`` so bash skips ``~/.bashrc`` (here it runs
    ``pyenv init``, 0.2 s per command, which would swamp every timing)."""
    for _attempt in range(5):
        host = _prepare(str(tmp_dir), authorized_keys, port, user, extra_config, skip_bashrc)
        host._spawn()
        if host._wait_ready():
            return host
        log = host.log()
        host.stop()
        if port is not None or "Address already in use" not in log:
            raise RuntimeError(f"sshd on port {host.port} exited at start:\n{log[-2000:]}")
    raise RuntimeError("sshd could not find a free port in 5 tries")


def sshd_hosts(n: int, tmp_dir: str | os.PathLike, authorized_keys: list[str], *,
               user: str = "root", extra_config: str = "",
               skip_bashrc: bool = True) -> list[SSHDHost]:
    """Start ``n`` hosts at once (spawn all, then wait for all). Stop them with ``stop_all``."""
    started: list[SSHDHost] = []
    try:
        for _ in range(n):
            host = _prepare(str(tmp_dir), authorized_keys, None, user, extra_config, skip_bashrc)
            host._spawn()
            started.append(host)
        for index, host in enumerate(started):
            if not host._wait_ready():
                host.stop()
                started[index] = start_sshd(tmp_dir, authorized_keys=authorized_keys, user=user,
                                            extra_config=extra_config, skip_bashrc=skip_bashrc)
        return started
    except BaseException:
        stop_all(started)
        raise


def stop_all(hosts: Sequence[SSHDHost]) -> None:
    for host in hosts:
        host.stop()


# -- a non-root login with sudo ---------------------------------------------------------------
#: shared/exclusive flocks here make test users safe across concurrent test runs
_USER_LOCKS = "/run/provisioning-test-users"


@record
class TestUser:
    """A local account for sudo tests; ``remove()`` undoes what ``ensure_test_user`` did, once
    no other process (another test run) still uses the account."""

    __test__ = False  # not a pytest test class

    name: str
    home: str
    created: bool
    sudoers_path: str | None
    _lock: Any = field(default=None, repr=False)

    def remove(self) -> None:
        lock, self._lock = self._lock, None
        if lock is None:
            return
        with _setup_lock(self.name):
            try:
                try:  # only the last user of the account cleans up
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return
                if self.sudoers_path and os.path.exists(self.sudoers_path):
                    os.unlink(self.sudoers_path)
                marker = os.path.join(_USER_LOCKS, f"{self.name}.created")
                if os.path.exists(marker):
                    subprocess.run(["userdel", "-r", self.name], capture_output=True)
                    os.unlink(marker)
            finally:
                lock.close()


@contextlib.contextmanager
def _setup_lock(name: str) -> Iterator[None]:
    """Held while an account is created, configured or removed."""
    os.makedirs(_USER_LOCKS, mode=0o700, exist_ok=True)
    with open(os.path.join(_USER_LOCKS, f"{name}.setup"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_test_user(name: str = "provssh", *, sudo: str | None = "nopasswd") -> TestUser:
    """Create ``name`` if absent (unlocked for key logins with ``UsePAM no``), and grant sudo:
    ``"nopasswd"`` (passwordless), ``"password"`` (sudo that asks for a password: ``sudo -n``
    fails, for the error path) or None. Needs root. An account this function created is deleted
    by the last ``remove()``; one that existed before is never deleted."""
    with _setup_lock(name):
        return _ensure_user(name, sudo)


def _ensure_user(name: str, sudo: str | None) -> TestUser:
    lock = open(os.path.join(_USER_LOCKS, f"{name}.lock"), "a+")
    try:
        created = False
        try:
            entry = pwd.getpwnam(name)
            if entry.pw_shell.endswith(("nologin", "false")):
                raise RuntimeError(f"user {name} exists but cannot log in (shell "
                                   f"{entry.pw_shell}); pick another name for the SSH test user")
        except KeyError:
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True,
                           capture_output=True)
            _write(os.path.join(_USER_LOCKS, f"{name}.created"), "", 0o600)
            created = True
            entry = pwd.getpwnam(name)
        # a '!' password locks the account, and sshd without PAM refuses locked accounts
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
        sudoers = None
        if sudo is not None:
            if not shutil.which("sudo"):
                raise RuntimeError("sudo is not installed: apt-get install sudo")
            rule = "NOPASSWD: ALL" if sudo == "nopasswd" else "ALL"
            sudoers = f"/etc/sudoers.d/provisioning-test-{name}"
            _write(sudoers, f"{name} ALL=(ALL) {rule}\n", 0o440)
        fcntl.flock(lock, fcntl.LOCK_SH)  # one shared hold per user of the account
    except BaseException:
        lock.close()
        raise
    return TestUser(name=name, home=entry.pw_dir, created=created, sudoers_path=sudoers,
                    _lock=lock)


# -- pytest fixtures --------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixtures
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture(scope="session")
    def client_key(tmp_path_factory):
        """An ed25519 client key (a ``PrivateKey``) that ``sshd_host`` authorizes."""
        return generate_private_key(str(tmp_path_factory.mktemp("client-key") / "id_ed25519"),
                                    name="test-client")

    @pytest.fixture
    def sshd_host(tmp_path, client_key) -> Iterator[SSHDHost]:
        """A fresh sshd on 127.0.0.1 for root, authorizing ``client_key``."""
        reason = sshd_available()
        if reason:
            pytest.skip(reason)
        host = start_sshd(tmp_path, authorized_keys=[client_key.public_openssh])
        try:
            yield host
        finally:
            host.stop()

    @pytest.fixture(scope="session")
    def sudo_user() -> Iterator[TestUser]:
        """A non-root account ``provssh`` with passwordless sudo (removed afterwards)."""
        if os.geteuid() != 0:
            pytest.skip("creating a test user needs root")
        if not shutil.which("sudo") or not shutil.which("useradd"):
            pytest.skip("sudo or useradd is not installed (apt-get install sudo passwd)")
        user = ensure_test_user("provssh", sudo="nopasswd")
        try:
            yield user
        finally:
            user.remove()
