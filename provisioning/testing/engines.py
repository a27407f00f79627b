"""Throwaway container engines for tests: a ``dockerd`` (with its own containerd) and Podman's
Docker-compatible API service, each started by hand inside a network namespace made for it, so
their bridges, iptables rules and published ports never touch the host's own network.

Like ``provisioning.testing.postgres``: one engine per test session, stopped by PID at the end
(its containers first), every file it made removed. Needs root, ``iproute2``, ``util-linux``
(nsenter) and the Debian packages ``docker.io`` / ``podman``::

    with DockerEngine() as engine:
        url = engine.driver_url            # "docker:unix:///run/prov-dk-.../docker.sock"
        options = engine.driver_options    # {"netns": ...}: where published ports answer
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Iterator

__all__ = ["ContainerEngine", "DockerEngine", "PodmanService", "engine_missing"]

#: short: the engine's socket paths must stay under the kernel's 108-byte limit
RUN_PREFIX = "/run/prov-"
NOFILE = 20000
NPROC = 20000


def engine_missing(kind: str) -> str | None:
    """Why an engine of ``kind`` ("docker" or "podman") cannot run here, or None."""
    if os.geteuid() != 0:
        return f"starting a {kind} engine needs root"
    binary = {"docker": "/usr/sbin/dockerd", "podman": "/usr/bin/podman"}[kind]
    if not (os.path.exists(binary) or shutil.which(os.path.basename(binary))):
        package = "docker.io" if kind == "docker" else "podman"
        return f"{os.path.basename(binary)} is missing: apt-get install {package}"
    for tool in ("ip", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} is missing: apt-get install iproute2 util-linux"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the Docker SDK is missing: pip install 'provisioning[docker]'"
    return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _remove_empty_cgroups(top: str) -> None:
    """rmdir a cgroup directory tree bottom-up (only empty cgroups can go; busy ones stay)."""
    for directory, _, _ in sorted(os.walk(top), key=lambda walk: -len(walk[0])):
        try:
            os.rmdir(directory)
        except OSError:
            pass


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


class ContainerEngine:
    """One engine process in its own network namespace. Subclasses say how to start it."""

    kind = ""
    #: seconds between SIGTERM and SIGKILL
    stop_grace = 30.0
    #: host paths the engine makes outside its own directories: removed at stop when they were
    #: not there at start (another engine's files are left alone)
    host_paths: tuple[str, ...] = ()
    #: cgroup directory names (under each hierarchy) the engine makes for its containers
    cgroup_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.name = f"prov-{self.kind[:2]}-{os.getpid()}-{token}"
        self.netns = self.name
        self.run_dir = RUN_PREFIX + f"{self.kind[:2]}-{token}"
        self.data_dir = tempfile.mkdtemp(prefix=f"provisioning-{self.kind}-")
        self.socket = os.path.join(self.run_dir, "engine.sock")
        self._absent: list[str] = []  # host paths made for the engine, removed on stop
        self.log_path = os.path.join(self.data_dir, "engine.log")
        self.process: subprocess.Popen | None = None

    # -- what the driver needs -----------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def driver_url(self) -> str:
        return f"docker:{self.endpoint}"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def driver_options(self) -> dict:
        """Published ports answer on the loopback of the engine's namespace."""
        return {"netns": self.netns_path}

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.endpoint, timeout=120)

    # -- process control -----------------------------------------------------------------------
    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

    def _cgroup_dirs(self) -> list[str]:
        return [os.path.join("/sys/fs/cgroup", hierarchy, name)
                for hierarchy in _listdir("/sys/fs/cgroup") for name in self.cgroup_names]

    def start(self, timeout: float = 120.0) -> "ContainerEngine":
        self._absent = [p for p in (*self.host_paths, *self._cgroup_dirs())
                        if not os.path.lexists(p)]
        os.makedirs(self.run_dir, mode=0o700)
        _run(["ip", "netns", "add", self.netns])
        _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        # nsenter, not `ip netns exec`: the latter remounts /sys and hides the cgroup tree
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["nsenter", f"--net={self.netns_path}", *self.argv()], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env(),
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                code = self.process and self.process.returncode
                raise RuntimeError(f"{self.kind} engine exited with {code}: {tail}")
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.kind} engine did not answer in {timeout:g} s: {tail}")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        try:
            client = self.client()
            try:
                client.ping()
            finally:
                client.close()
            return True
        except Exception:
            return False

    def remove_containers(self) -> None:
        """Every container of the engine, forced, with its anonymous volumes."""
        try:
            client = self.client()
        except Exception:
            return
        try:
            for container in client.containers.list(all=True):
                try:
                    container.remove(force=True, v=True)
                except Exception:
                    pass
        except Exception:
            pass
        finally:
            client.close()

    def stop(self) -> None:
        """Containers first, then the engine by PID (SIGTERM, SIGKILL if it lingers), then its
        namespace, mounts and files."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            self.remove_containers()
            proc.send_signal(signal.SIGTERM)
            try:
                # Podman's service waits for its clients' idle keep-alive connections to close;
                # its containers are gone by now, so a kill after a short grace loses nothing
                proc.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._unmount_leftovers()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for path in self._absent:
            if path.startswith("/sys/fs/cgroup/"):
                _remove_empty_cgroups(path)
            elif os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)
        self._absent = []  # a second stop must not remove what a later engine made

    def leftover_pids(self) -> list[int]:
        """Processes the engine started that outlived it: Podman's ``conmon`` monitors of
        ``exec`` sessions re-parent to init and keep running. Each names this engine's own
        directories in its command line, so nothing else is matched."""
        mine = (self.run_dir + "/", self.data_dir + "/")
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    args = handle.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(arg.startswith(mine) for arg in args):
                found.append(int(entry))
        return found

    def _unmount_leftovers(self) -> None:
        try:
            with open("/proc/self/mounts", encoding="utf-8") as handle:
                points = [line.split()[1] for line in handle]
        except OSError:
            return
        for point in sorted(points, reverse=True):
            if point.startswith((self.run_dir + "/", self.data_dir + "/")):
                subprocess.run(["umount", "-l", point], capture_output=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "ContainerEngine":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DockerEngine(ContainerEngine):
    """``dockerd`` with its own managed containerd, data root and exec root. Default rlimits
    stay at or under this host's hard limits (root may lack CAP_SYS_RESOURCE)."""

    kind = "docker"
    host_paths = ("/etc/docker", "/run/docker", "/run/containerd")

    @property
    def cgroup_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.name,)  # --cgroup-parent

    def argv(self) -> list[str]:
        nofile = min(NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        return ["dockerd", "--data-root", os.path.join(self.data_dir, "data"),
                "--exec-root", os.path.join(self.run_dir, "x"), "-H", self.endpoint,
                "--pidfile", os.path.join(self.run_dir, "dockerd.pid"),
                "--cgroup-parent", self.name,
                "--default-ulimit", f"nofile={nofile}:{nofile}",
                "--default-ulimit", f"nproc={NPROC}:{NPROC}"]


class PodmanService(ContainerEngine):
    """``podman system service`` (rootful) on its own storage, with runc (crun refuses hybrid
    cgroup hosts) and default ulimits under this host's hard limits, via a containers.conf."""

    kind = "podman"
    stop_grace = 5.0
    host_paths = ("/var/lib/containers", "/run/containers", "/run/libpod")
    cgroup_names = ("libpod_parent",)

    def env(self) -> dict[str, str]:
        conf = os.path.join(self.data_dir, "containers.conf")
        nofile = min(NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        with open(conf, "w", encoding="utf-8") as handle:
            handle.write(
                "[containers]\n"
                f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={NPROC}:{NPROC}"]\n'
                "[engine]\n"
                'runtime = "runc"\n'
                'cgroup_manager = "cgroupfs"\n'
                'events_logger = "file"\n'
                f'tmp_dir = "{os.path.join(self.run_dir, "tmp")}"\n')
        return {**super().env(), "CONTAINERS_CONF": conf}

    def argv(self) -> list[str]:
        return ["podman", "--root", os.path.join(self.data_dir, "storage"),
                "--runroot", os.path.join(self.run_dir, "r"),
                "--cgroup-manager", "cgroupfs", "--runtime", "runc",
                "system", "service", "--time", "0", self.endpoint]


def engines_for_session(kind: str) -> Iterator[ContainerEngine]:
    """Start one engine of ``kind`` for a test session; stop it afterwards."""
    engine: ContainerEngine = DockerEngine() if kind == "docker" else PodmanService()
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
