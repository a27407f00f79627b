"""The PostgreSQL store's work claims (``provisioning.cluster.claims`` drives them): runs, their
machines' rows in ``provisioning_work``, claimed with ``FOR UPDATE SKIP LOCKED`` a batch per
statement, finished and given back a batch per statement, and announced on ``WORK_CHANNEL`` so
runners waiting for the others' machines wake at once (``watch_run``)."""

from __future__ import annotations

import json
import select
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

from provisioning.store.base import WorkLeft, holder_is_dead
from provisioning.store.postgres_sql import (
    ADVISORY_NAMESPACE,
    LIVE_SESSIONS,
    alive,
    connect,
    execute,
    psycopg2,
    scalar,
)

if TYPE_CHECKING:  # pragma: no cover
    from psycopg2.extensions import connection as Connection

__all__ = ["PostgresClaims", "RUN_RETENTION", "WORK_CHANNEL"]

T = TypeVar("T")

#: seconds a finished run's rows are kept for the runners still reading its results
RUN_RETENTION = 3600.0
#: runs of at least this many machines refresh the work table's planner statistics on creation
_ANALYZE_FROM = 200
#: the channel on which finishing or giving back work of a run is announced (payload: the run)
WORK_CHANNEL = "provisioning_work"

#: claim rows chosen by ``{pick}`` (a query of names FOR UPDATE SKIP LOCKED) for one runner
_CLAIM = """WITH next AS ({pick})
    UPDATE provisioning_work w SET state = 'claimed', token = %(t)s, holder = %(h)s::jsonb,
        session_key = %(k)s, claimed_at = now(), error = NULL,
        expires_at = clock_timestamp() + %(ttl)s * interval '1s'
    FROM next WHERE w.run_key = %(r)s AND w.generation = %(g)s AND w.name = next.name
    RETURNING w.name"""
_PENDING = """SELECT name FROM provisioning_work WHERE run_key = %(r)s AND generation = %(g)s
    AND state = 'pending' ORDER BY name COLLATE "C" LIMIT %(n)s FOR UPDATE SKIP LOCKED"""
_ABANDONED = f"""SELECT name FROM provisioning_work WHERE run_key = %(r)s
    AND generation = %(g)s AND state = 'claimed' AND (expires_at <= clock_timestamp()
    OR session_key::oid NOT IN ({LIVE_SESSIONS}))
    ORDER BY name COLLATE "C" LIMIT %(n)s FOR UPDATE SKIP LOCKED"""

#: a batch's outcomes written back: several statements sent as one (one round trip, one
#: implicit transaction, each statement with a snapshot of its own, taken when it starts).
#: Finishers of one run take turns on the run's row, so the last one sees every other's
#: result and ends the run; the announcement is sent when it commits; the last statement
#: names the machines this transaction finished (those still ours)
_FINISH = """SELECT 1 FROM provisioning_runs WHERE run_key = %(r)s AND generation = %(g)s
        FOR UPDATE;
    UPDATE provisioning_work w SET state = CASE WHEN o.e IS NULL THEN 'done' ELSE 'failed' END,
        error = o.e, done_at = now(), expires_at = NULL
    FROM unnest(%(n)s::text[], %(e)s::text[]) AS o(n, e) WHERE w.run_key = %(r)s
        AND w.generation = %(g)s AND w.name = o.n AND w.token = %(t)s AND w.state = 'claimed';
    UPDATE provisioning_runs r SET touched_at = now(), finished_at = now()
    WHERE run_key = %(r)s AND generation = %(g)s AND NOT EXISTS (SELECT 1 FROM provisioning_work w
        WHERE w.run_key = %(r)s AND w.generation = %(g)s AND w.state IN ('pending', 'claimed'));
    SELECT pg_notify(%(c)s, %(p)s);
    SELECT name FROM provisioning_work WHERE run_key = %(r)s AND generation = %(g)s
        AND name = ANY(%(n)s::text[]) AND token = %(t)s AND state IN ('done', 'failed')
        AND done_at = now()"""
