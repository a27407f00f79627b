"""paramiko as its users write it: SSHClient, strict host keys, a TCP_NODELAY socket."""
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import paramiko  # noqa: E402


def connect(h):
    client = paramiko.SSHClient()
    client.load_host_keys(h["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = socket.create_connection((h["host"], h["port"]))
    # without this paramiko loses ~40 ms per command to Nagle + delayed ACKs
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect(h["host"], port=h["port"], username=h["user"], key_filename=h["key"],
                   look_for_keys=False, allow_agent=False, sock=sock)
    return client


def run(client, command):
    _, stdout, stderr = client.exec_command(command)
    out = stdout.read().decode()
    stderr.read()
    status = stdout.channel.recv_exit_status()
    if status != 0:
        raise SystemExit(f"{command!r} exited {status}")
    return out
