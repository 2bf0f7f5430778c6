"""Pages of the audit events kept for the GUI's live panel (keyset paging by event id).

Without a cursor a client gets the newest events; with ``after`` (an event id) the first
events after it, and ``next`` while more follow, so a poll that finds a burst pages through
it instead of skipping its start. Columns are read, not entities: a page is hundreds of rows.
"""
from sqlalchemy import or_, select

from securifile.common.times import iso

from .models import Event

COLUMNS = (Event.id, Event.at, Event.kind, Event.server, Event.username, Event.operation,
           Event.path, Event.result, Event.size, Event.message)


def events_page(sessions, after, limit, viewer=None):
    """``{"events", "next"}``, oldest first. ``viewer``: a user who is not an administrator,
    who sees only their own events and those on their files (None: every event)."""
    q = select(*COLUMNS)
    if viewer is not None:
        # autoescape: '_' and '%' in a name are literal, so 'bo_' never matches 'bob/'.
        q = q.where(or_(Event.username == viewer,
                        Event.path.startswith(viewer + "/", autoescape=True)))
    with sessions() as s:
        if after is None:
            rows = list(reversed(s.execute(q.order_by(Event.id.desc()).limit(limit)).all()))
            more = False
        else:
            rows = s.execute(q.where(Event.id > after).order_by(Event.id).limit(limit + 1)).all()
            more = len(rows) > limit
            rows = rows[:limit]
    return {"events": [{"id": e.id, "at": iso(e.at), "kind": e.kind, "server": e.server,
                        "username": e.username, "operation": e.operation, "path": e.path,
                        "result": e.result, "bytes": e.size, "message": e.message} for e in rows],
            "next": rows[-1].id if more else None}
