# W1: fresh connection per host, `uname -a`; asyncio.gather over hosts.
import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import asyncssh  # noqa: E402
import hostlist  # noqa: E402

_, hosts = hostlist.load()


async def one(h):
    async with asyncssh.connect(h["host"], port=h["port"], username=h["user"], client_keys=[h["key"]],
                                known_hosts=h["known_hosts"], agent_path=None) as conn:
        result = await conn.run("uname -a", check=True)
    return h["name"], result.stdout.strip()


async def main():
    for name, out in await asyncio.gather(*(one(h) for h in hosts)):
        hostlist.emit(name, out)

asyncio.run(main())
