"""Markdown tables for bench/RESULTS.md, and rewriting only our sections of that file."""

from __future__ import annotations

import os
import statistics

FANOUT = "## Fan-out (W1, W2, W3)"
SFTP = "## Upload throughput vs scp and SFTP"
STARTUP = "## import provisioning"

WORKLOADS = {
    1: "W1: `uname -a` once per host, fresh connections",
    2: "W2: 20 sequential commands (`echo i`) per host over one connection",
    3: "W3: upload 10 MiB per host and check its sha256 on the host",
}
OURS = ("ours", "ours-batch")
HOW = {
    "ours": "this library: an `SSHTransport` per host (TCP_NODELAY and quick ACKs, AES-GCM, "
            "ed25519) on the library's `Parallelizer`; W2 one round trip per command through "
            "`SSHTransport.shell_session()`; W3 `upload_file` (one exec channel: the file streams "
            "to a temporary name, is hashed on the host, compared, renamed)",
    "ours-batch": "this library, W2 through `Machine.execute_many` (the 20 commands sent at once, "
                  "still run one after another, each with its own exit status and output)",
    "openssh": "`ssh`/`scp` per host via `xargs -P N`, no multiplexing (W2: 20 connections per host)",
    "openssh-mux": "W2 only: per host one `ControlMaster`, 20 `ssh` sessions over it",
    "paramiko": "`SSHClient` per host in a thread (socket with TCP_NODELAY), `exec_command`, `open_sftp().put`",
    "asyncssh": "`asyncio.gather` over hosts, `conn.run`, `start_sftp_client().put`",
    "fabric": "`ThreadingGroup.run` (W2: 20 lockstep group runs), W3 `Connection.put` in a thread per host",
    "pyinfra": "`pyinfra -y inventory.py exec` (W1), a deploy with `server.shell` / `files.put` (W2, W3)",
    "ansible": "`ansible -m command` (W1), `ansible-playbook` with `pipelining` and ControlPersist (W2, W3)",
}


def _median(cell: dict) -> float | None:
    return statistics.median(cell["times"]) if cell.get("times") and "error" not in cell else None


