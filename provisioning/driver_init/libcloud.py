"""The libcloud: scheme."""

DRIVER = "provisioning.drivers.libcloud:LibcloudDriver"
