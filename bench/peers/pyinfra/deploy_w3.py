# W3: files.put (SFTP) of the payload, then print its sha256 on the host.
import os

from pyinfra import host
from pyinfra.operations import files, server

dest = host.data.scratch + "/payload.bin"
files.put(name="upload payload", src=os.environ["BENCH_PAYLOAD"], dest=dest)
server.shell(name="sha256", commands=[f"sha256sum {dest}"])
