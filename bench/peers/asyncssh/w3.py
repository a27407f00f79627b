# W3: SFTP put of the payload, then `sha256sum` on the host; hosts concurrently.
import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import asyncssh  # noqa: E402
import hostlist  # noqa: E402

data, hosts = hostlist.load()


async def one(h):
    dest = hostlist.remote_path(h)
    async with asyncssh.connect(h["host"], port=h["port"], username=h["user"], client_keys=[h["key"]],
                                known_hosts=h["known_hosts"], agent_path=None) as conn:
        async with conn.start_sftp_client() as sftp:
            await sftp.put(data["payload"], dest)
        result = await conn.run(f"sha256sum {dest}", check=True)
    return h["name"], result.stdout.split()[0]


async def main():
    for name, out in await asyncio.gather(*(one(h) for h in hosts)):
        hostlist.emit(name, out)

asyncio.run(main())
