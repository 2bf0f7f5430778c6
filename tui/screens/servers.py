"""The servers screen: each storage server's state and since when, its storage over time,
and the live audit events; administrators take servers offline and online, and add, drain
and remove servers from here.

Every few seconds one thread worker asks the admin server for the server list and, per
server, for the storage samples newer than the newest already held; the answer comes back
as a ``ServersFetched`` message, the table is updated cell by cell (rows keyed by server
name) and the plots are redrawn from their capped series.
"""
from datetime import datetime, timezone

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import WorkerState, get_current_worker

from ..errors import describe
from ..format import human_size, since
from ..polling import PollWhileShown
from ..widgets.events import EventsPanel
from ..widgets.status import SessionBar
from ..widgets.table import LiveTable
from ..widgets.storage_plot import WINDOW, StorageChart, StorageSeries, StorageSparkline
from .add_server import AddServerScreen
from .dialogs import ConfirmScreen

COLUMNS = (("name", "Server"), ("status", "Status"), ("since", "Since"), ("used", "Used"),
           ("available", "Available"), ("pct", "Use%"), ("under", "Under-repl."))
STATUS_STYLES = {"running": "bold green", "down": "bold red", "failed": "bold white on red",
                 "verifying": "bold yellow", "offline": "bold cyan", "unknown": "dim"}
# Below this size the plots give way to one sparkline per server.
COMPACT_WIDTH, COMPACT_HEIGHT = 100, 32
CHART_MIN_WIDTH = 40


class ServersFetched(Message):
    """The server list and each server's new storage samples, fetched together."""

    def __init__(self, listing, samples):
        super().__init__()
        self.listing = listing
        self.samples = samples


class MembershipChanged(Message):
    """The admin server accepted an add, a drain or a removal: its new membership epoch."""

    def __init__(self, server, change, epoch):
        super().__init__()
        self.server, self.change, self.epoch = server, change, epoch


class ServerStateSet(Message):
    """The admin server accepted an offline or online request."""

    def __init__(self, server, state):
        super().__init__()
        self.server, self.state = server, state


def shown_status(server):
    """The status, with a pending administrative change (``running → offline``) and a drain
    under way with the copies it still has to move (``running, draining: 12 left``)."""
    status = server.get("status") or "unknown"
    wanted = server.get("admin_state") or "online"
    if wanted == "offline" and status != "offline":
        status = f"{status} → offline"
    elif wanted == "online" and status == "offline":
        status = "offline → online"
    if server.get("membership") == "draining":
        left = server.get("files_left")
        status += ", draining" + ("" if left is None else f": {left} left")
    return status


