"""The ``nspawn:`` driver: real Debian machines on this host, booted by systemd-nspawn.

``nspawn:[DIR]`` names a warehouse directory (default ``/var/lib/provisioning/nspawn``; ``~`` and
relative paths canonicalize to absolute ones). Each machine has systemd as PID 1, an overlay root
over a cached Debian image, its own network namespace with an address on a bridge in a hub
namespace the driver owns, an ed25519 host key the driver generates before boot (pinned in the
reference: no trust on first use), and OpenSSH reached over real SSH through a socket opened
inside its namespace. Needs root, ``systemd-container`` and ``debootstrap``.

Fault points (``provisioning.faults``): ``after_create``, ``before_save``, ``during_ready``,
``during_destroy`` (all placed by the base class, around these hooks).
"""

from __future__ import annotations

import functools
import glob
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping

from provisioning.driver import Capabilities, Driver
from provisioning.driver.options import OptionField, raise_problems
from provisioning.drivers.login_options import LoginOptions, login_options
from provisioning.drivers.machine_dirs import MachineDirsHooks
from provisioning.drivers.nspawn_host import host, netns, package_proxy, proc, rootfs
from provisioning.drivers.nspawn_host import image as images
from provisioning.drivers.nspawn_host.imaging import NspawnImages
from provisioning.drivers.nspawn_host.local import NspawnLocalFeatures, binds_and_ports
from provisioning.drivers.nspawn_host.warehouse import DEFAULT_SUBNET, MachineRecord, Warehouse, hostname_for
from provisioning.errors import ConnectError, MachineNotFound, ProviderError
from provisioning.inputs.records import record
from provisioning.keys import ensure_private_key
from provisioning.machine.unix import UnixMachine
from provisioning.parallel import BatchResult, Outcome, Parallelizer
from provisioning.spec import machine_of_resource
from provisioning.transports.ssh import SSHTransport

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.keys import PrivateKey

__all__ = ["NspawnDriver", "DEFAULT_DIR", "IMAGE_CACHE_ENV"]

DEFAULT_DIR = "/var/lib/provisioning/nspawn"
#: where images are cached when the driver option image_cache is not set (shared by test runs)
IMAGE_CACHE_ENV = "PROVISIONING_NSPAWN_IMAGE_CACHE"
DEFAULT_KEY_NAME = "nspawn"
SSH_PORT = 22


@record(frozen=True)
class _Options(LoginOptions):
    image: str = images.DEFAULT_IMAGE
    mask_units: bool = True
    binds: tuple[tuple[str, str], ...] = ()   # synced folders, bind-mounted at boot
    ports: tuple[str, ...] = ()               # ADDRESS:HOST_PORT:GUEST_PORT, relayed