def fanout_tables(cells: list[dict], env: dict) -> str:
    by = {(c["tool"], c["workload"], c["n"]): c for c in cells}
    order = list(HOW)
    tools = sorted({c["tool"] for c in cells},
                   key=lambda t: (order.index(t) if t in order else len(order), t))
    ns = sorted({c["n"] for c in cells})
    lines = [FANOUT, ""]
    lines.append(
        f"One run of `python3 bench/fanout.py` ({env.get('date_utc', '?')}, {env.get('cores', '?')} "
        f"cores, kernel {env.get('kernel', '?')}, {env.get('sshd', '?')}). Whole-process wall time in "
        f"seconds, median of {env.get('runs', '?')} timed runs after one checked warm-up "
        f"({env.get('slow_runs', '?')} when a run takes over 20 s); every run's output checked. "
        "N independent sshd on 127.0.0.1 (`provisioning.testing.sshd`, ed25519 host keys, "
        "`SetEnv SHLVL=1`), host keys verified by every tool. Ratio rows: ours / fastest peer "
        "(below 1 means we are faster).")
    if env.get("wall_minutes"):
        lines.append(f"The whole run took {env['wall_minutes']} min.")
    if env.get("loadavg"):
        lines.append(f"Load average (1 min) at start and end: {env['loadavg']}; other jobs on the "
                     "machine slow every column alike, compare columns only within one run.")
    lines.append("")
    for workload, title in WORKLOADS.items():
        if not any(k[1] == workload for k in by):
            continue
        lines += [f"### {title}", "", "| tool | " + " | ".join(f"N={n}" for n in ns) + " |",
                  "|---|" + "---:|" * len(ns)]
        for tool in tools:
            row = []
            present = False
            for n in ns:
                cell = by.get((tool, workload, n))
                if cell is None:
                    row.append("-")
                    continue
                present = True
                med = _median(cell)
                row.append("FAIL" if med is None else
                           (f"**{med:.2f}**" if tool in OURS else f"{med:.2f}"))
            if present:
                lines.append(f"| {tool} | " + " | ".join(row) + " |")
        fastest, ratios = [], {t: [] for t in OURS}
        for n in ns:
            peers = [(_median(by[k]), k[0]) for k in by
                     if k[1] == workload and k[2] == n and k[0] not in OURS and _median(by[k])]
            best = min(peers) if peers else None
            fastest.append(f"{best[1]} {best[0]:.2f}" if best else "-")
            for tool in OURS:
                ours = _median(by[(tool, workload, n)]) if (tool, workload, n) in by else None
                ratios[tool].append(f"{ours / best[0]:.2f}x" if ours and best else "-")
        lines.append("| fastest peer | " + " | ".join(fastest) + " |")
        for tool in OURS:
            if any(r != "-" for r in ratios[tool]):
                lines.append(f"| {tool} / fastest peer | " + " | ".join(ratios[tool]) + " |")
        lines.append("")
    lines.append("Columns:")
    lines.append("")
    for tool in tools:
        lines.append(f"- `{tool}`: {HOW.get(tool, '')}")
    versions = env.get("versions") or {}
    if versions:
        lines.append("")
        lines.append("Versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()) + ".")
    return "\n".join(lines) + "\n"


def sftp_table(rows: list[dict]) -> str:
    lines = [SFTP, "",
             "One host, one file to tmpfs, whole process timed; MB/s = size / median wall time "
             "(connection set-up included, so small files understate the rate). Ours also hashes "
             "the file on the host, compares it and renames it into place; scp and the SFTP puts "
             "do neither. The rate of one stream is bound by Python packetising 32 KiB SSH "
             "packets on the client; scp is C.", "",
             "| tool | size | median s | MB/s | runs |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        mb = r["bytes"] / 1e6
        lines.append(f"| {r['tool']} | {r['bytes'] >> 20} MiB | {r['median']:.3f} | "
                     f"{mb / r['median']:.0f} | {r['runs']} |")
    return "\n".join(lines) + "\n"


def startup_table(rows: list[dict]) -> str:
    lines = [STARTUP, "",
             "hyperfine (`-N`, warm-up 3), interpreter of the benchmark venv; no SSH involved.", "",
             "| command | median ms | min ms | max ms | runs |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['name']}` | {r['median'] * 1000:.1f} | {r['min'] * 1000:.1f} | "
                     f"{r['max'] * 1000:.1f} | {r['runs']} |")
    return "\n".join(lines) + "\n"


HEADER = """# Benchmark results

The fan-out, upload-throughput and `import provisioning` sections come from one run of
`python3 bench/fanout.py` (how it measures: docs/performance.md). The other sections come from
their own scripts, named in each.
"""


def update_results_md(path: str, sections: dict[str, str]) -> None:
    """Replace the given ``## `` sections (by heading) and keep every other section as it was."""
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else HEADER
    parts: list[list[str]] = [[]]
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            parts.append([])
        parts[-1].append(line)
    head = "".join(parts[0]) if "".join(parts[0]).strip() else HEADER
    blocks = ["".join(p) for p in parts[1:]]
    done = set()
    out = []
    for block in blocks:
        heading = block.splitlines()[0].strip()
        if heading in sections:
            out.append(sections[heading].rstrip("\n") + "\n\n")
            done.add(heading)
        else:
            out.append(block if block.endswith("\n\n") else block.rstrip("\n") + "\n\n")
    # ours first, in a fixed order, when they are new
    new = [sections[h].rstrip("\n") + "\n\n" for h in (FANOUT, SFTP, STARTUP)
           if h in sections and h not in done]
    body = head.rstrip("\n") + "\n\n" + "".join(new) + "".join(out)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(body.rstrip("\n") + "\n")
    os.replace(tmp, path)
