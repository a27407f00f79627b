# W1: ThreadingGroup.run("uname -a") over fresh connections.
import hostlist
from group import group

_, hosts = hostlist.load()
g = group(hosts)
results = g.run("uname -a", hide=True)
by_host = {(c.host, c.port): r for c, r in results.items()}
for h in hosts:
    hostlist.emit(h["name"], by_host[(h["host"], h["port"])].stdout.strip())
g.close()
