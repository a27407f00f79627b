"""``converge ssh MACHINE`` (and its alias ``converge login INSTANCE``): an interactive OpenSSH
session with our key and the pinned host key (see ``provisioning.machine.access``).

The key and a known_hosts file holding only the machine's pinned key go to a private temporary
directory (0700) removed afterwards; ``StrictHostKeyChecking=yes`` means a different host key
is refused, never learned. For machines that live in a network namespace the driver supplies a
ProxyCommand (``reference["proxy_command"]``). The transport says how to log in
(``Transport.ssh_login``).
"""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, pass_settings
from provisioning.errors import ConfigError
from provisioning.machine.access import ssh_access, ssh_argv, write_access


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("machine")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@common_options
@pass_settings
def ssh(settings, machine: str, command: tuple[str, ...]) -> int:
    """Open an SSH session on MACHINE (or run COMMAND there: converge ssh web-1 -- uptime).

    Uses the system's OpenSSH client with the machine's key and its pinned host key.
    """
    return _open_session(settings, machine, command)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("instance")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@common_options
@pass_settings
def login(settings, instance: str, command: tuple[str, ...]) -> int:
    """Log in to INSTANCE (its first machine) over SSH: test-kitchen's name for 'ssh'."""
    return _open_session(settings, instance, command)


def _open_session(settings, machine: str, command: tuple[str, ...]) -> int:
    import shutil
    import subprocess
    import tempfile

    if command and command[0] == "--":
        command = command[1:]
    if shutil.which("ssh") is None:
        raise ConfigError("the OpenSSH client 'ssh' is not installed; install openssh-client",
                          key="ssh")
    with settings.session(live=False, read_only=True) as session:
        name = session.cluster.file.login_target(machine)
        target = session.runner.connect(name)
        access = ssh_access(target)
        target.disconnect()
        with tempfile.TemporaryDirectory(prefix="converge-ssh-") as tmp:
            argv = ssh_argv(access, write_access([access], tmp), list(command))
            return subprocess.call(argv)
