# SFTP throughput: upload_file of one file to the first host (args: HOSTS_JSON SRC DEST).
import json
import sys

from common import transport

h = json.load(open(sys.argv[1]))["hosts"][0]
with transport(h) as t:
    t.upload_file(sys.argv[2], sys.argv[3])
