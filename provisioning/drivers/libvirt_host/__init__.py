"""Host-side pieces of the ``libvirt:`` driver, one job per module.

- ``host``: running host commands (a failure is a ProviderError naming the package)
- ``conn``: libvirt-python imported lazily, connections, the libvirtError mapping table
- ``image``: base qcow2 disks per Debian release, built from Debian packages, cached
- ``seed``: the seed disk with each machine's host key, authorized key and hostname
- ``domain``: the domain XML (direct kernel boot, overlay, user-mode NAT with forwards)
- ``accel``: KVM or TCG, detecting a KVM that cannot run stock kernels
- ``netns``: sockets in the network namespace qemu runs in
- ``warehouse``: the driver's directory, its lock and machine records
"""