class ServersScreen(PollWhileShown, Screen):
    """Server states, storage plots (or sparklines) and events."""

    TITLE = "Servers"
    DEFAULT_CSS = """
    ServersScreen #servers-table {
        height: auto;
        max-height: 12;
        border: round $panel-lighten-2;
        border-title-color: $foreground;
    }
    ServersScreen #servers-table:focus { border: round $primary; }
    ServersScreen #plots {
        layout: grid;
        grid-size: 3;
        grid-gutter: 0 1;
        height: 1fr;
        min-height: 9;
        overflow-y: auto;
    }
    ServersScreen #sparklines {
        height: auto;
        max-height: 10;
        border: round $panel-lighten-2;
        border-title-color: $foreground;
        padding: 0 1;
    }
    ServersScreen EventsPanel { height: 12; }
    ServersScreen.-compact #plots { display: none; }
    ServersScreen.-compact EventsPanel { height: 1fr; min-height: 5; }
    ServersScreen #sparklines { display: none; }
    ServersScreen.-compact #sparklines { display: block; }
    """
    BINDINGS = [
        Binding("r,ctrl+r", "refresh", "Refresh", id="servers.refresh", show=False,
                tooltip="Ask the admin server now"),
        Binding("o", "offline", "Offline", id="servers.offline",
                tooltip="Take the selected server offline (administrators)"),
        Binding("n", "online", "Online", id="servers.online",
                tooltip="Put the selected server back online (administrators)"),
        # Out of the footer so that 80 columns still show f1-f4: in the palette and F1 help.
        Binding("a", "add_server", "Add server", id="servers.add", show=False,
                tooltip="Add a server to the running cluster (administrators)"),
        Binding("d", "drain", "Drain", id="servers.drain",
                tooltip="Move every copy off the selected server (administrators)"),
        Binding("x", "remove", "Remove", id="servers.remove",
                tooltip="Take the selected, drained server out of the cluster (administrators)"),
        Binding("v", "toggle_view", "View", id="servers.view",
                tooltip="Switch between plots and one sparkline per server"),
        Binding("l", "toggle_scale", "Log/lin", id="servers.scale",
                tooltip="Switch the plots between a logarithmic and a linear byte axis"),
        Binding("e", "focus_events", "Events", id="servers.events", show=False,
                tooltip="Move to the events panel"),
        Binding("s", "focus_servers", "Servers table", id="servers.table", show=False,
                tooltip="Move to the servers table"),
    ]

    def __init__(self, session, *, poll_seconds=2.0, **kwargs):
        super().__init__(**kwargs)
        self.session = session
        self.poll_seconds = poll_seconds
        self.servers = {}  # name -> the latest server dict from the API
        self.series = {}  # name -> StorageSeries
        self.charts = {}
        self.sparks = {}
        self.view = None  # None: by terminal size; "plots" or "sparklines" once chosen
        self.scale = "log"

    # -- layout --

    def compose(self) -> ComposeResult:
        yield SessionBar("Servers", self.session)
        table = LiveTable(cursor_type="row", id="servers-table")
        table.border_title = "Servers"
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Container(id="plots")
        sparks = Vertical(id="sparklines")
        sparks.border_title = "Used storage, last 10 minutes"
        yield sparks
        yield EventsPanel(self.session.admin, poll_seconds=self.poll_seconds, tz=self.app.tz)
        yield Footer()

    def on_mount(self):
        self.apply_view(self.app.size)
        self.start_polling()

    def on_screen_suspend(self):
        self.pause_polling()  # out of sight: stop asking the admin server
        self.query_one(EventsPanel).pause_polling()

    def on_screen_resume(self):
        self.resume_polling()
        self.query_one(EventsPanel).resume_polling()

    def on_resize(self, event):
        self.apply_view(event.size)

    def apply_view(self, size):
        view = self.view or ("sparklines" if size.width < COMPACT_WIDTH
                             or size.height < COMPACT_HEIGHT else "plots")
        self.set_class(view == "sparklines", "-compact")
        self.refresh_bindings()
        columns = max(1, min(len(self.charts) or 1, size.width // CHART_MIN_WIDTH))
        self.query_one("#plots").styles.grid_size_columns = columns
        self.redraw()

    @property
    def table(self):
        return self.query_one("#servers-table", LiveTable)

    @property
    def selected(self):
        """The name of the server under the cursor, or None."""
        return self.table.cursor_key

    # -- polling --

    def poll(self):
        if self.working("servers"):
            return
        default = (self.app.now() - WINDOW).isoformat()
        since_by_name = {name: datetime.fromtimestamp(s.last_time(), timezone.utc).isoformat()
                         for name, s in self.series.items() if s.last_time() is not None}
        self.fetch(since_by_name, default)

    @work(thread=True, exclusive=True, group="servers", exit_on_error=False)
    def fetch(self, since_by_name, default_since):
        admin = self.session.admin
        listing = admin.servers()
        samples = {}
        for server in listing.get("servers", []):
            name = server.get("name")
            if name:
                samples[name] = admin.storage(name, since=since_by_name.get(name, default_since))
        if not get_current_worker().is_cancelled:
            self.post_message(ServersFetched(listing, samples))

    def on_worker_state_changed(self, event):
        if event.worker.node is self and event.state == WorkerState.ERROR \
                and event.worker.group == "membership":
            event.stop()  # every refusal is shown, not only the first of a kind in a minute
            title, text = describe(event.worker.error)
            self.notify(text, title=title, severity="error", timeout=10)
        elif event.worker.node is self and event.state == WorkerState.ERROR:
            self.app.report_error(event.worker.error, source=event.worker.group or "servers")

    def on_servers_fetched(self, message: ServersFetched):
        self.app.clear_error("servers")
        listing = [s for s in message.listing.get("servers", []) if s.get("name")]
        self.update_table(listing)
        for name, samples in message.samples.items():
            self.series.setdefault(name, StorageSeries()).extend(samples)
        self.sync_charts(listing)
        self.redraw()
        self.refresh_bindings()

    def update_table(self, listing):
        """Update cells in place, add new servers, remove the ones gone; the cursor stays."""
        table = self.table
        now = self.app.now()
        for name in table.prune({s["name"] for s in listing}):
            self.servers.pop(name, None)
        for server in listing:
            table.upsert(server["name"], self.cells(server, now))
            self.servers[server["name"]] = server
        table.border_title = f"Servers ({len(listing)})"

    def cells(self, server, now):
        status = shown_status(server)
        used = server.get("used_bytes")
        avail = server.get("available_bytes")
        total = (used or 0) + (avail or 0)
        pct = f"{100 * (used or 0) / total:.1f}%" if total and used is not None else "-"
        style = STATUS_STYLES.get(status.split(" ")[0].rstrip(","), "")
        return {
            "name": Text(server["name"], style="bold"),
            "status": Text(status, style=style),
            "since": since(server.get("since"), now, self.app.tz),
            "used": Text(human_size(used), justify="right"),
            "available": Text(human_size(avail), justify="right"),
            "pct": Text(pct, justify="right"),
            # Files held here that lack copies elsewhere: what the repair is still putting back.
            "under": Text(str(under := server.get("under_replicated", 0)),
                          style="bold red" if under else "dim", justify="right"),
        }

    def sync_charts(self, listing):
        names = [s["name"] for s in listing]
        plots = self.query_one("#plots")
        sparks = self.query_one("#sparklines")
        for name in names:
            series = self.series.setdefault(name, StorageSeries())
            if name not in self.charts:
                self.charts[name] = StorageChart(name, series, tz=self.app.tz)
                plots.mount(self.charts[name])
                self.sparks[name] = StorageSparkline(name, series)
                sparks.mount(self.sparks[name])
        for gone in [n for n in self.charts if n not in names]:
            self.charts.pop(gone).remove()
            self.sparks.pop(gone).remove()
        columns = max(1, min(len(self.charts) or 1, self.app.size.width // CHART_MIN_WIDTH))
        plots.styles.grid_size_columns = columns

    def redraw(self):
        """Redraw every plot (or sparkline) for the window ending now."""
        now = self.app.now()
        compact = self.has_class("-compact")
        for name, chart in self.charts.items():
            status = shown_status(self.servers.get(name, {}))
            if compact:
                self.sparks[name].show(now, status)
            else:
                chart.scale = self.scale
                chart.show(now, status)

    # -- actions --

    def on_data_table_row_highlighted(self, event):
        if event.data_table.id == "servers-table":
            self.refresh_bindings()  # offline or online, as the selected server allows

    def check_action(self, action, parameters):
        if action in ("offline", "online"):
            if not self.session.is_admin:
                return False  # not offered at all
            if not self.is_mounted or not self.query("#servers-table"):
                return None
            server = self.servers.get(self.selected or "", {})
            wanted = server.get("admin_state") or "online"
            if action == "offline":
                return wanted != "offline"  # one of the two at a time, for the footer's sake
            return wanted == "offline"
        if action in ("add_server", "drain", "remove"):
            if not self.session.is_admin:
                return False
            if action == "add_server" or not self.is_mounted or not self.query("#servers-table"):
                return True
            # Drain a member, remove a draining one: one of the two at a time in the footer.
            draining = self.servers.get(self.selected or "", {}).get("membership") == "draining"
            return draining if action == "remove" else not draining
        if action == "toggle_scale":
            return not self.has_class("-compact")
        return True

    def action_refresh(self):
        self.poll()

    def action_toggle_view(self):
        current = "sparklines" if self.has_class("-compact") else "plots"
        self.view = "plots" if current == "sparklines" else "sparklines"
        self.apply_view(self.app.size)

    def action_toggle_scale(self):
        self.scale = "linear" if self.scale == "log" else "log"
        self.notify(f"Plots use a {self.scale} byte axis", timeout=2)
        self.redraw()

    def action_focus_events(self):
        self.query_one(EventsPanel).table.focus()

    def action_focus_servers(self):
        self.table.focus()

    def action_offline(self):
        self.ask_state("offline")

    def action_online(self):
        self.ask_state("online")

    def ask_state(self, state):
        name = self.selected
        if name is None:
            self.notify("Select a server first", severity="warning")
            return
        if state == "offline":
            question = (f"Take {name} offline? Clients stop using it and its files are served "
                        f"from their replicas until it is put back online.")
        else:
            question = (f"Put {name} back online? Its copies are verified against the other "
                        f"servers before it serves files again.")

        def answered(yes):
            if yes:
                self.set_state(name, state)

        self.app.push_screen(ConfirmScreen(question, title=f"{name}: {state}",
                                           yes=f"Take {state}" if state == "offline" else "Put online",
                                           danger=state == "offline"), answered)

    @work(thread=True, group="server-state", exit_on_error=False)
    def set_state(self, name, state):
        self.session.admin.set_server_state(name, state)
        self.post_message(ServerStateSet(name, state))

    def on_server_state_set(self, message: ServerStateSet):
        self.notify(f"{message.server} is being taken {message.state}" if message.state == "offline"
                    else f"{message.server} is being put back online", title="Servers")
        self.poll()

    def action_add_server(self):
        def answered(entry):
            if entry:
                self.change_membership("add", entry["name"], entry["url"])

        self.app.push_screen(AddServerScreen(), answered)

    def action_drain(self):
        self.ask_membership("drain", "Drain", lambda name: (
            f"Drain {name}? Every copy it holds is copied to other servers (never fewer than "
            f"the replicas + 1 copies of a file) and nothing new is placed on it; then it can "
            f"be removed."))

    def action_remove(self):
        self.ask_membership("remove", "Remove", lambda name: (
            f"Remove {name} from the cluster? Every server stops using it. The admin server "
            f"refuses while it still holds copies."))

    def ask_membership(self, change, verb, question):
        name = self.selected
        if name is None:
            self.notify("Select a server first", severity="warning")
            return

        def answered(yes):
            if yes:
                self.change_membership(change, name)

        self.app.push_screen(ConfirmScreen(question(name), title=f"{name}: {change}",
                                           yes=verb, danger=True), answered)

    @work(thread=True, group="membership", exit_on_error=False)
    def change_membership(self, change, name, url=None):
        admin = self.session.admin
        if change == "add":
            answer = admin.add_server(name, url)
        elif change == "drain":
            answer = admin.drain_server(name)
        else:
            answer = admin.remove_server(name)
        self.post_message(MembershipChanged(name, change, answer.get("epoch")))

    def on_membership_changed(self, message: MembershipChanged):
        done = {"add": "added", "drain": "draining", "remove": "removed"}[message.change]
        self.notify(f"{message.server} {'is ' if message.change == 'drain' else ''}{done} "
                    f"(membership epoch {message.epoch})", title="Servers")
        self.poll()
