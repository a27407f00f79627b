# SFTP throughput: put one file to the first host (args: HOSTS_JSON SRC DEST).
import asyncio
import json
import sys

import asyncssh

h = json.load(open(sys.argv[1]))["hosts"][0]


async def main():
    async with asyncssh.connect(h["host"], port=h["port"], username=h["user"], client_keys=[h["key"]],
                                known_hosts=h["known_hosts"], agent_path=None) as conn:
        async with conn.start_sftp_client() as sftp:
            await sftp.put(sys.argv[2], sys.argv[3])

asyncio.run(main())
