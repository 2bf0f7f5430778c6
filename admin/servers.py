"""Server status in the database: each node's view of the others, and one status per server.

A server is shown down (or failed) only when at least two running observers agree, or the
only running observer in a two-node cluster: one partitioned node cannot condemn the rest.
Failed outranks down when enough observers say failed.
"""
from datetime import datetime, timezone

from sqlalchemy import func, select

from securifile.common.errors import NotFound
from securifile.common.times import epoch, from_epoch, iso

from .coordination import exclusive
from .db import reading
from .models import File, Observation, Placement, Server, StatusChange

RUNNING, DOWN, FAILED, UNKNOWN, VERIFYING = "running", "down", "failed", "unknown", "verifying"


def aggregate(views, current, needed=2):
    """One status from ``views`` (observer -> status) of the observers able to judge.

    Down (or failed) needs ``needed`` observers to agree; fewer cannot condemn a server, so
    it stays running. ``current`` is kept while nobody is in a position to judge.
    """
    if not views:
        return current
    failed = sum(1 for v in views.values() if v == FAILED)
    # A peer being verified is not serving yet: it counts with the down ones.
    down = sum(1 for v in views.values() if v in (DOWN, FAILED, VERIFYING))
    if failed >= needed:
        return FAILED
    if down >= needed:
        return DOWN
    return RUNNING


class ServerRegistry:
    def __init__(self, sessions, log_status=None, fresh_seconds=10.0):
        self.sessions = sessions
        self.fresh_seconds = fresh_seconds  # a server reporting within this is alive
        self.log_status = log_status or (lambda server, old, new, detail: None)

    def register(self, entries):
        """Make sure every configured server has a row (new ones start as unknown)."""
        now = datetime.now(timezone.utc)
        with self.sessions.begin() as s:
            exclusive(s, "register")  # two instances starting at once add each row once
            for e in entries:
                row = s.get(Server, e.name)
                if row is None:
                    s.add(Server(name=e.name, url=e.url, status=UNKNOWN, since=now,
                                 admin_state="online", used_bytes=0, available_bytes=0))
                else:
                    row.url = e.url

    def on_status(self, s, observer, event):
        """A node reported a change in its view of ``subject`` (itself included)."""
        subject, new = event["subject"], event["new"]
        at = from_epoch(event.get("at", datetime.now(timezone.utc).timestamp()))
        obs = s.get(Observation, (observer, subject))
        if obs is not None and obs.status == new and abs(epoch(obs.since) - epoch(at)) < 1e-6:
            return  # the same event again, in a batch resent under another id
        if obs is None:
            s.add(Observation(observer=observer, subject=subject, status=new, since=at))
        else:
            obs.status, obs.since = new, at
        s.add(StatusChange(server=subject, observer=observer, old=event.get("old", ""), new=new,
                           detail=event.get("detail", ""), at=at))
        s.flush()
        self.recompute(s)

    def recompute(self, s):
        """Re-derive every server's status from the observations (a handful of rows).

        The judges of a server are the other servers that run and still report (a server
        that stopped reporting keeps only stale views). Two of them must agree to condemn a
        server that itself still reports; one is enough in a two-node cluster, or when the
        server has gone silent too. With no judge at all (a cluster starting, everyone else
        gone) a server's own word that it runs is taken. All servers are decided together,
        round by round from the previous round's statuses, so the order of rows cannot
        change the outcome.
        """
        servers = {r.name: r for r in s.scalars(select(Server))}
        views = {}
        for o in s.scalars(select(Observation)):
            views.setdefault(o.subject, {})[o.observer] = o.status
        now = datetime.now(timezone.utc)
        fresh = {name: row.last_report is not None
                 and now.timestamp() - epoch(row.last_report) <= self.fresh_seconds
                 for name, row in servers.items()}
        status = {name: row.status for name, row in servers.items()}
        for _ in range(len(servers) + 1):
            new = {}
            for name in servers:
                seen = views.get(name, {})
                judges = {obs: st for obs, st in seen.items() if obs != name and obs in servers
                          and status[obs] == RUNNING and fresh[obs]}
                needed = 1 if len(servers) <= 2 or not fresh[name] else 2
                fallback = RUNNING if seen.get(name) == RUNNING else status[name]
                verdict = aggregate(judges, fallback, needed)
                own = seen.get(name)
                if fresh[name] and verdict == RUNNING and own in (FAILED, VERIFYING):
                    # A server that still reports, and says it is failed or being verified,
                    # serves nobody whatever the others saw (one judge may be all it has).
                    verdict = own
                new[name] = verdict
            if new == status:
                break
            status = new
        for name, row in servers.items():
            if status[name] != row.status:
                judges = {o: v for o, v in views.get(name, {}).items() if o != name}
                self._change(s, row, status[name], f"views: {judges or 'none'}")

    def recompute_now(self):
        """Re-judge every server; with two admin instances one at a time, the second seeing
        what the first changed, so that a status change is recorded and logged once."""
        with self.sessions.begin() as s:
            exclusive(s, "recompute")
            self.recompute(s)

    def _change(self, s, row, new, detail):
        old = row.status
        row.status, row.since = new, datetime.now(timezone.utc)
        s.add(StatusChange(server=row.name, observer="cluster", old=old, new=new, detail=detail,
                           at=row.since))
        self.log_status(row.name, old, new, detail)

    def set_admin_state(self, name, state):
        with self.sessions.begin() as s:
            row = s.get(Server, name)
            if row is None:
                raise NotFound(f"no server {name}", code="no_such_server")
            row.admin_state = state
            return row.url

    def under_replicated_counts(self, s):
        """``{server: files it holds (origin or replica) that lack copies}``."""
        counts = {}
        as_origin = s.execute(select(File.origin, func.count()).where(File.under_replicated)
                              .group_by(File.origin)).all()
        as_replica = s.execute(select(Placement.server, func.count())
                               .join(File, File.id == Placement.file_id)
                               .where(File.under_replicated).group_by(Placement.server)).all()
        for name, n in [*as_origin, *as_replica]:
            counts[name] = counts.get(name, 0) + n
        return counts

    def listing(self):
        with reading(self.sessions)() as s:
            rows = s.execute(select(Server.name, Server.url, Server.status, Server.admin_state,
                                    Server.since, Server.used_bytes, Server.available_bytes,
                                    Server.sampled_at).order_by(Server.name)).all()
            under = self.under_replicated_counts(s)
        return [{"name": r.name, "url": r.url, "under_replicated": under.get(r.name, 0),
                 "status": "offline" if r.admin_state == "offline" and r.status != RUNNING else r.status,
                 "admin_state": r.admin_state, "since": iso(r.since),
                 "used_bytes": r.used_bytes, "available_bytes": r.available_bytes,
                 "sampled_at": iso(r.sampled_at)} for r in rows]

    def history(self, name, limit=100):
        with reading(self.sessions)() as s:
            rows = s.scalars(select(StatusChange).where(StatusChange.server == name)
                             .order_by(StatusChange.at.desc(), StatusChange.id.desc()).limit(limit)).all()
        return [{"observer": r.observer, "old": r.old, "new": r.new, "detail": r.detail,
                 "at": iso(r.at)} for r in rows]
