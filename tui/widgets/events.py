"""The live audit events panel: what happened on the cluster, newest at the bottom.

The first poll asks for the newest events; later polls ask only for events after the last
one it holds (``GET /api/v1/events?after=ID``) and page through a burst with the answer's
``next`` cursor, at most ``MAX_PAGES`` pages a poll (the next poll goes on from there), so no
event is skipped however many arrive between two polls. Rows are keyed by event id; the
oldest beyond a cap are dropped. Administrators see every event; other users their own and
those on their files (the admin server filters).
"""
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.worker import WorkerState, get_current_worker

from ..format import clock_time, human_size
from ..polling import PollWhileShown
from .table import LiveTable

FIRST_LOAD = 50
PAGE = 200
MAX_PAGES = 10  # per poll: a flood of events is caught up over several polls, never skipped
CAP = 300
COLUMNS = (("at", "Time"), ("user", "User"), ("event", "Event"), ("target", "Target"),
           ("result", "Result"), ("details", "Details"))


class EventsFetched(Message):
    def __init__(self, events, caught_up=False):
        super().__init__()
        self.events = events
        self.caught_up = caught_up  # the first load: page on from here even if it was empty


def result_style(result):
    text = (result or "").lower()
    if text in ("ok", "success", "created", "modified") or text.startswith("2"):
        return "green"
    if text in ("denied", "forbidden", "error", "failed", "fail") or text.startswith(("4", "5")):
        return "red"
    return ""


class EventsPanel(PollWhileShown, Vertical):
    """Recent audit events, polled every ``poll_seconds`` while the panel is mounted."""

    DEFAULT_CSS = """
    EventsPanel {
        height: 1fr;
        border: round $panel-lighten-2;
        border-title-color: $foreground;
    }
    EventsPanel > LiveTable {
        height: 1fr;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, admin, *, poll_seconds=2.0, cap=CAP, tz=None, **kwargs):
        super().__init__(**kwargs)
        self.admin = admin
        self.poll_seconds = poll_seconds
        self.cap = cap
        self.tz = tz
        self.last_id = None  # None until the first answer: then page on from there
        self.border_title = "Events"

    def compose(self) -> ComposeResult:
        table = LiveTable(cursor_type="row", id="events-table")
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table

    @property
    def table(self):
        return self.query_one(LiveTable)

    def on_mount(self):
        self.start_polling()

    def poll(self):
        if not self.working("events"):
            self.fetch(self.last_id)

    @work(thread=True, exclusive=True, group="events", exit_on_error=False)
    def fetch(self, after):
        worker = get_current_worker()
        if after is None:
            page = self.admin.events(limit=FIRST_LOAD)
            if not worker.is_cancelled:
                self.post_message(EventsFetched(page["events"], caught_up=True))
            return
        for _ in range(MAX_PAGES):
            page = self.admin.events(after=after, limit=PAGE)
            if worker.is_cancelled:
                return
            self.post_message(EventsFetched(page["events"]))
            events = page["events"]
            if not page.get("next") or not events:
                return
            after = page["next"]

    def on_worker_state_changed(self, event):
        if event.worker.group == "events" and event.state == WorkerState.ERROR:
            event.stop()
            self.app.report_error(event.worker.error, source="events")

    def on_events_fetched(self, message: EventsFetched):
        message.stop()
        if self.last_id is None and message.caught_up:
            self.last_id = 0
        self.add_events(message.events)

    def add_events(self, events):
        """Append new events (by id), drop the oldest beyond the cap, follow the tail."""
        table = self.table
        at_end = table.cursor_row >= table.row_count - 1
        for e in events:
            try:
                eid = int(e.get("id") or 0)
            except (TypeError, ValueError):
                continue
            if eid <= (self.last_id or 0):
                continue
            self.last_id = eid
            table.add_row(*self.cells(e), key=str(eid))
        while table.row_count > self.cap:
            table.remove_row(next(iter(table.rows)))
        self.border_title = f"Events ({table.row_count})" if table.row_count else "Events"
        if at_end and table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)

    def cells(self, e):
        target = e.get("path") or e.get("server") or ""
        result = e.get("result") or ""
        details = e.get("message") or ""
        if e.get("bytes"):
            details = f"{human_size(e['bytes'])} {details}".strip()
        event = e.get("operation") or e.get("kind") or ""
        return (clock_time(e.get("at"), self.tz), e.get("username") or "", event,
                _clip(target, 32), Text(result, style=result_style(result)), _clip(details, 80))


def _clip(text, width):
    text = str(text)
    return text if len(text) <= width else text[:width - 1] + "…"
