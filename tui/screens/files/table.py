"""The folder's table, updated in place by row key, and what a row and the detail pane say."""
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from securifile.tui.format import date_time, human_size
from securifile.tui.widgets.table import cursor_row_key

# (label, key, width): fixed widths keep the layout still while pages of rows arrive; the
# name takes what is left (within limits) once the columns that must show are placed.
COLUMNS = (("Name", "name", None), ("Size", "size", 9), ("Role", "role", 6),
           ("Modified", "modified", 16), ("Ver", "version", 3), ("Owner", "owner", 8),
           ("Replicas", "replicas", 12))
WIDE = 110  # from this terminal width on, every column shows beside the tree


def by_priority(record):
    return sorted(record.get("replicas", []), key=lambda r: r.get("priority", 0))


class FileTable(DataTable):
    """The folder's table; tells the screen when the view has been scrolled to the end.

    ``tz``: the zone times are shown in (None: the local one).
    """

    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]

    class NearEnd(Message):
        pass

    tz = None

    def watch_scroll_y(self, old_value, new_value):
        super().watch_scroll_y(old_value, new_value)
        if new_value > old_value and self.max_scroll_y and new_value >= self.max_scroll_y - 1:
            self.post_message(self.NearEnd())

    def add_file_columns(self, terminal_width):
        """The columns that fit beside the tree: all of them on a wide terminal."""
        wide = terminal_width >= WIDE
        tree = 26 if wide else 20
        available = terminal_width - tree - 2  # the tree's border and the table's scrollbar
        shown = COLUMNS[1:] if wide else COLUMNS[1:4]  # narrow: size, role, modified
        name = available - sum(width + 2 for _, _, width in shown) - 2
        for label, key, width in COLUMNS:
            self.add_column(label, key=key, width=width or max(16, min(name, 48)))

    @property
    def highlighted_key(self):
        return cursor_row_key(self)

    def cells(self, entry):
        if entry.is_folder:
            name = Text(entry.name + "/", style="bold", overflow="ellipsis", no_wrap=True)
            size = Text("new" if entry.pending else "", style="italic")
            return (name, size, entry.role or "", "", "", entry.owner, "")
        record = entry.record or {}
        copies = ", ".join(r["server"] for r in by_priority(record))
        if record.get("under_replicated"):
            copies = Text(f"{copies or 'none'} !", style="bold")
        size = record.get("size")
        return (Text(entry.name, overflow="ellipsis", no_wrap=True),
                Text(human_size(size) if size is not None else "", justify="right"),
                entry.role or "",
                date_time(record["modified"], self.tz) if record.get("modified") else "",
                str(record.get("version", "")), entry.owner, copies)

    def add_entry(self, entry):
        self.add_row(*self.cells(entry), key=entry.key)

    def apply(self, removed, added, changed):
        """Show a merge (``FolderListing.merge``): drop, add, update the cells that differ."""
        for key in removed:
            self.remove_row(key)
        for entry in added:
            self.add_entry(entry)
        for old, new in changed:
            for (_, column, _), before, after in zip(COLUMNS, self.cells(old), self.cells(new)):
                if before != after:
                    self.update_cell(new.key, column, after)
        if added and self.row_count > 1:
            self.sort("name", key=lambda name: (not str(name).endswith("/"), str(name)))


def detail_text(entry, tz):
    """The detail pane for the highlighted row (i): digest, origin, replicas, times."""
    if entry is None:
        return "Nothing highlighted."
    if entry.is_folder:
        state = ("new: it is kept once a file is uploaded into it" if entry.pending
                 else "enter opens it, d downloads it whole")
        return f"Folder {entry.target}\nYour role: {entry.role or 'none'} · {state}"
    if entry.record is None:
        return (f"File {entry.target}\nShared with you as {entry.role}; enter opens "
                f"its folder for size, digest and replicas.")
    r = entry.record
    copies = ", ".join(f"{p['server']} (priority {p['priority']})" for p in by_priority(r))
    health = "under-replicated" if r.get("under_replicated") else "fully replicated"
    return (f"{entry.target}\n"
            f"{human_size(r.get('size'))} ({r.get('size')} bytes) · version {r.get('version')}"
            f" · modified {date_time(r.get('modified'), tz)}"
            f" · created {date_time(r.get('created'), tz)}\n"
            f"{(r.get('algorithm') or 'digest').upper()} {r.get('digest')}\n"
            f"Origin {r.get('origin')} · replicas {copies or 'none'} · {health}"
            f" · your role {entry.role}")
