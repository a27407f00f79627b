# W2: one server.shell operation of 20 commands, run one after another over the host's connection.
from pyinfra.operations import server

server.shell(name="20 small commands", commands=[f"echo {i}" for i in range(20)])