#: claims given back (pending again for the others), and the others told, in one round trip
_RELEASE = """UPDATE provisioning_work SET state = 'pending', token = NULL, holder = NULL,
        session_key = NULL, expires_at = NULL, claimed_at = NULL
    WHERE run_key = %(r)s AND generation = %(g)s AND token = %(t)s AND state = 'claimed'
        AND name = ANY(%(n)s::text[]);
    SELECT pg_notify(%(c)s, %(p)s)"""
#: one runner's heartbeat in one run: its claims and the run live on, in one round trip
_RENEW = """UPDATE provisioning_work SET expires_at = clock_timestamp() + %(ttl)s * interval '1s',
        session_key = %(k)s
    WHERE run_key = %(r)s AND generation = %(g)s AND token = %(t)s AND state = 'claimed';
    UPDATE provisioning_runs SET touched_at = now() WHERE run_key = %(r)s AND generation = %(g)s
        AND finished_at IS NULL"""


def _rows(rows: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """Progress rows (name, state, holder as JSON text, error, live) by name; each runner's
    holder is parsed once, not once per machine (a run has a few runners, many machines)."""
    holders: dict[str | None, Any] = {None: None}
    out: dict[str, dict[str, Any]] = {}
    for name, state, holder, error, live in rows:
        if holder not in holders:
            holders[holder] = json.loads(holder)
        out[name] = {"state": state, "holder": holders[holder], "error": error, "live": live}
    return out


class PostgresClaims:
    """Work claims of ``PostgresStore`` (a mixin: it runs its statements through the store's
    connection, error mapping and masking)."""

    session_key: int
    _raw_url: str
    _connect_timeout: float

    if TYPE_CHECKING:  # pragma: no cover - the store's own, declared for the type checker
        def _run(self, doing: str, fn: Callable[[Connection], T], *,
                 tx: bool = True, retry: bool = True) -> T: ...

        def _safe_holder(self, holder: dict[str, Any]) -> dict[str, Any]: ...

        def _scrub(self, text: str) -> str: ...

    def join_run(self, run_key: str, operation: str, names: Sequence[str],
                 fresh_within: float) -> int:
        """The generation of ``run_key`` to work on: the unfinished one touched within
        ``fresh_within`` seconds, else a new one with every name pending."""
        def join(conn: Connection) -> tuple[int, bool]:
            execute(conn, "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                         (ADVISORY_NAMESPACE, run_key))
            row = execute(conn,
                "SELECT generation, touched_at > clock_timestamp() - %s * interval '1s' "
                "AND EXISTS (SELECT 1 FROM provisioning_work w WHERE w.run_key = r.run_key AND "
                "w.generation = r.generation AND w.state IN ('pending', 'claimed')) "
                "FROM provisioning_runs r WHERE run_key = %s AND finished_at IS NULL "
                "ORDER BY generation DESC LIMIT 1", (float(fresh_within), run_key)).fetchone()
            if row is not None and row[1]:
                return row[0], False
            execute(conn, "UPDATE provisioning_runs SET finished_at = now() WHERE run_key = %s "
                         "AND finished_at IS NULL", (run_key,))
            generation = scalar(execute(conn, "SELECT coalesce(max(generation), 0) + 1 FROM "
                                             "provisioning_runs WHERE run_key = %s",
                                             (run_key,)))
            # older generations stay readable: their runners may still be collecting results
            # (deleting them made those runners report others' machines as never started);
            # only generations finished long ago are pruned
            execute(conn, "DELETE FROM provisioning_runs WHERE run_key = %s AND generation < %s "
                         "AND finished_at < now() - %s * interval '1s'",
                         (run_key, generation, float(RUN_RETENTION)))
            execute(conn, "INSERT INTO provisioning_runs (run_key, generation, operation) "
                         "VALUES (%s, %s, %s)", (run_key, generation, operation))
            execute(conn, "INSERT INTO provisioning_work (run_key, generation, name) "
                         "SELECT %s, %s, unnest(%s::text[])", (run_key, generation, list(names)))
            return generation, True
        generation, new = self._run(f"join run {run_key}", join)
        if new and len(names) >= _ANALYZE_FROM:
            # the planner's figures for the work table are those of before this run's rows:
            # taken for a near-empty table, a claim's update scanned every row of the run
            # (each claim O(machines): a 10,000-machine `up` spent 31 s of its 59 s there).
            # Outside the join's transaction, so no run waits on it; not the table's owner:
            # PostgreSQL skips it with a warning, no error
            self._run("analyze the work table", lambda c: execute(c,
                "ANALYZE provisioning_work"), tx=False)
        return generation

    def claim_work(self, run_key: str, generation: int, token: str, holder: dict[str, Any],
                   ttl: float, count: int) -> list[str]:
        """Claim up to ``count`` pending names of the run in one statement (in name order),
        skipping rows other runners are claiming right now; only when none is pending, names
        whose claim lapsed or whose runner's session is gone. [] when nothing is claimable."""
        params = {"r": run_key, "g": generation, "t": token, "n": max(1, int(count)),
                  "h": json.dumps(self._safe_holder(holder)), "k": self.session_key,
                  "ttl": float(ttl)}

        def claim(conn: Connection) -> list[str]:
            rows = execute(conn, _CLAIM.format(pick=_PENDING), params).fetchall()
            if not rows:
                rows = execute(conn, _CLAIM.format(pick=_ABANDONED), params).fetchall()
            return sorted(r[0] for r in rows)
        # each claim is one statement (its own transaction): no BEGIN and COMMIT round trips;
        # not retried (a claim whose answer was lost is abandoned with its session: free again)
        return self._run("claim work", claim, tx=False, retry=False)

    def finish_work(self, run_key: str, generation: int, token: str,
                    outcomes: Mapping[str, str | None]) -> set[str]:
        """Mark our claims done (error None) or failed (the error's text), end the run when
        nothing of it is open any more and announce it, in one round trip; returns the names
        that were still ours (another runner may have taken one over)."""
        names = list(outcomes)
        errors = [self._scrub(e)[:2000] if e else None for e in outcomes.values()]
        params = {"n": names, "e": errors, "r": run_key, "g": generation, "t": token,
                  "c": WORK_CHANNEL, "p": f"{run_key}#{generation}"}
        if not names:
            return set()
        # not retried: a write-back whose answer was lost may have landed
        return self._run(f"finish work on {len(names)} machines", lambda c: {
            r[0] for r in execute(c, _FINISH, params).fetchall()}, tx=False, retry=False)

    def release_work(self, run_key: str, generation: int, token: str,
                     names: Sequence[str]) -> None:
        """Give back claims this runner will not start (it is stopping): pending again, for
        the other runners to take at once (and told so), in one round trip."""
        if names:
            self._run(f"give back {len(names)} claims", lambda c: execute(c, _RELEASE, {
                "r": run_key, "g": generation, "t": token, "n": list(names),
                "c": WORK_CHANNEL, "p": f"{run_key}#{generation}"}), tx=False)

    def renew_claims(self, run_key: str, generation: int, token: str, ttl: float) -> None:
        """Heartbeat of one runner in one run: its claims live on, the run stays joinable."""
        self._run("renew claims", lambda c: execute(c, _RENEW, {
            "ttl": float(ttl), "k": self.session_key, "r": run_key, "g": generation,
            "t": token}), tx=False)

    def run_left(self, run_key: str, generation: int, upto: int | None = None) -> WorkLeft:
        """Pending and open machines of one run and the runners holding claims, in one query
        of the open rows: the first ``upto`` of them in claim order (the open rows' index, read
        from its start: a runner asks after each claim, and that costs its window, not the
        run), or all of them."""
        row = self._run("read run progress", lambda c: execute(c,
            "SELECT count(*) FILTER (WHERE state = 'pending'), count(*), count(DISTINCT token) "
            "FILTER (WHERE state = 'claimed') FROM (SELECT state, token FROM provisioning_work "
            "WHERE run_key = %s AND generation = %s AND state IN ('pending', 'claimed') "
            'ORDER BY name COLLATE "C" LIMIT %s) AS open',
            (run_key, generation, upto)).fetchone(), tx=False)
        assert row is not None, "an aggregate query returned no row"
        return WorkLeft(int(row[0]), int(row[1]), int(row[2]))

    def watch_run(self, run_key: str, generation: int, wake: Callable[[], None],
                  stop: threading.Event) -> None:
        """``wake()`` on every announcement of the run (``LISTEN`` on a connection of its own,
        so waiting never holds the store's), once more right after listening starts, until
        ``stop`` is set. Returns quietly if the server cannot be reached: the waiting runner
        still polls."""
        payload = f"{run_key}#{generation}"
        try:
            conn = connect(self._raw_url, self._connect_timeout)
        except psycopg2.Error:
            return
        try:
            execute(conn, f"LISTEN {WORK_CHANNEL}")
            wake()  # work finished before LISTEN took effect is looked at again
            while not stop.is_set():
                if not select.select([conn], [], [], 0.5)[0]:
                    continue
                conn.poll()  # reads what arrived: notifications queue up in conn.notifies
                while conn.notifies:
                    if conn.notifies.pop(0).payload == payload:
                        wake()
        except (psycopg2.Error, OSError, ValueError):  # the server went away: poll instead
            return
        finally:
            conn.close()

    def run_progress(self, run_key: str, generation: int) -> dict[str, dict[str, Any]]:
        """name -> {state, holder, error, live} for one run."""
        rows = self._run("read run progress", lambda c: execute(c,
            "SELECT name, state, holder::text, error, state = 'claimed' AND expires_at > "
            f"clock_timestamp() AND {alive('w.session_key')} FROM provisioning_work w "
            'WHERE run_key = %s AND generation = %s ORDER BY name COLLATE "C"',
            (run_key, generation)).fetchall(), tx=False)
        return _rows(rows)

    def run_outcomes(self, run_key: str, generation: int,
                     token: str) -> dict[str, dict[str, Any]]:
        """name -> {state, holder, error, live} of the run's machines that runners other than
        ``token`` have done or failed: final, so a runner waiting for the end reports them
        early instead of all at once when the run is over."""
        rows = self._run("read run outcomes", lambda c: execute(c,
            "SELECT name, state, holder::text, error, false FROM provisioning_work "
            "WHERE run_key = %s AND generation = %s AND state IN ('done', 'failed') "
            'AND token IS DISTINCT FROM %s ORDER BY name COLLATE "C"',
            (run_key, generation, token)).fetchall(), tx=False)
        return _rows(rows)

    def runs(self) -> list[dict[str, Any]]:
        """Unfinished runs with their counts and who claims what (for ``status``)."""
        def read(conn: Connection) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for key, gen, op, created, touched in execute(conn,
                    "SELECT run_key, generation, operation, created_at, touched_at FROM "
                    "provisioning_runs WHERE finished_at IS NULL ORDER BY created_at").fetchall():
                counts: dict[str, int] = dict(execute(conn,
                    "SELECT state, count(*) FROM provisioning_work WHERE run_key = %s AND "
                    "generation = %s GROUP BY state", (key, gen)).fetchall())
                claimed = {n: h for n, h in execute(conn,
                    "SELECT name, holder FROM provisioning_work w WHERE run_key = %s AND "
                    "generation = %s AND state = 'claimed' AND expires_at > clock_timestamp() "
                    f'AND {alive("w.session_key")} ORDER BY name COLLATE "C"',
                    (key, gen)).fetchall()}
                out.append({"run": key, "generation": gen, "operation": op,
                            "created_at": created.isoformat(), "touched_at": touched.isoformat(),
                            "counts": counts,
                            "claimed": {n: h for n, h in claimed.items()
                                        if not holder_is_dead(h)}})
            return out
        return self._run("list runs", read)
