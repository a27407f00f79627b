# SFTP throughput: put one file to the first host (args: HOSTS_JSON SRC DEST).
import json
import sys

from client import connect

h = json.load(open(sys.argv[1]))["hosts"][0]
client = connect(h)
sftp = client.open_sftp()
sftp.put(sys.argv[2], sys.argv[3])
sftp.close()
client.close()
