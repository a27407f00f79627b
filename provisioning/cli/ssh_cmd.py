"""``converge ssh MACHINE``: an interactive OpenSSH session with our key and the pinned host key.

The key and a known_hosts file holding only the machine's pinned key go to a private temporary
directory (0700) removed afterwards; ``StrictHostKeyChecking=yes`` means a different host key
is refused, never learned. For machines that live in a network namespace the driver supplies a
ProxyCommand (``driver.ssh_proxy_command(spec)``, else ``reference["proxy_command"]``).
"""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, pass_settings


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("machine")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@common_options
@pass_settings
def ssh(settings, machine: str, command: tuple[str, ...]) -> int:
    """Open an SSH session on MACHINE (or run COMMAND there: converge ssh web-1 -- uptime).

    Uses the system's OpenSSH client with the machine's key and its pinned host key.
    """
    import shutil
    import subprocess
    import tempfile

    from provisioning.errors import ConfigError

    if command and command[0] == "--":
        command = command[1:]

    if shutil.which("ssh") is None:
        raise ConfigError("the OpenSSH client 'ssh' is not installed; install openssh-client",
                          key="ssh")
    with settings.session(live=False, read_only=True) as session:
        target = session.runner.connect(machine)
        spec = target.spec or session.runner.provisioner.spec(machine)
        driver = session.runner.provisioner.driver_for(spec)
        params = ssh_parameters(target, spec, driver)
        with tempfile.TemporaryDirectory(prefix="converge-ssh-") as tmp:
            argv = ssh_argv(params, tmp, list(command))
            target.disconnect()
            return subprocess.call(argv)


def _attr(obj, *names):
    for name in names:
        value = getattr(obj, name, None)
        if value not in (None, ""):
            return value
    return None


def ssh_parameters(target, spec, driver) -> dict:
    """host, port, username, private key, pinned host key and proxy command of a machine."""
    from provisioning.errors import UnsupportedOperation

    transport = target.transport
    key = _attr(transport, "private_key", "_private_key", "key")
    if key is None or not hasattr(key, "private_openssh"):
        raise UnsupportedOperation(f"machine {spec.name!r} is not reached over SSH with a key "
                                   f"({type(transport).__name__}); use 'converge exec' instead",
                                   machine=spec.name)
    host_key = _attr(transport, "host_key", "_host_key", "pinned_host_key") or \
        spec.reference.get("host_key")
    if not host_key:
        raise UnsupportedOperation(f"machine {spec.name!r} has no pinned host key yet; run "
                                   "'converge up' once so it is recorded", machine=spec.name)
    proxy = None
    if hasattr(driver, "ssh_proxy_command"):
        proxy = driver.ssh_proxy_command(spec)
    proxy = proxy or spec.reference.get("proxy_command")
    return {
        "host": _attr(transport, "hostname", "address", "_hostname", "_host_name") or
        spec.reference.get("address") or spec.reference.get("host"),
        "port": int(_attr(transport, "port", "_port") or 22),
        "username": _attr(transport, "username", "_username", "user") or "root",
        "key": key, "host_key": host_key, "proxy": proxy, "alias": f"converge-{spec.name}",
    }


def ssh_argv(params: dict, directory: str, command: list[str]) -> list[str]:
    """The ssh command line; writes the key and known_hosts into ``directory`` (private)."""
    import os
    import shlex

    from provisioning.keys import write_private_file

    os.chmod(directory, 0o700)
    key_path = os.path.join(directory, "id")
    write_private_file(key_path, params["key"].private_openssh())
    known_hosts = os.path.join(directory, "known_hosts")
    key_fields = params["host_key"].split()[:2]
    with open(known_hosts, "w", encoding="ascii") as handle:
        handle.write(f"{params['alias']} {' '.join(key_fields)}\n")
    argv = ["ssh", "-i", key_path, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlias={params['alias']}",
            "-o", "UpdateHostKeys=no", "-o", "LogLevel=ERROR",
            "-p", str(params["port"]), "-l", params["username"]]
    if params.get("proxy"):
        proxy = params["proxy"]
        argv += ["-o", "ProxyCommand=" + (proxy if isinstance(proxy, str) else shlex.join(proxy))]
    argv.append(params["host"])
    if command:
        argv += ["--"] + command
    return argv
