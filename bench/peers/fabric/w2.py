# W2: 20 ThreadingGroup.run("echo i") calls (Group.run is lockstep across hosts); one
# connection per host kept open throughout.
import hostlist
from group import group

_, hosts = hostlist.load()
g = group(hosts)
outs = {(h["host"], h["port"]): [] for h in hosts}
for i in range(hostlist.W2_COMMANDS):
    for c, r in g.run(f"echo {i}", hide=True).items():
        outs[(c.host, c.port)].append(r.stdout.strip())
for h in hosts:
    hostlist.emit(h["name"], " ".join(outs[(h["host"], h["port"])]))
g.close()
