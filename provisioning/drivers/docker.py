"""The ``docker:`` driver: local machines on Docker or Podman, through the Docker Engine API.

``docker:`` is the local default socket (``docker:unix:///var/run/docker.sock``);
``docker:unix:///run/podman/podman.sock`` reaches Podman through its Docker-compatible API;
``docker:tcp://HOST:2376`` a remote engine (client certificates in the driver option ``tls``).
Everything goes through the Docker SDK for Python (``pip install 'provisioning[docker]'``),
never the ``docker`` command.

Each machine is a container running systemd as PID 1 and OpenSSH, made from ``image``
(``debian:SUITE`` by default: built locally from a debootstrapped root when no registry answers).
Its ed25519 host key is generated here and written into the container before its first start,
so it is pinned from what we wrote. SSH is published on loopback (a random port, found again at
every start), so it works the same on Linux, Docker Desktop and rootless Podman. Containers carry
labels (machine name, store id, driver URL) and a name unique per store and machine: a crashed
run's container is adopted, two racing runs end with one.

Fault points (``provisioning.faults``): ``after_create``, ``before_save``, ``during_ready``,
``during_destroy`` (all placed by the base class, around these hooks).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from provisioning.driver import Capabilities, Driver
from provisioning.driver.local_features import LOCAL_OPTION_KEYS
from provisioning.driver.options import OptionField, raise_problems
from provisioning.drivers.docker_engine import container as containers
from provisioning.drivers.docker_engine import image as images
from provisioning.drivers.docker_engine.client import (
    PROVIDER,
    canonical_endpoint,
    endpoint_of,
    engine_errors,
    is_conflict,
    open_client,
)
from provisioning.drivers.docker_engine.exec_transport import DockerExecTransport
from provisioning.drivers.docker_engine.importing import DockerImports
from provisioning.drivers.docker_engine.snapshots import SNAPSHOT_REPOSITORY, DockerSnapshots
from provisioning.drivers.login_options import LoginOptions, login_options
from provisioning.drivers.nspawn_host.netns import socket_in_netns
from provisioning.errors import ConnectError, MachineNotFound, ProviderError
from provisioning.inputs.records import record
from provisioning.keys import ensure_private_key
from provisioning.machine.unix import UnixMachine
from provisioning.transports.ssh import SSHTransport

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.keys import PrivateKey

__all__ = ["DockerDriver", "DEFAULT_IMAGE"]

DEFAULT_IMAGE = "debian:bookworm"
DEFAULT_KEY_NAME = "docker"
DEFAULT_IMAGE_CACHE = "/var/cache/provisioning/images"


@record(frozen=True)
class _Options(LoginOptions):
    image: str = DEFAULT_IMAGE
    mask_units: bool = True
    init: str = "systemd"


class DockerDriver(DockerImports, DockerSnapshots, Driver):
    scheme = "docker"
    extra = "docker"
    capabilities = Capabilities(connectable=True, stoppable=True, cross_process=True,
                                crash_safe=True, detects_lost=True, crash_safe_destroy=True,
                                snapshots=True, imports=True,
                                mounts_folders=True, forwards_ports=True)
    driver_option_fields = (
        OptionField("tls", type="dict",
                    help="for tcp:// engines: ca_cert, client_cert, client_key (paths), verify"),
        OptionField("publish_address", default="127.0.0.1",
                    help="host address SSH is published on (loopback by default)"),
        OptionField("ssh_host", help="address to reach published ports at (default: the "
                                     "publish address; the engine's host for tcp:// URLs)"),
        OptionField("netns", help="network namespace (name or /run/netns path) whose loopback "
                                  "the engine publishes on: for an engine started inside one"),
        OptionField("image_cache", help="where the debootstrapped Debian root is cached (shared "
                                        "with nspawn:; default $PROVISIONING_NSPAWN_IMAGE_CACHE "
                                        f"or {DEFAULT_IMAGE_CACHE})"),
        OptionField("mirror", help="Debian mirror for the local image build"),
        OptionField("pull", type="bool", default=True,
                    help="try the registry's debian:SUITE before building it locally"),
        OptionField("keys_dir", help="where generated login keys are kept (default "
                                     ".provisioning/keys beside the cluster file)"),
        OptionField("ready_timeout", type="float", default=120.0,
                    help="seconds ready waits for a machine to accept SSH"),
        OptionField("stop_timeout", type="float", default=20.0,
                    help="seconds stop waits for a clean poweroff before killing"),
    )
    machine_option_fields = (
        OptionField("image", default=DEFAULT_IMAGE,
                    help="debian:SUITE (systemd and sshd added), or an image with /sbin/init "
                         "(systemd) and openssh-server"),
        OptionField("hostname", help="the machine's hostname (default: from its name)"),
        OptionField("key_name", default=DEFAULT_KEY_NAME,
                    help="private key authorized for root (generated in keys_dir if absent)"),
        OptionField("transport", type="dict", default={},
                    help="username, sudo, connect_timeout, command_timeout, transfer_timeout"),
        OptionField("ready_timeout", type="float", help="overrides the driver option"),
        OptionField("stop_timeout", type="float", help="overrides the driver option"),
        OptionField("mask_units", type="bool", default=True,
                    help="mask maintenance timers and gettys for a faster boot"),
        OptionField("init", default="systemd", choices=("systemd", "process"),
                    help="systemd: systemd as PID 1, reached over SSH; process: any image, kept "
                         "alive by a shell, reached through the engine (transport kind docker)"),
    )

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def canonicalize_url(cls, url: str, config) -> str:
        rest = url.split(":", 1)[1] if ":" in url else ""
        return "docker:" + canonical_endpoint(rest)

    def __init__(self, driver_url: str, config) -> None:
        super().__init__(driver_url, config)
        self.endpoint = endpoint_of(driver_url)
        self.image_cache = (self.driver_options.get("image_cache")
                            or os.environ.get("PROVISIONING_NSPAWN_IMAGE_CACHE")
                            or DEFAULT_IMAGE_CACHE)
        self.keys_dir = (self.driver_options.get("keys_dir")
                         or os.path.join(config.base_dir, ".provisioning", "keys"))
        netns = self.driver_options.get("netns")
        self.netns = (netns if not netns or "/" in netns else f"/run/netns/{netns}")
        self.publish_address = str(self.driver_options.get("publish_address") or "127.0.0.1")
        remote = self.endpoint.startswith(("tcp://", "ssh://"))
        engine_host = self.endpoint.split("://", 1)[1].rsplit(":", 1)[0].split("@")[-1] \
            if remote else None
        self.ssh_host: str = str(self.driver_options.get("ssh_host")
                                 or (engine_host if remote and self.publish_address
                                     in ("0.0.0.0", "::") else self.publish_address))
        self._client: Any = None
        self._facts: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._keys: dict[str, "PrivateKey"] = {}

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                self._client = open_client(self.endpoint, self.driver_options.get("tls"))
            return self._client

    def _engine_facts(self) -> dict[str, Any]:
        """Podman or Docker; whether systemd needs the cgroup v1 name=systemd hierarchy."""
        if self._facts is None:
            with engine_errors(f"asking the engine at {self.endpoint} what it is"):
                version = self.client.version()
                info = self.client.info()
            names = " ".join(c.get("Name", "") for c in version.get("Components") or [])
            local = self.endpoint.startswith("unix://")
            self._facts = {
                "podman": "podman" in names.lower(),
                "systemd_cgroup_mount": (local and str(info.get("CgroupVersion", "1")) == "1"
                                         and os.path.isdir(containers.CGROUP_V1_SYSTEMD)),
            }
        return self._facts

    # -- helpers -------------------------------------------------------------------------------
    def _options(self, machine_options: Mapping[str, Any], name: str) -> _Options:
        raise_problems(self.validate_machine_options(machine_options,
                                                     where=f"machines.{name}.machine_options"))
        return _Options(
            image=machine_options.get("image") or DEFAULT_IMAGE,
            mask_units=bool(machine_options.get("mask_units", True)),
            init=str(machine_options.get("init") or "systemd"),
            **login_options(machine_options, self.driver_options, default_key=DEFAULT_KEY_NAME,
                            ready_timeout=120.0, stop_timeout=20.0))

    def _key(self, name: str) -> "PrivateKey":
        with self._lock:
            if name not in self._keys:
                os.makedirs(self.keys_dir, mode=0o700, exist_ok=True)
                self._keys[name] = ensure_private_key(self.config, name, self.keys_dir)
            return self._keys[name]

    def _get(self, spec) -> Any:
        """The machine's container, or None when it is gone."""
        import docker.errors

        ident = spec.reference.get("container_id")
        if not ident:
            return None
        with engine_errors(f"looking up container {ident[:12]}", machine=spec.name):
            try:
                return self.client.containers.get(ident)
            except docker.errors.NotFound:
                return None

    def find_containers(self, name: str, store_id: str | None = None) -> list[Any]:
        """Every container this engine holds for machine ``name`` (of one store if given):
        labelled for it when made, or named for it (``converge import`` renames a container:
        labels cannot change)."""
        wanted = [f"{containers.LABEL_NAME}={name}", f"{containers.LABEL_URL}={self.driver_url}"]
        if store_id is not None:
            wanted.append(f"{containers.LABEL_STORE}={store_id}")
        with engine_errors(f"listing containers of {name}"):
            found = {c.id: c for c in self.client.containers.list(all=True,
                                                                  filters={"label": wanted})}
            named = self.client.containers.list(
                all=True, filters={"name": containers.name_prefix(name)})
        for candidate in named:
            if containers.named_for(candidate.name, name, store_id):
                found.setdefault(candidate.id, candidate)
        return list(found.values())

    def _hostname(self, spec, opts: _Options) -> str:
        return opts.hostname or containers.hostname_for(spec.name)

    def _create_kwargs(self, spec, opts: _Options, machine_options, image_ref: str,
                       name: str) -> dict[str, Any]:
        facts = self._engine_facts()
        return containers.create_kwargs(
            name=name, image=image_ref, hostname=self._hostname(spec, opts),
            machine_labels=containers.labels(spec.name, spec.store_id, self.driver_url),
            machine_options=machine_options, publish_address=self.publish_address,
            systemd_cgroup_mount=facts["systemd_cgroup_mount"], is_podman=facts["podman"],
            init=opts.init)

    # -- allocate and ready: the base class's, through these hooks -----------------------------
    resource_kind = "container"

    def resource_label(self, reference: Mapping[str, Any]) -> str:
        return f"container {reference.get('container_name')}"

    def resource_state(self, machine_spec) -> str:
        found = self._get(machine_spec) if machine_spec.reference else None
        if found is None:
            return "missing"
        return "running" if found.status == "running" else "stopped"

    def allocate_machine(self, action_handler, machine_spec, machine_options) -> None:
        self._options(machine_options, machine_spec.name)  # bad options fail before anything
        super().allocate_machine(action_handler, machine_spec, machine_options)

    def compare_with_wish(self, action_handler, machine_spec, machine_options) -> None:
        image = self._options(machine_options, machine_spec.name).image
        if machine_spec.reference.get("image") != image:
            action_handler.report_progress(
                f"container {machine_spec.reference.get('container_name')} runs image "
                f"{machine_spec.reference.get('image')}, wished {image}: a container cannot "
                "change its image; destroy and re-create the machine")

    def describe_create(self, machine_spec, machine_options) -> str:
        tagged = self.find_containers(machine_spec.name, machine_spec.store_id)
        if tagged:  # adopted inside create_resource: its name is unique per store and machine
            return f"adopt container {tagged[0].name} created for this machine by an earlier run"
        image = self._options(machine_options, machine_spec.name).image
        return f"create container ({image}) on {self.endpoint}"

    def create_resource(self, action_handler, machine_spec, machine_options) -> dict[str, Any]:
        return self._create(action_handler, machine_spec,
                            self._options(machine_options, machine_spec.name), machine_options)

    def start_resource(self, action_handler, machine_spec, machine_options) -> None:
        self._start(self._get(machine_spec), machine_spec)

    def wait_for_machine(self, action_handler, machine_spec, machine_options, *,
                         started=True) -> "UnixMachine":
        opts = self._options(machine_options, machine_spec.name)
        found = self._get(machine_spec)
        if found is None:
            raise MachineNotFound(f"container {machine_spec.reference.get('container_name')} of "
                                  f"{machine_spec.name!r} is gone from {self.endpoint}; run up "
                                  "to re-create it", machine=machine_spec.name)
        return self._wait(action_handler, machine_spec, opts, found,
                          time.monotonic() + opts.ready_timeout)

    def _create(self, action_handler, spec, opts: _Options, machine_options) -> dict[str, Any]:
        """The container made for this machine: an earlier or racing run's, or a new one."""
        with engine_errors("preparing the image", machine=spec.name):
            image_ref = images.ensure_image(
                self.client, opts.image, image_cache=self.image_cache,
                mirror=self.driver_options.get("mirror"),
                pull=bool(self.driver_options.get("pull", True)),
                report=action_handler.report_progress)
        name = containers.container_name(spec.name, spec.store_id)
        kwargs = self._create_kwargs(spec, opts, machine_options, image_ref, name)
        with engine_errors(f"creating container {name}", machine=spec.name):
            try:
                found = self.client.containers.create(**kwargs)
                adopted = False
            except Exception as exc:
                if not is_conflict(exc):
                    raise
                found = self.client.containers.get(name)  # an earlier or racing run made it
                adopted = True
        labels = found.labels or {}
        if labels.get(containers.LABEL_NAME) != spec.name or \
                labels.get(containers.LABEL_STORE) != (spec.store_id or ""):
            raise ProviderError(f"container {name} exists on {self.endpoint} but was not made "
                                "for this machine and state store; import it (converge import "
                                f"{spec.name} {name}), or remove or rename it",
                                provider=PROVIDER, machine=spec.name)
        key_name = opts.key_name
        with engine_errors(f"writing the machine's files into {name}", machine=spec.name):
            host_key = containers.read_host_key(found) if adopted else None
            if host_key is None and opts.init == "systemd":
                data, host_key = containers.machine_files(
                    hostname=self._hostname(spec, opts),
                    authorized_key=self._key(key_name).public_openssh,
                    mask_units=opts.mask_units)
                found.put_archive("/", data)
        return dict(
            container_id=found.id, container_name=name, image=opts.image, image_ref=image_ref,
            key_name=key_name, host_key=host_key, hostname=self._hostname(spec, opts),
            transport="ssh" if opts.init == "systemd" else "docker",
            endpoint=self.endpoint, state="allocated", address=None, port=None,
            create_options={k: machine_options[k] for k in LOCAL_OPTION_KEYS
                            if k in machine_options})

    def _start(self, found, spec) -> None:
        with engine_errors(f"starting container {found.name}", machine=spec.name):
            found.start()
        spec.reference.update(state="running", started_at=time.time())

    def _wait(self, action_handler, spec, opts: _Options, found, deadline: float) -> "UnixMachine":
        """Until the container publishes SSH and one real login (pinned key) succeeds; for an
        ``init: process`` machine, until the container runs."""
        started = time.monotonic()
        if spec.reference.get("transport") == "docker":
            return self._exec_machine(spec, opts, found, deadline, action_handler)
        delay = 0.05
        published = None
        inspected = 0.0
        while True:
            # ask the engine only until the port is known, then about once a second (to notice
            # a container that died): many machines booting at once must not flood it
            if published is None or time.monotonic() - inspected > 1.0:
                with engine_errors(f"inspecting container {found.name}", machine=spec.name):
                    found.reload()
                inspected = time.monotonic()
                published = containers.published_port(found)
            if found.status not in ("running", "created", "restarting"):
                with engine_errors("reading the container's log", machine=spec.name):
                    tail = found.logs(tail=15).decode(errors="replace")
                raise ProviderError(f"container {found.name} stopped while booting "
                                    f"({found.status}); its console said:\n{tail}",
                                    provider=PROVIDER, machine=spec.name)
            if published is not None and self._sshd_greets(published[1], spec.name):
                machine = self._machine(spec, opts, published, action_handler)
                try:
                    machine.transport.connect(timeout=max(0.5, min(
                        opts.connect_timeout, deadline - time.monotonic())))
                    break
                except ConnectError:
                    machine.disconnect()
            if time.monotonic() > deadline:
                raise ConnectError(
                    f"container {found.name} did not accept SSH within {opts.ready_timeout:g} s; "
                    "see its log (the engine's logs for the container), or raise ready_timeout",
                    host=f"{self.ssh_host}:{published[1] if published else '?'}",
                    machine=spec.name)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.3)
        spec.reference.update(address=self.ssh_host, port=published[1], state="running",
                              proxy_command=self._proxy_command(published[1]))
        action_handler.report_progress(
            f"ready at {self.ssh_host}:{published[1]} after {time.monotonic() - started:.2f} s")
        return machine

    def _sshd_greets(self, port: int, machine: str) -> bool:
        """Whether sshd answers with its banner yet. The engine's port proxy accepts TCP before
        sshd runs, so a bare connect proves nothing (and an SSH handshake would log noise)."""
        try:
            sock = self._socket_factory(self.ssh_host, port, machine)(1.0)
        except ConnectError:
            return False
        try:
            return sock.recv(4) == b"SSH-"
        except OSError:
            return False
        finally:
            sock.close()

    def _proxy_command(self, port: int) -> str | None:
        if not self.netns:
            return None
        import sys

        return (f"{sys.executable} -m provisioning.drivers.nspawn_host.netns "
                f"{os.path.basename(self.netns)} {self.ssh_host} {port}")

    def open_connection(self, spec, host: str, port: int, timeout: float) -> socket.socket:
        """A TCP connection as this host sees the engine's published ports (through the
        engine's network namespace when one is set): healthchecks and forwarded ports."""
        return self._socket_factory(host, port, spec.name)(timeout)

    def _socket_factory(self, host: str, port: int,
                        machine: str | None) -> Callable[[float], socket.socket]:
        netns_path = self.netns

        def connect(timeout: float) -> socket.socket:
            try:
                if netns_path:
                    sock = socket_in_netns(netns_path)
                else:
                    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            except OSError as exc:
                raise ConnectError(f"cannot open a socket in {netns_path}: {exc}",
                                   host=f"{host}:{port}", machine=machine) from exc
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(timeout)
                sock.connect((host, port))
            except OSError as exc:
                sock.close()
                raise ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}",
                                   host=f"{host}:{port}", machine=machine) from exc
            return sock
        return connect

    def _machine(self, spec, opts: _Options, published: tuple[str, int],
                 action_handler=None) -> "UnixMachine":
        ref = spec.reference
        port = published[1]
        transport = SSHTransport(
            self.ssh_host, port, opts.username,
            private_key=self._key(ref.get("key_name") or opts.key_name),
            host_key=ref["host_key"],
            sock_factory=self._socket_factory(self.ssh_host, port, spec.name),
            connect_timeout=opts.connect_timeout, command_timeout=opts.command_timeout,
            transfer_timeout=opts.transfer_timeout, machine=spec.name)
        return UnixMachine(spec.name, transport, spec=spec, options={"sudo": opts.sudo},
                           action_handler=action_handler)

    def _exec_machine(self, spec, opts: _Options, found, deadline: float | None,
                      action_handler=None) -> "UnixMachine":
        """A machine reached through the engine's exec API (transport kind ``docker``)."""
        while deadline is not None:
            with engine_errors(f"inspecting container {found.name}", machine=spec.name):
                found.reload()
            if found.status == "running":
                break
            if found.status in ("exited", "dead") or time.monotonic() > deadline:
                with engine_errors("reading the container's log", machine=spec.name):
                    tail = found.logs(tail=15).decode(errors="replace")
                state = found.attrs.get("State") or {}
                raise ProviderError(f"container {found.name} is {found.status} (exit "
                                    f"{state.get('ExitCode')}), not running; its log said:\n"
                                    f"{tail}", provider=PROVIDER, machine=spec.name)
            time.sleep(0.05)
        spec.reference.update(state="running", address=None, port=None)
        transport = DockerExecTransport(self.client, found.id, machine=spec.name,
                                        command_timeout=opts.command_timeout)
        return UnixMachine(spec.name, transport, spec=spec, options={"sudo": False},
                           action_handler=action_handler)

    def connect_to_machine(self, machine_spec, machine_options) -> "UnixMachine":
        opts = self._options(machine_options, machine_spec.name)
        found = self._get(machine_spec)
        if found is None:
            raise MachineNotFound(f"machine {machine_spec.name!r} has no container on "
                                  f"{self.endpoint}; run up to create it",
                                  machine=machine_spec.name)
        if machine_spec.reference.get("transport") == "docker":
            if found.status != "running":
                raise ProviderError(f"machine {machine_spec.name!r} is not running; ready it "
                                    "first (converge up)", provider=PROVIDER,
                                    machine=machine_spec.name)
            return self._exec_machine(machine_spec, opts, found, None)
        published = containers.published_port(found) if found.status == "running" else None
        if published is None:
            raise ProviderError(f"machine {machine_spec.name!r} is not running; ready it first "
                                "(converge up)", provider=PROVIDER, machine=machine_spec.name)
        return self._machine(machine_spec, opts, published)

    # -- stop and destroy ----------------------------------------------------------------------
    def stop_machine(self, action_handler, machine_spec, machine_options) -> None:
        opts = self._options(machine_options, machine_spec.name)
        found = self._get(machine_spec)
        if found is None or found.status not in ("running", "restarting", "paused"):
            action_handler.report_progress("machine is not running: nothing to stop")
            return

        def do_stop() -> None:
            with engine_errors(f"stopping container {found.name}", machine=machine_spec.name):
                found.stop(timeout=int(opts.stop_timeout))
            machine_spec.reference.update(state="stopped", port=None)
        action_handler.perform_action(
            f"stop container {found.name} (poweroff, kill after {opts.stop_timeout:g} s)", do_stop)

    # -- destroy: the base class's destroy_machine, through these hooks -------------------------
    def describe_delete(self, machine_spec) -> str:
        snapshots = self._snapshot_images(machine_spec.reference.get("container_name"))
        return (f"destroy container {machine_spec.reference.get('container_name')}"
                + (f" and {len(snapshots)} snapshot(s)" if snapshots else ""))

    def delete_resource(self, action_handler, machine_spec) -> None:
        import docker.errors

        found = self._get(machine_spec)
        with engine_errors("removing the container", machine=machine_spec.name):
            if found is not None:
                try:
                    found.remove(force=True, v=True)  # anonymous volumes go with it
                except docker.errors.NotFound:
                    pass

    def finish_delete(self, action_handler, machine_spec) -> None:
        """The container's snapshot images (a destroy killed before them leaves them)."""
        import docker.errors

        with engine_errors("removing the container's snapshots", machine=machine_spec.name):
            for snapshot in self._snapshot_images(machine_spec.reference.get("container_name")):
                try:
                    self.client.images.remove(snapshot.id, force=True)
                except docker.errors.NotFound:
                    pass

    def unfinished_delete(self, machine_spec) -> str | None:
        snapshots = self._snapshot_images(machine_spec.reference.get("container_name"))
        return f"{len(snapshots)} snapshot(s)" if snapshots else None

    # -- choices -------------------------------------------------------------------------------
    def list_choices(self) -> dict[str, list[Any]]:
        try:
            listed = self.client.images.list()
        except Exception:
            listed = []
        tags = sorted({t for image in listed for t in (image.tags or [])
                       if not t.split("/")[-1].startswith(SNAPSHOT_REPOSITORY)})
        return {"images": sorted(set(tags) | {DEFAULT_IMAGE}), "locations": ["local"]}
