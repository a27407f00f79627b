"""The libvirt: scheme."""

DRIVER = "provisioning.drivers.libvirt:LibvirtDriver"