class NspawnDriver(NspawnLocalFeatures, NspawnImages, MachineDirsHooks, Driver):
    scheme = "nspawn"
    warehouse: Warehouse
    capabilities = Capabilities(connectable=True, stoppable=True, cross_process=True,
                                crash_safe=True, detects_lost=True, images=True, snapshots=True,
                                crash_safe_destroy=True, imports=True,
                                mounts_folders=True, forwards_ports=True,
                                create_before_destroy=True)
    driver_option_fields = (
        OptionField("subnet", default=DEFAULT_SUBNET,
                    help="IPv4 network of the machines (exists only inside the driver's "
                         "namespaces); default a /24 inside 198.18.0.0/15"),
        OptionField("image_cache", help=f"directory of built images (default DIR/images, or "
                                        f"${IMAGE_CACHE_ENV})"),
        OptionField("mirror", help="Debian mirror for debootstrap (default: the one apt on this "
                                   "host uses)"),
        OptionField("package_archives", type="list", default=[],
                    help="more archive URLs the package proxy lets machines fetch from, besides "
                         "apt's own sources on this host and mirror"),
        OptionField("ready_timeout", type="float", default=120.0,
                    help="seconds ready waits for a machine to accept SSH"),
        OptionField("stop_timeout", type="float", default=20.0,
                    help="seconds stop waits for a clean poweroff before killing"),
    )
    machine_option_fields = (
        OptionField("image", default=images.DEFAULT_IMAGE,
                    help="debian:SUITE (built with debootstrap), a rootfs directory or a tarball"),
        OptionField("hostname", help="the machine's hostname (default: from its name)"),
        OptionField("key_name", default=DEFAULT_KEY_NAME,
                    help="private key authorized for root (generated under DIR/keys if absent)"),
        OptionField("transport", type="dict", default={},
                    help="username, sudo, connect_timeout, command_timeout, transfer_timeout"),
        OptionField("ready_timeout", type="float", help="overrides the driver option"),
        OptionField("stop_timeout", type="float", help="overrides the driver option"),
        OptionField("mask_units", type="bool", default=True,
                    help="mask maintenance timers and gettys for a faster boot"),
    )

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def canonicalize_url(cls, url: str, config) -> str:
        rest = url.split(":", 1)[1] if ":" in url else ""
        directory = os.path.expanduser(rest) if rest else DEFAULT_DIR
        return "nspawn:" + os.path.normpath(os.path.join(config.base_dir, directory))

    def __init__(self, driver_url: str, config) -> None:
        super().__init__(driver_url, config)
        self.directory = driver_url.split(":", 1)[1]
        self.warehouse = Warehouse(self.directory,
                                   str(self.driver_options.get("subnet") or DEFAULT_SUBNET))
        self.image_cache = (self.driver_options.get("image_cache")
                            or os.environ.get(IMAGE_CACHE_ENV)
                            or os.path.join(self.directory, "images"))
        self._keys: dict[str, "PrivateKey"] = {}
        self._keys_lock = threading.Lock()
        self._archives: tuple[package_proxy.Archive, ...] | None = None

    # -- helpers -------------------------------------------------------------------------------
    def _options(self, machine_options: Mapping[str, Any], name: str) -> _Options:
        raise_problems(self.validate_machine_options(machine_options,
                                                     where=f"machines.{name}.machine_options"))
        binds, ports = binds_and_ports(machine_options)
        return _Options(
            binds=binds, ports=ports,
            image=machine_options.get("image") or images.DEFAULT_IMAGE,
            mask_units=bool(machine_options.get("mask_units", True)),
            **login_options(machine_options, self.driver_options, default_key=DEFAULT_KEY_NAME,
                            ready_timeout=120.0, stop_timeout=20.0))

    def _key(self, name: str) -> "PrivateKey":
        with self._keys_lock:
            if name not in self._keys:
                self._keys[name] = ensure_private_key(self.config, name, self.warehouse.keys_dir)
            return self._keys[name]

    def _record(self, spec) -> MachineRecord | None:
        return self.warehouse.record(spec.reference.get("machine_id"))

    def find_machines(self, name: str) -> list[MachineRecord]:
        """Every machine in this warehouse created for ``name`` (whatever store it came from,
        whatever its generation: ``MachineSpec.resource_name``)."""
        return [r for r in self.warehouse.records() if machine_of_resource(r.name) == name]

    def _reference(self, record: MachineRecord, host_key: str) -> dict[str, Any]:
        directory = self.warehouse.machine_dir(record.id)
        return self.base_reference(
            machine_id=record.id, directory=directory, address=record.address,
            gateway=record.gateway, prefix=record.prefix, hostname=record.hostname,
            netns=record.netns, netns_path=netns.netns_path(record.netns),
            hub_netns=self.warehouse.hub_netns, veth=record.veth, cgroup=record.cgroup,
            image=record.image, lower=record.lower, key_name=record.key_name,
            host_key=host_key, state="allocated", pid=None, start_time=None,
            proxy_command=netns.proxy_command(record.netns, record.address, SSH_PORT))

    def _complete(self, record: MachineRecord, key: "PrivateKey", mask_units: bool) -> str:
        """Namespace and upper layer of a (possibly half-made) machine; returns its host key."""
        netns.create_machine_netns(self.warehouse.hub_netns, record.netns, record.veth,
                                   record.address, record.prefix, record.gateway,
                                   machine=record.name)
        upper = os.path.join(self.warehouse.machine_dir(record.id), "upper")
        self._point_apt_at_proxy(upper)
        return rootfs.prepare_upper(upper, hostname=record.hostname, address=record.address,
                                    authorized_key=key.public_openssh, mask_units=mask_units)

    def _point_apt_at_proxy(self, upper: str) -> None:
        rootfs.write_file(os.path.join(upper, package_proxy.APT_CONF),
                          package_proxy.apt_conf(self.warehouse.gateway))

    def _serve_packages(self, action_handler=None) -> None:
        """The package proxy on the hub gateway, for as long as this process runs."""
        if self._archives is None:
            uris = [s.uri for s in images.apt_sources()]
            uris += [u for u in [self.driver_options.get("mirror"),
                                 *(self.driver_options.get("package_archives") or [])] if u]
            self._archives = package_proxy.archives_from(uris)
        try:
            package_proxy.serve_hub(self.warehouse.hub_netns, self.warehouse.gateway,
                                    self._archives)
        except OSError as exc:  # the machine still works; only apt inside it cannot fetch
            if action_handler is not None:
                action_handler.report_progress(f"package proxy not served on "
                                               f"{self.warehouse.gateway}: {exc}")

    def _ensure_hub(self) -> None:
        """Under the warehouse lock: the hub namespace exists while any machine does."""
        netns.ensure_hub(self.warehouse.hub_netns, self.warehouse.gateway,
                         self.warehouse.subnet.prefixlen)

    # -- allocate: the base class's allocate_machine, through these hooks ------------------------
    machine_noun = "an nspawn machine"

    def allocate_machine(self, action_handler, machine_spec, machine_options) -> None:
        self._options(machine_options, machine_spec.name)  # bad options fail before anything
        super().allocate_machine(action_handler, machine_spec, machine_options)

    def wished_image(self, machine_spec, machine_options) -> str:
        return self._options(machine_options, machine_spec.name).image

    def describe_new(self, machine_spec, machine_options) -> str:
        return f"create machine ({self.wished_image(machine_spec, machine_options)}) in {self.directory}"

    def create_resource(self, action_handler, machine_spec, machine_options) -> dict[str, Any]:
        """A machine an earlier run made for this one is adopted and finished (it may be
        half-made), under the warehouse lock; otherwise a new one is made."""
        opts = self._options(machine_options, machine_spec.name)
        if machine_spec.reference.get("machine_id"):  # leftovers of a lost machine
            self._remove(machine_spec.reference)
        host.preflight(self.directory)
        image = images.ensure_image(images.resolve_image(opts.image, self.image_cache),
                                    mirror=self.driver_options.get("mirror"),
                                    report=action_handler.report_progress)
        key = self._key(opts.key_name)
        spec = machine_spec
        with self.warehouse.locked():
            tagged = self.warehouse.tagged(spec.resource_name, spec.store_id)
            if tagged:
                record = tagged[0]
            else:
                self.warehouse.check_subnet_unchanged()
                record = self.warehouse.new_record(
                    name=spec.resource_name, store_id=spec.store_id,
                    hostname=opts.hostname or hostname_for(spec.name), image=opts.image,
                    lower=image.rootfs, key_name=opts.key_name)
            self._ensure_hub()
        if record.key_name != opts.key_name:  # adopted: keep the key it was made with
            key = self._key(record.key_name)
        return self._reference(record, self._complete(record, key, opts.mask_units))

    # -- ready: the base class's ready_machine, through these hooks ----------------------------
    resource_kind = "machine"

    def resource_label(self, reference: Mapping[str, Any]) -> str:
        return f"machine {reference.get('machine_id')} at {reference.get('address')}"

    def resource_state(self, machine_spec) -> str:
        ref = machine_spec.reference
        if not ref or self._record(machine_spec) is None:
            return "missing"
        return "running" if proc.alive(ref.get("pid"), ref.get("start_time")) else "stopped"

    def start_resource(self, action_handler, machine_spec, machine_options) -> None:
        ref = machine_spec.reference
        if ref.get("state") == "running":
            action_handler.report_progress(
                f"machine process {ref.get('pid')} is gone although it should run (killed "
                "behind our back?); booting it again")
        record = self._record(machine_spec)
        assert record is not None  # resource_state said it exists
        self._boot(action_handler, machine_spec, record,
                   self._options(machine_options, machine_spec.name))

    def wait_for_machine(self, action_handler, machine_spec, machine_options, *,
                         started: bool = True) -> "UnixMachine":
        opts = self._options(machine_options, machine_spec.name)
        return self._wait(action_handler, machine_spec, opts, time.monotonic() + opts.ready_timeout,
                          probe=started)

    def _boot(self, action_handler, spec, record: MachineRecord, opts: _Options) -> None:
        host.preflight(self.directory)
        ref = spec.reference
        if not all(os.path.isdir(lower) for lower in record.lower.split(":")):
            raise ProviderError(f"image {record.image} of machine {record.id} is gone from "
                                f"{record.lower}; rebuild it (up with the same image) or destroy "
                                "the machine", provider=host.PROVIDER, machine=spec.name)
        if not netns.netns_exists(record.netns):
            action_handler.report_progress(f"network namespace {record.netns} is gone; "
                                           "making it again")
            with self.warehouse.locked():
                self._ensure_hub()
            self._complete(record, self._key(record.key_name), opts.mask_units)
        proc.kill_all(None, None, record.cgroup)  # leftovers of a machine killed behind our back
        for message in host.raise_inotify_limit(self._running_count() + 1):
            action_handler.report_progress(message)
        directory = self.warehouse.machine_dir(record.id)
        self._point_apt_at_proxy(os.path.join(directory, "upper"))  # machines made before it
        booted = proc.boot(lower=record.lower, upper=os.path.join(directory, "upper"),
                           work=os.path.join(directory, "work"),
                           merged=os.path.join(directory, "merged"),
                           netns_path=netns.netns_path(record.netns), hostname=record.hostname,
                           cgroup=record.cgroup, log=os.path.join(directory, "console.log"),
                           machine=spec.name, binds=opts.binds)
        ref.update(pid=booted.pid, start_time=booted.start_time, state="running",
                   booted_at=time.time(),
                   sync=[{"from": s, "to": t, "mode": "mount"} for s, t in opts.binds],
                   ports=list(opts.ports))
        spec.save()
        self.start_forwarder(spec, record, opts.ports)

    @staticmethod
    def _running_count() -> int:
        """Machines of every warehouse running on this host (one cgroup each)."""
        for root in proc.CGROUP_HIERARCHIES:
            try:
                return len(os.listdir(os.path.join(root, "provisioning")))
            except OSError:
                continue
        return 0

    def _wait(self, action_handler, spec, opts: _Options, deadline: float, *,
              probe: bool = True) -> "UnixMachine":
        """Until sshd listens inside the machine, then one real SSH login (kept for reuse).
        ``probe`` False: the machine was running already, so log in at once (a plan of many
        unchanged machines saves a TCP probe each)."""
        ref = spec.reference
        log = os.path.join(ref["directory"], "console.log")
        started = time.monotonic()
        delay = 0.01
        while probe and not netns.port_open(ref["netns"], ref["address"], SSH_PORT,
                                  timeout=max(0.05, min(0.5, deadline - time.monotonic()))):
            if not proc.alive(ref.get("pid"), ref.get("start_time")):
                raise ProviderError(
                    f"machine {ref['machine_id']} stopped while booting; its console said:\n"
                    f"{proc.console_tail(log)}", provider=host.PROVIDER, machine=spec.name)
            if time.monotonic() > deadline:
                raise ConnectError(
                    f"machine {ref['machine_id']} did not open SSH port {SSH_PORT} within "
                    f"{opts.ready_timeout:g} s; see its console in {log}, or raise "
                    "ready_timeout", host=f"{ref['address']}:{SSH_PORT}", machine=spec.name)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)
        machine = self._machine(spec, opts, action_handler)
        while True:  # sshd listens: log in once (the connection is kept for the caller)
            try:
                machine.transport.connect(timeout=max(0.5, min(opts.connect_timeout,
                                                               deadline - time.monotonic())))
                break
            except ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        action_handler.report_progress(
            f"ready at {ref['address']} after {time.monotonic() - started:.2f} s")
        return machine

    def _machine(self, spec, opts: _Options, action_handler=None) -> "UnixMachine":
        ref = spec.reference
        if action_handler is None or not action_handler.why_run:  # why-run fetches no package
            self._serve_packages(action_handler)
        transport = SSHTransport(
            ref["address"], SSH_PORT, opts.username,
            private_key=self._key(ref.get("key_name") or opts.key_name),
            host_key=ref["host_key"],
            sock_factory=netns.socket_factory(ref["netns"], ref["address"], SSH_PORT,
                                              machine=spec.name),
            connect_timeout=opts.connect_timeout, command_timeout=opts.command_timeout,
            transfer_timeout=opts.transfer_timeout, machine=spec.name)
        return UnixMachine(spec.name, transport, spec=spec, options={"sudo": opts.sudo},
                           action_handler=action_handler)

    def connect_to_machine(self, machine_spec, machine_options) -> "UnixMachine":
        opts = self._options(machine_options, machine_spec.name)
        if self._record(machine_spec) is None:
            raise MachineNotFound(f"machine {machine_spec.name!r} does not exist in "
                                  f"{self.directory}; run up to create it",
                                  machine=machine_spec.name)
        ref = machine_spec.reference
        if not proc.alive(ref.get("pid"), ref.get("start_time")):
            raise ProviderError(f"machine {machine_spec.name!r} is not running; ready it first "
                                "(converge up)", provider=host.PROVIDER,
                                machine=machine_spec.name)
        return self._machine(machine_spec, opts)

    def open_connection(self, machine_spec, host: str, port: int, timeout: float):
        """A socket to ``host:port`` opened inside the machine's network namespace (the
        cluster runner's network healthchecks use it: the host has no route to machines)."""
        return netns.socket_factory(machine_spec.reference["netns"], host, port,
                                    machine=machine_spec.name)(timeout)

    # -- stop and destroy ----------------------------------------------------------------------
    def stop_machine(self, action_handler, machine_spec, machine_options) -> None:
        opts = self._options(machine_options, machine_spec.name)
        ref = machine_spec.reference
        if not ref.get("machine_id"):
            action_handler.report_progress("not allocated: nothing to stop")
            return
        if not proc.alive(ref.get("pid"), ref.get("start_time")):
            action_handler.report_progress("machine is not running: nothing to stop")
            if ref.get("state") == "running" and not action_handler.why_run:
                self.stop_forwarder(ref)
                proc.kill_all(None, None, ref["cgroup"])
                proc.remove_cgroups(ref["cgroup"])
                ref.update(state="stopped", pid=None, start_time=None)
            return

        def do_stop() -> None:
            self.stop_forwarder(ref)
            clean = proc.stop(ref.get("pid"), ref.get("start_time"), ref["cgroup"],
                              timeout=opts.stop_timeout)
            if not clean:
                action_handler.report_progress(f"did not power off within "
                                               f"{opts.stop_timeout:g} s: killed it")
            proc.remove_cgroups(ref["cgroup"])
            ref.update(state="stopped", pid=None, start_time=None)
        action_handler.perform_action(
            f"stop machine {ref['machine_id']} (poweroff, kill after {opts.stop_timeout:g} s)",
            do_stop)

    # -- destroy: the base class's destroy_machine, through these hooks -------------------------
    def delete_resource(self, action_handler, machine_spec) -> None:
        self._take_down(machine_spec.reference)

    def finish_delete(self, action_handler, machine_spec) -> None:
        """Delete the directory the first half renamed away; a machine ``resource_state``
        calls missing (no record) but whose processes or namespace remain is taken down first."""
        ref = machine_spec.reference
        if self._present(ref):
            self._take_down(ref)
        self._purge_retired(ref["machine_id"])

    def unfinished_delete(self, machine_spec) -> str | None:
        ref = machine_spec.reference
        if not ref.get("machine_id"):
            return None
        if self._present(ref):
            return "what is left of it (processes, namespace, files)"
        return "its files" if self._retired(ref["machine_id"]) else None

    def _present(self, ref: Mapping[str, Any]) -> bool:
        return bool(os.path.isdir(self.warehouse.machine_dir(ref["machine_id"]))
                    or (ref.get("netns") and os.path.lexists(netns.netns_path(ref["netns"])))
                    or proc.alive(ref.get("pid"), ref.get("start_time"))
                    or (ref.get("cgroup") and any(os.path.isdir(d)
                                                  for d in proc.cgroup_dirs(ref["cgroup"]))))

    def _remove(self, ref: Mapping[str, Any]) -> None:
        """Everything of one machine, whatever is left of it (the leftovers of a lost one)."""
        if ref.get("machine_id"):
            self._take_down(ref)
            self._purge_retired(ref["machine_id"])

    def _take_down(self, ref: Mapping[str, Any]) -> None:
        """Processes, cgroups, namespace, veth, a leaked mount; its directory renamed away
        (``_purge_retired`` deletes it); the hub too when no machine remains."""
        machine_id = ref.get("machine_id")
        if not machine_id:
            return
        record = self.warehouse.record(machine_id)
        cgroup = ref.get("cgroup") or (record.cgroup if record else
                                       self.warehouse.cgroup_name(machine_id))
        name = ref.get("netns") or self.warehouse.netns_name(machine_id)
        veth = ref.get("veth") or f"v{machine_id}"
        self.stop_forwarder(ref)
        proc.kill_all(ref.get("pid"), ref.get("start_time"), cgroup)
        proc.remove_cgroups(cgroup)
        netns.delete_machine_netns(self.warehouse.hub_netns, name, veth)
        merged = os.path.join(self.warehouse.machine_dir(machine_id), "merged")
        if _is_mountpoint(merged):
            host.run(["umount", "-l", merged], what="unmounting a leaked overlay")
        with self.warehouse.locked():
            self.warehouse.retire_dir(machine_id)
            if not self.warehouse.records():
                package_proxy.stop_hub(self.warehouse.hub_netns)
                netns.delete_hub(self.warehouse.hub_netns)

    def _retired(self, machine_id: str) -> list[str]:
        return glob.glob(os.path.join(self.warehouse.machines_dir, f".removing-{machine_id}-*"))

    def _purge_retired(self, machine_id: str) -> None:
        """Delete the directories a destroy of this machine renamed away (tagged
        ``.removing-ID-*``: never another machine's), also those a killed one left."""
        for stale in self._retired(machine_id):
            self.warehouse.purge(stale)

    # -- batches -------------------------------------------------------------------------------
    def ready_machines(self, action_handler, specs_and_options,
                       parallelizer: Parallelizer | None = None) -> BatchResult:
        """Boot every machine first (each boot returns at once), then wait for all in parallel:
        machines boot side by side however small the parallelizer."""
        results = BatchResult((spec.name, Outcome(spec.name)) for spec, _ in specs_and_options)
        waiting = []
        for spec, options in specs_and_options:
            handler = action_handler.for_machine(spec.name)
            try:
                seen = self.start_if_stopped(handler, spec, options)
                if seen is not None:
                    waiting.append((spec, options, handler, seen == "started"))
            except Exception as exc:  # this machine's outcome; the others go on
                results[spec.name].error = exc
        parallelizer = parallelizer or Parallelizer(max(1, len(waiting)))
        waited = parallelizer.run(
            (spec.name, functools.partial(self.wait_once_started, handler, spec, options,
                                          started=started))
            for spec, options, handler, started in waiting)
        results.update(waited)
        return results

    # -- import --------------------------------------------------------------------------------
    def import_machine(self, action_handler, machine_spec, machine_options, resource_id):
        """Adopt machine ``resource_id`` of this warehouse (its id: the directory name under
        DIR/machines; or the name it was made for, when one machine has it). Its host key is
        the one this driver generated in its files (pinned, never learnt over the network);
        a running machine is recorded with its systemd-nspawn process, so it is not booted
        again."""
        record = self._importable(resource_id, machine_spec.name)
        upper = os.path.join(self.warehouse.machine_dir(record.id), "upper")
        host_key = rootfs.host_public_key(upper)
        if host_key is None:
            raise ProviderError(f"machine {record.id} has no host key this driver generated (it "
                                "never finished being made); destroy it rather than import it",
                                provider=host.PROVIDER, machine=machine_spec.name)
        pid = self._running_pid(record)

        def adopt() -> None:
            with self.warehouse.locked():
                fresh = self.warehouse.retag(record, machine_spec.resource_name,
                                             machine_spec.store_id)
            reference = self._reference(fresh, host_key)
            if pid is not None:
                reference.update(pid=pid, start_time=proc.start_time(pid), state="running")
            machine_spec.reference = reference
        action_handler.perform_action(
            f"import machine {record.id} at {record.address} ({record.image}, "
            f"{'running' if pid is not None else 'stopped'})", adopt)

    @staticmethod
    def _running_pid(record: MachineRecord) -> int | None:
        """The systemd-nspawn process of a running machine (in its cgroup), else None."""
        for pid in sorted(proc.cgroup_pids(record.cgroup)):
            try:
                with open(f"/proc/{pid}/comm", encoding="ascii") as handle:
                    if handle.read().strip() == "systemd-nspawn":
                        return pid
            except OSError:
                continue
        return None

    def resource_id(self, reference):
        return reference.get("machine_id")

    def resolve_resource_id(self, resource_id: str, machine: str) -> str:
        return self._importable(resource_id, machine).id  # the name it was made for: its id

    def _importable(self, resource_id: str, machine: str) -> MachineRecord:
        """The machine ``resource_id`` names (its id, or the one name it was made for)."""
        record = self.warehouse.record(resource_id)
        if record is None:
            named = self.find_machines(resource_id)
            record = named[0] if len(named) == 1 else None
        if record is None:
            known = ", ".join(f"{r.id} ({r.name})" for r in self.warehouse.records()[:5])
            raise MachineNotFound(f"no nspawn machine {resource_id!r} in {self.directory} "
                                  f"(machines: {known or 'none'})", machine=machine)
        return record

    # -- status and choices --------------------------------------------------------------------
    def list_choices(self) -> dict[str, list[Any]]:
        built = []
        try:
            for entry in sorted(os.listdir(self.image_cache)):
                if entry.startswith("debian-") and os.path.exists(
                        os.path.join(self.image_cache, entry, ".complete")):
                    built.append("debian:" + entry[len("debian-"):])
        except OSError:
            pass
        known = images.debootstrap_suites() or ()
        releases = {f"debian:{r}" for r in images.DEBIAN_RELEASES if r in known}
        return {"images": sorted(set(built) | releases | {images.DEFAULT_IMAGE}),
                "locations": ["local"]}


def _is_mountpoint(path: str) -> bool:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            return any(line.split()[4] == path for line in handle)
    except (OSError, IndexError):
        return False
