"""Pages of the audit events kept for the GUI's live panel (keyset paging by event id).

Without a cursor a client gets the newest events; with ``after`` (an event id) the first
events after it, and ``next`` while more follow, so a poll that finds a burst pages through
it instead of skipping its start. Each row comes as its JSON object (admin/rowjson.py): a page is hundreds of rows.
"""
from sqlalchemy import or_, select

from .models import Event
from .rowjson import Field, Fields

EVENT_FIELDS = Fields(*(Field(key, column) for key, column in (
    ("id", Event.id), ("at", Event.at), ("kind", Event.kind), ("server", Event.server),
    ("username", Event.username), ("operation", Event.operation), ("path", Event.path),
    ("result", Event.result), ("bytes", Event.size), ("message", Event.message))))


def events_page(sessions, after, limit, viewer=None):
    """``{"events", "next"}``, oldest first. ``viewer``: a user who is not an administrator,
    who sees only their own events and those on their files (None: every event)."""
    with sessions() as s:
        q = select(*EVENT_FIELDS.columns(s))
        if viewer is not None:
            # autoescape: '_' and '%' in a name are literal, so 'bo_' never matches 'bob/'.
            q = q.where(or_(Event.username == viewer,
                            Event.path.startswith(viewer + "/", autoescape=True)))
        if after is None:
            rows = list(reversed(s.execute(q.order_by(Event.id.desc()).limit(limit)).all()))
            more = False
        else:
            rows = s.execute(q.where(Event.id > after).order_by(Event.id).limit(limit + 1)).all()
            more = len(rows) > limit
            rows = rows[:limit]
        events = EVENT_FIELDS.objects(s, rows)
    return {"events": events, "next": events[-1]["id"] if more else None}
