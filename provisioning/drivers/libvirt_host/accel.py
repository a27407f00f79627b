"""Which accelerator a machine runs under: ``kvm``, ``tcg`` (software emulation) or ``auto``.

``auto`` takes KVM only where it can run a stock guest kernel. A ``/dev/kvm`` that opens is not
enough: nested "PVM" KVM (the ``kvm_pvm`` module, no vmx/svm in the CPU flags) runs only guest
kernels built for it, and a stock Debian kernel spins there forever without output. The checks
read files only (no guest is started, so nothing can hang); the verdict and its reason are
computed once per process.
"""

from __future__ import annotations

import os
import threading

from provisioning.errors import ConfigError
from provisioning.inputs.records import record

__all__ = ["Accel", "choose_accel", "detect_kvm", "ACCEL_CHOICES"]

ACCEL_CHOICES = ("auto", "kvm", "tcg")

_lock = threading.Lock()
_detected: "tuple[bool, str] | None" = None


@record(frozen=True)
class Accel:
    """The chosen accelerator; ``notice`` is the one line to show when auto fell back."""

    kind: str  # kvm | tcg
    notice: str | None = None

    @property
    def domain_type(self) -> str:
        return "kvm" if self.kind == "kvm" else "qemu"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def detect_kvm(root: str = "/") -> tuple[bool, str]:
    """(usable, reason) for KVM on this host, from /dev/kvm, the CPU flags and kvm modules."""
    kvm = os.path.join(root, "dev/kvm")
    if not os.path.exists(kvm):
        return False, "/dev/kvm does not exist (no KVM module loaded, or no hardware support)"
    try:
        os.close(os.open(kvm, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return False, f"/dev/kvm does not open ({exc.strerror})"
    modules = set(os.listdir(os.path.join(root, "sys/module"))) if os.path.isdir(
        os.path.join(root, "sys/module")) else set()
    flags = set()
    for line in _read(os.path.join(root, "proc/cpuinfo")).splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    if "kvm_pvm" in modules and not modules & {"kvm_intel", "kvm_amd"}:
        return False, ("/dev/kvm is PVM nested virtualization (kvm_pvm), which runs only guest "
                       "kernels built for PVM; stock kernels hang there")
    if not flags & {"vmx", "svm"}:
        return False, ("the CPU shows no vmx/svm flag: this KVM is not hardware-backed and "
                       "stock guest kernels may hang under it")
    return True, "KVM with hardware virtualization"


def _cached_detect() -> tuple[bool, str]:
    global _detected
    with _lock:
        if _detected is None:
            _detected = detect_kvm()
        return _detected


def choose_accel(wanted: str, *, local: bool) -> Accel:
    """The accelerator for ``wanted`` (auto|kvm|tcg). Remote URIs: auto means kvm (the remote
    host's KVM cannot be inspected from here; set accel: tcg there if it has none)."""
    if wanted not in ACCEL_CHOICES:
        raise ConfigError(f"accel {wanted!r} is not one of {', '.join(ACCEL_CHOICES)}",
                          key="machine_options.accel")
    if wanted != "auto":
        return Accel(wanted)
    if not local:
        return Accel("kvm")
    usable, reason = _cached_detect()
    if usable:
        return Accel("kvm")
    return Accel("tcg", f"KVM not usable here ({reason}): running under TCG software emulation, "
                        "much slower")
