"""The ``libvirt:`` driver: real virtual machines through libvirt (libvirt-python).

``libvirt:URI`` names a libvirt connection; ``libvirt:qemu:///system`` is canonical and
``libvirt:`` means the default URI (``$LIBVIRT_DEFAULT_URI``, else ``qemu:///system``). Each
machine is a domain booted directly from the kernel of a base disk built here from Debian
packages (``libvirt_host.image``), on its own qcow2 overlay, with a seed disk carrying the host
key we generated (pinned in the reference before the first boot) and the authorized key.
Networking is QEMU's user-mode NAT with SSH forwarded to a loopback port of the network
namespace qemu runs in (the driver opens its sockets there), so no host interface or firewall
is touched. ``accel: auto`` picks KVM only where it can run stock kernels, else TCG. Fault
points (``provisioning.faults``): ``after_create``, ``before_save``, ``during_ready``,
``during_destroy`` (all placed by the base class, around these hooks).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from provisioning.driver import Capabilities, Driver
from provisioning.driver.local_features import Snapshot, forwarded_ports, snapshot_name
from provisioning.driver.options import OptionField, raise_problems
from provisioning.drivers.libvirt_host import accel as accels
from provisioning.drivers.libvirt_host import image as images
from provisioning.drivers.libvirt_host import netns, seed, snapshots
from provisioning.drivers.libvirt_host.conn import (
    is_alive,
    is_local_uri,
    libvirt_module,
    mapped,
    open_connection,
)
from provisioning.drivers.libvirt_host.domain import DomainSpec, Forward, domain_xml
from provisioning.drivers.libvirt_host.host import PROVIDER, run
from provisioning.drivers.libvirt_host.importing import LibvirtImports
from provisioning.drivers.libvirt_host.warehouse import MachineRecord, Warehouse, hostname_for
from provisioning.drivers.login_options import LoginOptions, login_options
from provisioning.drivers.machine_dirs import MachineDirsHooks
from provisioning.errors import ConnectError, InvalidDriverURL, MachineNotFound, ProviderError
from provisioning.inputs.records import record
from provisioning.keys import ensure_private_key
from provisioning.machine.unix import UnixMachine
from provisioning.transports.ssh import SSHTransport

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.keys import PrivateKey

__all__ = ["LibvirtDriver", "DEFAULT_DIR", "DEFAULT_URI", "IMAGE_CACHE_ENV"]

DEFAULT_URI = "qemu:///system"
DEFAULT_DIR = "/var/lib/provisioning/libvirt"
#: where base disks are cached when the driver option image_cache is not set
IMAGE_CACHE_ENV = "PROVISIONING_LIBVIRT_IMAGE_CACHE"
DEFAULT_KEY_NAME = "libvirt"
SSH_PORT = 22


@record(frozen=True)
class _Options(LoginOptions):
    image: str = images.DEFAULT_IMAGE
    memory: int = 512
    cpus: int = 1
    accel: str = "auto"
    ports: tuple[Forward, ...] = ()


class LibvirtDriver(LibvirtImports, MachineDirsHooks, Driver):
    scheme = "libvirt"
    warehouse: Warehouse
    extra = "libvirt"
    capabilities = Capabilities(connectable=True, stoppable=True, cross_process=True,
                                crash_safe=True, detects_lost=True, snapshots=True,
                                forwards_ports=True, crash_safe_destroy=True, imports=True)
    driver_option_fields = (
        OptionField("directory", default=DEFAULT_DIR,
                    help="where overlays, seed disks, consoles and keys live"),
        OptionField("image_cache", help=f"directory of built base disks (default DIR/images, "
                                        f"or ${IMAGE_CACHE_ENV})"),
        OptionField("mirror", help="Debian mirror for the base disks (default: the one apt on "
                                   "this host uses)"),
        OptionField("ready_timeout", type="float", default=600.0,
                    help="seconds ready waits for SSH (TCG boots take minutes)"),
        OptionField("stop_timeout", type="float", default=60.0,
                    help="seconds stop waits for an ACPI poweroff before pulling the plug"),
    )
    machine_option_fields = (
        OptionField("image", default=images.DEFAULT_IMAGE,
                    help="debian:SUITE (a base disk built here from Debian packages)"),
        OptionField("memory", type="int", default=512, help="MiB of RAM"),
        OptionField("cpus", type="int", default=1, help="virtual CPUs"),
        OptionField("accel", default="auto", choices=list(accels.ACCEL_CHOICES),
                    help="kvm, tcg (software emulation) or auto (KVM where it can run a stock "
                         "kernel)"),
        OptionField("hostname", help="the machine's hostname (default: from its name)"),
        OptionField("key_name", default=DEFAULT_KEY_NAME,
                    help="private key authorized for root (generated under DIR/keys if absent)"),
        OptionField("transport", type="dict", default={},
                    help="username, sudo, connect_timeout, command_timeout, transfer_timeout"),
        OptionField("ready_timeout", type="float", help="overrides the driver option"),
        OptionField("stop_timeout", type="float", help="overrides the driver option"),
    )

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def canonicalize_url(cls, url: str, config) -> str:
        rest = url.split(":", 1)[1].strip() if ":" in url else ""
        uri = rest or os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI
        scheme, sep, _ = uri.partition("://")
        if not sep or not scheme:
            raise InvalidDriverURL(url, "expected libvirt:URI with a libvirt connection URI, "
                                        "for example libvirt:qemu:///system")
        return f"libvirt:{uri}"

    def __init__(self, driver_url: str, config) -> None:
        super().__init__(driver_url, config)
        self.uri = driver_url.split(":", 1)[1]
        self.local = is_local_uri(self.uri)
        directory = os.path.expanduser(str(self.driver_options.get("directory") or DEFAULT_DIR))
        self.directory = os.path.normpath(os.path.join(config.base_dir, directory))
        self.warehouse = Warehouse(self.directory)
        self.image_cache = (self.driver_options.get("image_cache")
                            or os.environ.get(IMAGE_CACHE_ENV)
                            or os.path.join(self.directory, "images"))
        self._keys: dict[str, "PrivateKey"] = {}
        self._lock = threading.Lock()
        self._conn: Any = None
        self._noticed = False

    # -- helpers -------------------------------------------------------------------------------
    def _options(self, machine_options: Mapping[str, Any], name: str) -> _Options:
        raise_problems(self.validate_machine_options(machine_options,
                                                     where=f"machines.{name}.machine_options"))
        return _Options(
            image=machine_options.get("image") or images.DEFAULT_IMAGE,
            memory=int(machine_options.get("memory") or 512),
            cpus=int(machine_options.get("cpus") or 1),
            accel=str(machine_options.get("accel") or "auto"),
            ports=tuple(Forward(p.host_address, p.host_port, p.guest_port)
                        for p in forwarded_ports(machine_options)),
            **login_options(machine_options, self.driver_options, default_key=DEFAULT_KEY_NAME,
                            ready_timeout=600.0, stop_timeout=60.0))

    def connection(self) -> Any:
        """One libvirt connection per driver (libvirt connections are thread-safe)."""
        with self._lock:
            if self._conn is None or not is_alive(self._conn):
                self._conn = open_connection(self.uri)
            return self._conn

    def _domain(self, record_or_name: "MachineRecord | str", machine: str | None = None) -> Any:
        """The libvirt domain, or None when it is not defined."""
        name = record_or_name if isinstance(record_or_name, str) else record_or_name.domain
        libvirt = libvirt_module()
        try:
            return self.connection().lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            with mapped(f"looking up domain {name}", machine=machine):
                raise

    def _key(self, name: str) -> "PrivateKey":
        with self._lock:
            if name not in self._keys:
                self._keys[name] = ensure_private_key(self.config, name, self.warehouse.keys_dir)
            return self._keys[name]

    def _record(self, spec) -> MachineRecord | None:
        return self.warehouse.record(spec.reference.get("machine_id"))

    def find_machines(self, name: str) -> list[MachineRecord]:
        return [r for r in self.warehouse.records() if r.name == name]  # of any store

    def _accel(self, opts: _Options, report: Callable[[str], None]) -> accels.Accel:
        chosen = accels.choose_accel(opts.accel, local=self.local)
        if chosen.notice and not self._noticed:
            self._noticed = True
            report(chosen.notice)
        return chosen

    def _base(self, image: str, report: Callable[[str], None]) -> images.BaseImage:
        base = images.resolve_base(image, self.image_cache)
        return images.ensure_base(base, rootfs_cache=self.image_cache,
                                  mirror=self.driver_options.get("mirror"), report=report)

    # -- allocate: the base class's allocate_machine, through these hooks ------------------------
    def allocate_machine(self, action_handler, machine_spec, machine_options) -> None:
        opts = self._options(machine_options, machine_spec.name)
        images.resolve_base(opts.image, self.image_cache)  # a bad image fails before any write
        super().allocate_machine(action_handler, machine_spec, machine_options)

    machine_noun = "a libvirt machine"

    def wished_image(self, machine_spec, machine_options) -> str:
        return self._options(machine_options, machine_spec.name).image

    def describe_new(self, machine_spec, machine_options) -> str:
        opts = self._options(machine_options, machine_spec.name)
        return (f"create virtual machine ({opts.image}, {opts.memory} MiB, {opts.cpus} CPU) "
                f"on {self.uri}")

    def create_resource(self, action_handler, machine_spec, machine_options) -> dict[str, Any]:
        """A machine an earlier run made for this one is adopted and finished (it may be
        half-made), under the warehouse lock; otherwise a new one is made."""
        spec, opts = machine_spec, self._options(machine_options, machine_spec.name)
        if spec.reference.get("machine_id"):  # leftovers of a lost machine
            self._remove(spec.reference, spec.name)
        report = action_handler.report_progress
        base = self._base(opts.image, report)
        chosen = self._accel(opts, report)
        key = self._key(opts.key_name)
        with self.warehouse.locked():
            tagged = self.warehouse.tagged(spec.name, spec.store_id)
            record = tagged[0] if tagged else self.warehouse.new_record(
                name=spec.name, store_id=spec.store_id,
                hostname=opts.hostname or hostname_for(spec.name), image=opts.image,
                key_name=opts.key_name)
        if record.key_name != opts.key_name:  # adopted: keep the key it was made with
            key = self._key(record.key_name)
        host_key = self._complete(record, base, key, opts, chosen, spec)
        return dict(machine_id=record.id, domain=record.domain, directory=self.directory,
                    image=record.image, hostname=record.hostname, key_name=record.key_name,
                    host_key=host_key, address="127.0.0.1", ssh_port=None, accel=chosen.kind,
                    memory=opts.memory, cpus=opts.cpus, state="allocated")

    def _complete(self, record: MachineRecord, base: images.BaseImage, key: "PrivateKey",
                  opts: _Options, chosen: accels.Accel, spec) -> str:
        """Host key, overlay, seed disk and domain of a (possibly half-made) machine; each part
        is made only if missing, so a re-run after a crash finishes the job. Returns the host
        public key."""
        w = self.warehouse
        key_path, pub_path = w.path(record.id, "host_key"), w.path(record.id, "host_key.pub")
        if not os.path.exists(pub_path):
            private, public = seed.generate_host_key(record.hostname)
            seed.write_private(key_path, private)
            seed.write_private(pub_path, (public + "\n").encode(), mode=0o644)
        with open(pub_path, encoding="ascii") as handle:
            public = " ".join(handle.read().split()[:2])
        disk = w.path(record.id, "disk.qcow2")
        if not os.path.exists(disk):
            tmp = disk + ".tmp"
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base.disk, "-F", "qcow2", tmp],
                what="creating the machine's overlay", machine=spec.name)
            os.replace(tmp, disk)
        seed_path = w.path(record.id, "seed.img")
        if not os.path.exists(seed_path):
            with open(key_path, "rb") as handle:
                private_bytes = handle.read()
            seed.write_seed(seed_path, host_key=private_bytes, host_public=public,
                            authorized_key=key.public_openssh, hostname=record.hostname)
        if self._domain(record, spec.name) is None:
            self._define(record, base, opts.memory, opts.cpus, chosen.domain_type,
                         self._forwards(opts), spec.name)
        return public

    def _forwards(self, opts: _Options) -> tuple[Forward, ...]:
        """SSH on a loopback port free now, then the machine's own forwarded ports."""
        return (Forward("127.0.0.1", netns.free_port(self._netns_path(None)), SSH_PORT),
                *opts.ports)

    def _define(self, record: MachineRecord, base: images.BaseImage, memory: int, cpus: int,
                domain_type: str, forwards: tuple[Forward, ...], machine: str) -> None:
        w = self.warehouse
        existing = self._domain(record, machine)
        xml = domain_xml(DomainSpec(
            name=record.domain, memory_mib=memory, cpus=cpus, domain_type=domain_type,
            disk=w.path(record.id, "disk.qcow2"), seed=w.path(record.id, "seed.img"),
            kernel=base.kernel, initrd=base.initrd, console=w.path(record.id, "console.log"),
            forwards=forwards,
            tags={"name": record.name, "store": record.store_id or "", "id": record.id,
                  "directory": self.directory},
            uuid=existing.UUIDString() if existing is not None else None))
        with mapped(f"defining domain {record.domain}", machine=machine):
            self.connection().defineXML(xml)

    # -- networking ----------------------------------------------------------------------------
    def _netns_path(self, domain: str | None) -> str | None:
        """The network namespace qemu runs in (local URIs), when it is not ours."""
        if not self.local:
            return None
        return netns.namespace_of(domain)

    def socket_factory(self, spec, port: int) -> Callable[[float], socket.socket]:
        """Connect to a forwarded port of the machine (127.0.0.1:port where qemu runs)."""
        domain = spec.reference.get("domain")

        def connect(timeout: float) -> socket.socket:
            return netns.connect("127.0.0.1", port, timeout, self._netns_path(domain),
                                 machine=spec.name)
        return connect

    # -- ready: the base class's ready_machine, through these hooks ----------------------------
    resource_kind = "virtual machine"

    def resource_label(self, reference: Mapping[str, Any]) -> str:
        return f"domain {reference.get('domain')}"

    def resource_state(self, machine_spec) -> str:
        """A machine whose domain is gone (undefined behind our back) is only 'stopped': its
        disks remain and starting it defines the domain again."""
        record = self._record(machine_spec) if machine_spec.reference else None
        if record is None:
            return "missing"
        domain = self._domain(record, machine_spec.name)
        return "running" if domain is not None and domain.isActive() else "stopped"

    def start_resource(self, action_handler, machine_spec, machine_options) -> None:
        record = self._record(machine_spec)
        assert record is not None  # resource_state said it exists
        if machine_spec.reference.get("state") == "running":
            action_handler.report_progress(f"domain {record.domain} is not running although it "
                                           "should (stopped behind our back?); starting it")
        self._boot(action_handler, machine_spec, record,
                   self._options(machine_options, machine_spec.name))

    def wait_for_machine(self, action_handler, machine_spec, machine_options, *,
                         started=True) -> "UnixMachine":
        opts = self._options(machine_options, machine_spec.name)
        wanted = [f"{f.bind}:{f.host_port}:{f.guest_port}" for f in opts.ports]
        if wanted != list(machine_spec.reference.get("ports") or []):
            action_handler.report_progress(
                f"forwarded ports {wanted} differ from the running machine's "
                f"{machine_spec.reference.get('ports') or []}: they apply at its next start "
                "(converge stop, then up)")
        return self._wait(action_handler, machine_spec, opts, time.monotonic() + opts.ready_timeout)

    def _boot(self, action_handler, spec, record: MachineRecord, opts: _Options) -> None:
        """Define the domain again with a free SSH port (the last one may be taken by now) and
        start it; a port taken between the choice and qemu's bind is retried with another."""
        ref = spec.reference
        base = self._base(record.image, action_handler.report_progress)
        chosen = self._accel(opts, action_handler.report_progress)
        for attempt in range(3):
            forwards = self._forwards(opts)
            self._define(record, base, int(ref.get("memory") or opts.memory),
                         int(ref.get("cpus") or opts.cpus), chosen.domain_type, forwards,
                         spec.name)
            domain = self._domain(record, spec.name)
            libvirt = libvirt_module()
            try:
                domain.create()
                break
            except libvirt.libvirtError as exc:
                taken = "hostfwd" in str(exc) or "host forwarding" in str(exc)
                if not taken or attempt == 2:
                    with mapped(f"starting domain {record.domain}", machine=spec.name):
                        raise
        ref.update(ssh_port=forwards[0].host_port, state="running", accel=chosen.kind,
                   ports=[f"{f.bind}:{f.host_port}:{f.guest_port}" for f in opts.ports],
                   booted_at=time.time())
        spec.save()

    def _wait(self, action_handler, spec, opts: _Options, deadline: float) -> "UnixMachine":
        """Until sshd answers on the forwarded port, then one real SSH login (kept)."""
        ref = spec.reference
        started = time.monotonic()
        factory = self.socket_factory(spec, int(ref["ssh_port"]))
        delay = 0.2
        while not netns.ssh_banner(factory):
            domain = self._domain(ref["domain"], spec.name)
            if domain is None or not domain.isActive():
                raise ProviderError(
                    f"domain {ref['domain']} stopped while booting; its console said:\n"
                    f"{self.warehouse.console_tail(ref['machine_id'])}", provider=PROVIDER, machine=spec.name)
            console = self.warehouse.console_tail(ref['machine_id'])
            if "Kernel panic" in console:
                raise ProviderError(
                    f"the kernel of domain {ref['domain']} panicked while booting; its console "
                    f"said:\n{console}", provider=PROVIDER, machine=spec.name)
            if time.monotonic() > deadline:
                raise ConnectError(
                    f"machine {ref['machine_id']} did not answer SSH within "
                    f"{opts.ready_timeout:g} s; see its console in "
                    f"{self.warehouse.path(ref['machine_id'], 'console.log')}, or raise "
                    "ready_timeout", host=f"127.0.0.1:{ref['ssh_port']}", machine=spec.name)
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        machine = self._machine(spec, opts, action_handler)
        transport: Any = machine.transport  # an SSHTransport: connect once, kept for the caller
        while True:
            try:
                wait = min(max(opts.connect_timeout, 60.0), deadline - time.monotonic())
                transport.connect(timeout=max(1.0, wait))  # a fresh TCG guest logs in slowly
                break
            except ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        action_handler.report_progress(f"ready (SSH on 127.0.0.1:{ref['ssh_port']}) after "
                                       f"{time.monotonic() - started:.1f} s")
        return machine

    def _machine(self, spec, opts: _Options, action_handler=None) -> "UnixMachine":
        ref = spec.reference
        transport = SSHTransport(
            "127.0.0.1", int(ref["ssh_port"]), opts.username,
            private_key=self._key(ref.get("key_name") or opts.key_name),
            host_key=ref["host_key"], sock_factory=self.socket_factory(spec, int(ref["ssh_port"])),
            connect_timeout=opts.connect_timeout, command_timeout=opts.command_timeout,
            transfer_timeout=opts.transfer_timeout, machine=spec.name)
        return UnixMachine(spec.name, transport, spec=spec, options={"sudo": opts.sudo},
                           action_handler=action_handler)

    def connect_to_machine(self, machine_spec, machine_options) -> "UnixMachine":
        opts = self._options(machine_options, machine_spec.name)
        record = self._record(machine_spec)
        if record is None:
            raise MachineNotFound(f"machine {machine_spec.name!r} does not exist in "
                                  f"{self.directory}; run up to create it",
                                  machine=machine_spec.name)
        domain = self._domain(record, machine_spec.name)
        if domain is None or not domain.isActive() or not machine_spec.reference.get("ssh_port"):
            raise ProviderError(f"machine {machine_spec.name!r} is not running; ready it first "
                                "(converge up)", provider=PROVIDER, machine=machine_spec.name)
        return self._machine(machine_spec, opts)

    # -- stop and destroy ----------------------------------------------------------------------
    def stop_machine(self, action_handler, machine_spec, machine_options) -> None:
        opts = self._options(machine_options, machine_spec.name)
        ref = machine_spec.reference
        record = self._record(machine_spec) if ref.get("machine_id") else None
        domain = self._domain(record, machine_spec.name) if record else None
        if domain is None or not domain.isActive():
            action_handler.report_progress("machine is not running: nothing to stop")
            if ref.get("state") == "running" and not action_handler.why_run:
                ref.update(state="stopped", ssh_port=None)
            return

        name = domain.name()

        def do_stop() -> None:
            libvirt = libvirt_module()
            with mapped(f"shutting down domain {name}", machine=machine_spec.name):
                try:
                    domain.shutdown()
                except libvirt.libvirtError:
                    if domain.isActive():
                        raise
            deadline = time.monotonic() + opts.stop_timeout
            while domain.isActive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if domain.isActive():
                action_handler.report_progress(f"did not power off within "
                                               f"{opts.stop_timeout:g} s: pulled the plug")
                with mapped(f"stopping domain {name}", machine=machine_spec.name):
                    if domain.isActive():
                        domain.destroy()
            ref.update(state="stopped", ssh_port=None)
        action_handler.perform_action(
            f"stop domain {name} (ACPI poweroff, pull the plug after "
            f"{opts.stop_timeout:g} s)", do_stop)

    # -- destroy: the base class's destroy_machine, through these hooks -------------------------
    def describe_delete(self, machine_spec) -> str:
        return f"destroy domain {machine_spec.reference.get('domain')} and its disks"

    def delete_resource(self, action_handler, machine_spec) -> None:
        self._undefine(machine_spec.reference, machine_spec.name)

    def finish_delete(self, action_handler, machine_spec) -> None:
        """The machine's files (disks, seed, record); a domain left without them goes first."""
        self._remove(machine_spec.reference, machine_spec.name)

    def unfinished_delete(self, machine_spec) -> str | None:
        ref = machine_spec.reference
        if ref.get("machine_id") and self._present(ref, machine_spec.name):
            return "what is left of it (domain, disks)"
        return None

    def _present(self, ref: Mapping[str, Any], machine: str) -> bool:
        return bool(os.path.isdir(self.warehouse.machine_dir(ref["machine_id"]))
                    or (ref.get("domain") and self._domain(ref["domain"], machine) is not None))

    def _remove(self, ref: Mapping[str, Any], machine: str) -> None:
        """The domain (running or not, with its snapshot metadata) and the machine's files."""
        if ref.get("machine_id"):
            self._undefine(ref, machine)
            self.warehouse.retire(ref["machine_id"])

    def _undefine(self, ref: Mapping[str, Any], machine: str) -> None:
        machine_id = ref.get("machine_id")
        if not machine_id:
            return
        domain = self._domain(ref.get("domain") or self.warehouse.domain_name(machine_id),
                              machine)
        if domain is not None:
            libvirt = libvirt_module()
            with mapped(f"removing domain {ref.get('domain')}", machine=machine):
                if domain.isActive():
                    domain.destroy()
                domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)

    # -- snapshots (libvirt's snapshot API; see libvirt_host.snapshots) -------------------------
    def _existing_domain(self, spec) -> Any:
        record = self._record(spec) if spec.reference else None
        domain = self._domain(record, spec.name) if record else None
        if domain is None:
            raise MachineNotFound(f"machine {spec.name!r} has no domain in {self.uri}; run up "
                                  "to create it", machine=spec.name)
        return domain

    def save_snapshot(self, action_handler, machine_spec, name) -> Snapshot:
        name = snapshot_name(name)
        domain = self._existing_domain(machine_spec)
        what = "disk and memory" if domain.isActive() else "disk"
        action_handler.perform_action(
            f"save snapshot {name} of domain {domain.name()} ({what})",
            lambda: snapshots.create(domain, name, machine=machine_spec.name))
        found = [s for s in self.list_snapshots(machine_spec) if s.name == name]
        return found[0] if found else Snapshot(name, time.time())

    def restore_snapshot(self, action_handler, machine_spec, name) -> None:
        name = snapshot_name(name)
        domain = self._existing_domain(machine_spec)
        snap = snapshots.find(domain, name)
        if snap is None:
            raise MachineNotFound(f"machine {machine_spec.name!r} has no snapshot {name!r}; "
                                  "list them with: converge snapshot list "
                                  f"{machine_spec.name}", machine=machine_spec.name)

        def do_restore() -> None:
            snapshots.revert(domain, snap, machine=machine_spec.name)
            ref = machine_spec.reference
            if domain.isActive():
                ref.update(state="running", ssh_port=snapshots.live_ssh_port(domain))
            else:
                ref.update(state="stopped", ssh_port=None)
        action_handler.perform_action(f"restore snapshot {name} of domain {domain.name()}",
                                      do_restore)

    def list_snapshots(self, machine_spec) -> list[Snapshot]:
        domain = self._existing_domain(machine_spec)
        return [Snapshot(name, created) for name, created, _ in snapshots.listed(domain)]

    def delete_snapshot(self, action_handler, machine_spec, name) -> None:
        name = snapshot_name(name)
        domain = self._existing_domain(machine_spec)
        snap = snapshots.find(domain, name)
        if snap is None:
            action_handler.report_progress(f"no snapshot {name!r}: nothing to delete")
            return

        def do_delete() -> None:
            with mapped(f"deleting snapshot {name}", machine=machine_spec.name):
                snap.delete(0)
        action_handler.perform_action(f"delete snapshot {name} of domain {domain.name()}",
                                      do_delete)

    # -- status and choices --------------------------------------------------------------------
    def machine_state(self, machine_spec) -> str:
        ref = machine_spec.reference
        record = self._record(machine_spec) if ref else None
        if record is None:
            return "missing"
        domain = self._domain(record, machine_spec.name)
        if domain is None:
            return "missing"
        return "running" if domain.isActive() else "stopped"

    def list_choices(self) -> dict[str, list[Any]]:
        built = []
        try:
            for entry in sorted(os.listdir(self.image_cache)):
                prefix = f"qcow2-v{images.LAYOUT}-debian-"
                if entry.startswith(prefix) and os.path.exists(
                        os.path.join(self.image_cache, entry, ".complete")):
                    built.append("debian:" + entry[len(prefix):])
        except OSError:
            pass
        return {"images": sorted(set(built) | {images.DEFAULT_IMAGE}), "locations": [self.uri]}

