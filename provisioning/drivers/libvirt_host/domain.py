"""The libvirt domain XML of one machine.

Direct kernel boot from the base image's kernel and initrd; the machine's qcow2 overlay as
``vda``; its read-only seed disk (``seed.py``); the serial console into a file; user-mode
networking (QEMU's built-in NAT: no host interface, bridge or firewall rule is touched) with SSH
and the machine's forwarded ports bound to loopback ports of the namespace qemu runs in. QEMU
runs as root (``/dev/kvm`` is root-only on Debian, and the files live in a 0700 directory).
The metadata element tags the domain with the machine's name, store and warehouse, so a re-run
can tell whose it is.
"""

from __future__ import annotations

from dataclasses import field
from xml.sax.saxutils import escape, quoteattr

from provisioning.inputs.records import record

__all__ = ["DomainSpec", "domain_xml", "METADATA_NS", "METADATA_PREFIX", "Forward"]

METADATA_NS = "https://provisioning.dev/libvirt/1"
METADATA_PREFIX = "provisioning"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
#: a PCI slot on q35's root bus that libvirt leaves free for our hand-added NIC
NIC_SLOT = "0x0a"


@record(frozen=True)
class Forward:
    """One forwarded TCP port: host ``bind``:``host_port`` to the guest's ``guest_port``."""

    bind: str
    host_port: int
    guest_port: int

    def hostfwd(self) -> str:
        return f"hostfwd=tcp:{self.bind}:{self.host_port}-:{self.guest_port}"


@record(frozen=True)
class DomainSpec:
    name: str
    memory_mib: int
    cpus: int
    domain_type: str  # kvm | qemu
    disk: str
    seed: str
    kernel: str
    initrd: str
    console: str
    forwards: tuple[Forward, ...]
    tags: dict[str, str] = field(default_factory=dict)
    #: keep the UUID when defining an existing domain again (libvirt refuses a new one)
    uuid: str | None = None


def domain_xml(spec: DomainSpec) -> str:
    cmdline = "root=/dev/vda rw console=ttyS0 quiet no_timer_check"
    if spec.domain_type == "kvm":
        cpu = ("<cpu mode='host-passthrough'><feature policy='disable' "
               "name='arch-capabilities'/></cpu>")
        tcg = ""
    else:
        # a plain x86-64 model: under TCG, emulating AVX costs more than it gives (and QEMU
        # 7.2's AVX2 fails the kernel's crypto self-tests); the self-tests alone take minutes
        cpu = "<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>"
        tcg = "<tcg><tb-cache unit='MiB'>128</tb-cache></tcg>"
        cmdline += " cryptomgr.notests"
    tags = " ".join(f"{key}={quoteattr(str(value))}" for key, value in sorted(spec.tags.items()))
    uuid = f"<uuid>{spec.uuid}</uuid>" if spec.uuid else ""
    netdev = ",".join(["user", "id=prov0", *(f.hostfwd() for f in spec.forwards)])
    return f"""<domain type='{spec.domain_type}' xmlns:qemu='{QEMU_NS}'>
  <name>{escape(spec.name)}</name>{uuid}
  <metadata><{METADATA_PREFIX}:machine xmlns:{METADATA_PREFIX}='{METADATA_NS}' {tags}/></metadata>
  <memory unit='MiB'>{int(spec.memory_mib)}</memory>
  <vcpu>{int(spec.cpus)}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(spec.kernel)}</kernel>
    <initrd>{escape(spec.initrd)}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/>{tcg}</features>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file={quoteattr(spec.disk)}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk' snapshot='no'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(spec.seed)}/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <serial type='file'><source path={quoteattr(spec.console)}/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <qemu:commandline>
    <qemu:arg value='-netdev'/><qemu:arg value={quoteattr(netdev)}/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=prov0,bus=pcie.0,addr={NIC_SLOT}'/>
  </qemu:commandline>
</domain>
"""
