# W3: upload_file per host: pipelined SFTP to a temporary name, sha256 computed on the host and
# compared (TransferError otherwise), then renamed into place.
from common import fan_out, hostlist, transport

data, hosts = hostlist.load()


def one(h):
    with transport(h) as t:
        t.upload_file(data["payload"], hostlist.remote_path(h))
    # upload_file raised unless the host's sha256 matched; the harness re-hashes the file too
    return data["payload_sha256"]


fan_out(hosts, one, per_core=12)
