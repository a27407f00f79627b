"""Host-side pieces of the ``nspawn:`` driver, one job per module.

- ``host``: running host commands, preflight checks (root, binaries, overlayfs), kernel limits
- ``image``: the Debian image (debootstrap from apt's own mirror), cached under a lock
- ``warehouse``: the warehouse directory, its lock, machine records and address slots
- ``rootfs``: what goes into a machine's upper layer before boot (keys, sshd, hostname)
- ``netns``: the hub namespace and bridge, per-machine namespaces, sockets opened inside them
- ``proc``: boot, liveness from /proc, cgroups, stop and kill

Nothing here imports paramiko; the driver hands ``netns.socket_factory`` to the SSH transport.
"""
