# W2: one connection per host, 20 `echo i` one after another; hosts concurrently.
import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import asyncssh  # noqa: E402
import hostlist  # noqa: E402

_, hosts = hostlist.load()


async def one(h):
    outs = []
    async with asyncssh.connect(h["host"], port=h["port"], username=h["user"], client_keys=[h["key"]],
                                known_hosts=h["known_hosts"], agent_path=None) as conn:
        for i in range(hostlist.W2_COMMANDS):
            result = await conn.run(f"echo {i}", check=True)
            outs.append(result.stdout.strip())
    return h["name"], " ".join(outs)


async def main():
    for name, out in await asyncio.gather(*(one(h) for h in hosts)):
        hostlist.emit(name, out)

asyncio.run(main())
