"""The Files screen: a folder tree, the current folder's table, transfers with progress bars.

It composes the parts of this package: the listing model (``listing``), the table and the
tree widgets, the catalogue reader (``catalogue``) and the transfers (``transfers``). Every
network call runs in a thread worker and comes back as a message; errors become
notifications.
"""
import time
import weakref
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import WorkerState, get_current_worker

from securifile.tui.errors import describe
from securifile.tui.polling import PollWhileShown
from securifile.tui.screens.dialogs import NamePrompt
from securifile.tui.screens.sharing import SharingScreen
from securifile.tui.widgets.status import SessionBar
from securifile.tui.widgets.transfers import TransfersPanel

from .catalogue import PAGE, CatalogueReader
from .questions import NEW_FOLDER_HELP
from .listing import SHARED, FolderListing, FolderRef, file_of, folder_key
from .table import WIDE, FileTable, detail_text
from .transfers import FileTransfers
from .tree import FolderTree


# How often the folder shown is read again while the screen is in sight: files that other
# clients upload or delete, and grants given meanwhile, show without ctrl+r.
POLL_SECONDS = 5.0


class FilesScreen(PollWhileShown, Screen):
    """My files and the files shared with me.

    ``local_dir``: where the local pickers start (the current directory by default);
    ``tz``: the zone times are shown in (the local one by default); ``poll_seconds``: how
    often the folder shown is read again (None: only on ctrl+r); the polls' errors go to
    the app's ``report_error`` (``errors.ErrorReports``), once per outage.
    """

    TITLE = "Files"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]
    DEFAULT_CSS = """
    FilesScreen {
        #files-body { height: 1fr; }
        #folder-tree {
            width: 20;
            height: 100%;
            border-right: vkey $foreground 20%;
            scrollbar-size-vertical: 1;
        }
        &.-wide #folder-tree { width: 26; }
        #files-main { width: 1fr; height: 100%; }
        #files-location {
            height: 1;
            padding: 0 1;
            background: $boost;
            color: $text-muted;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
        #files-table { height: 1fr; }
        #files-detail {
            height: auto;
            max-height: 8;
            padding: 0 1;
            border-top: hkey $foreground 20%;
            display: none;
        }
        #files-detail.-shown { display: block; }
    }
    """
    BINDINGS = [
        Binding("u", "upload_file", "Upload", tooltip="Upload a local file into this folder",
                id="files.upload_file"),
        Binding("U", "upload_folder", "Upload dir", key_display="U",
                tooltip="Upload a local folder and everything in it", id="files.upload_folder"),
        Binding("d", "download", "Download",
                tooltip="Download the highlighted file or folder", id="files.download"),
        Binding("n", "new_folder", "New folder", id="files.new_folder",
                tooltip="Make a folder here (kept once a file is uploaded into it)"),
        Binding("delete,x", "delete", "Delete", tooltip="Delete the highlighted file or folder",
                id="files.delete"),
        Binding("s", "share", "Share", tooltip="See and change who has access",
                id="files.share"),
        Binding("i", "details", "Info", tooltip="Digest, origin and replicas of the file",
                id="files.details"),
        Binding("e", "replace", "Replace",
                tooltip="Upload a new version of the highlighted file", id="files.replace"),
        Binding("backspace", "parent", "Up", tooltip="Go to the enclosing folder",
                id="files.parent"),
        Binding("m", "more", "More", tooltip="Load the next page of a large folder",
                id="files.more"),
        Binding("c", "cancel_transfer", "Cancel", tooltip="Cancel the latest transfer",
                id="files.cancel"),
        Binding("ctrl+r", "refresh", "Refresh", id="files.refresh",
                tooltip="Ask the admin server for this folder and the grants again"),
    ]

    class Listed(Message):
        """A listing came back: ``mode`` is open (new folder), more (next page), refresh or
        poll; a poll's ``shown`` is how many listings had been shown when it was asked."""

        def __init__(self, ref, listing, mode, generation, shown=None):
            super().__init__()
            self.ref, self.listing, self.mode, self.generation = ref, listing, mode, generation
            self.shown = shown

    class SubfoldersLoaded(Message):
        def __init__(self, ref, folders):
            super().__init__()
            self.ref, self.folders = ref, folders

    class SharedLoaded(Message):
        def __init__(self, grants):
            super().__init__()
            self.grants = grants

    class Removed(Message):
        """Files were deleted: drop their rows now, before the catalogue catches up."""

        def __init__(self, targets):
            super().__init__()
            self.targets = targets

    def __init__(self, session, *, local_dir=None, tz=None, poll_seconds=POLL_SECONDS,
                 name=None, id=None):
        super().__init__(name=name, id=id)
        self.poll_seconds = poll_seconds
        self._polls = weakref.WeakSet()  # the polls' workers (their errors may come late)
        self.session = session
        self.me = session.username
        self.local_dir = Path(local_dir) if local_dir else Path.cwd()
        self.tz = tz
        self.listing = FolderListing(self.me)
        self.catalogue = CatalogueReader(session)
        self.jobs = FileTransfers(self, self.catalogue)

    # -- layout --

    def compose(self) -> ComposeResult:
        yield SessionBar("Files", self.session)
        with Horizontal(id="files-body"):
            yield FolderTree("Folders", id="folder-tree")
            with Vertical(id="files-main"):
                yield Static("", id="files-location", markup=False)
                yield FileTable(id="files-table", cursor_type="row", zebra_stripes=True)
                yield Static("", id="files-detail", markup=False)
        self._transfers = TransfersPanel(id="transfers")
        yield self._transfers
        yield Footer(compact=True)

    @property
    def table(self):
        return self.query_one("#files-table", FileTable)

    @property
    def tree(self):
        return self.query_one("#folder-tree", FolderTree)

    @property
    def transfers(self):
        return self._transfers

    def on_mount(self):
        if self.tz is None:
            self.tz = getattr(self.app, "tz", None)  # the app shell may fix the zone shown
        self.table.tz = self.tz
        self.table.add_file_columns(self.app.size.width)
        self.tree.move_cursor(self.tree.add_roots(self.me))
        self.table.focus()
        self.load_shared()
        self.open_folder(FolderRef(self.me))
        if self.poll_seconds:
            self.start_polling()

    def on_screen_suspend(self):
        self.pause_polling()  # a dialog or another screen in front: nothing to show it on

    def on_screen_resume(self):
        self.resume_polling()

    # -- where we are --

    @property
    def folder(self):
        """The folder shown (a FolderRef, or SHARED)."""
        return self.listing.folder

    def current_entry(self):
        key = self.table.highlighted_key
        return self.listing.entries.get(key) if key is not None else None

    def open_folder(self, ref, select=None):
        """Show ``ref`` (a FolderRef or SHARED); ``select``: a row key to highlight once loaded."""
        self.listing.open(ref, select)
        self.table.clear()
        self._show_detail()
        self._set_location(f"{self.listing.where} · loading…")
        self.refresh_bindings()
        self.load_folder(ref, "open", self.listing.generation)

    # -- workers --

    @work(thread=True, exit_on_error=False, exclusive=True, group="listing")
    def load_folder(self, ref, mode, generation, after=None, at_least_files=0, shown=None):
        if ref == SHARED:
            grants = self.session.admin.shared()
            listing = {"grants": grants, "next": None}
            if not get_current_worker().is_cancelled:
                self.post_message(self.SharedLoaded(grants))
        else:
            listing = self.catalogue.page(ref, after, at_least_files)
        if not get_current_worker().is_cancelled:
            self.post_message(self.Listed(ref, listing, mode, generation, shown))

    @work(thread=True, exit_on_error=False, group="shared")
    def load_shared(self):
        self.post_message(self.SharedLoaded(self.session.admin.shared()))

    @work(thread=True, exit_on_error=False, group="subfolders")
    def load_subfolders(self, ref):
        listing = self.session.admin.files(ref.prefix, limit=1)
        self.post_message(self.SubfoldersLoaded(ref, listing.get("folders", [])))

    def on_unmount(self):
        self.jobs.close()

    def on_worker_state_changed(self, event):
        if event.state == WorkerState.ERROR:
            title, message = describe(event.worker.error)
            if event.worker in self._polls:  # said once per outage, not every poll
                self.app.report_error(event.worker.error, source="files")
            else:
                self.notify(message, title=title, severity="error")
            if event.worker.group == "listing":
                self.listing.loading_more = False
                self._set_location(f"{self.listing.where} · could not load: {message} "
                                   f"(ctrl+r retries)")

    # -- results --

    def on_files_screen_shared_loaded(self, message):
        self.listing.shared = message.grants
        self.tree.sync_shared(message.grants)
        if self.listing.folder != SHARED:
            for entry in self.listing.shared_roles_changed():
                self.table.update_cell(entry.key, "role", entry.role or "")
            self._update_location()
        self.refresh_bindings()

    def on_files_screen_listed(self, message):
        ref, listing, model = message.ref, message.listing, self.listing
        if message.mode == "poll" and (ref != model.folder or message.shown != model.shown):
            return  # older than a listing shown since (an upload's, once it had settled)
        if ref != SHARED and message.mode != "more":
            self.tree.relabel(model.keep_real(ref, listing), model.pending)
            self.tree.sync_children(ref, listing.get("folders", []), model.pending)
        if ref != model.folder:
            return
        if message.generation is not None and message.generation != model.generation:
            return  # an answer for a visit to this folder that has since been left
        model.shown += 1
        self.app.clear_error("files")
        entries = model.entries_from(ref, listing, message.mode, time.monotonic())
        model.loading_more = False  # a refresh replaces a page load it overtook
        if message.mode == "more":
            for entry in model.add_page(entries):
                self.table.add_entry(entry)
        else:
            complete = not listing.get("next")
            last = max((e.target for e in entries if not e.is_folder), default="")
            self.table.apply(*model.merge(entries, complete, last))
        model.next = listing.get("next")
        select = model.select_after_load
        if select and select in model.entries:
            self.table.move_cursor(row=self.table.get_row_index(select))
            model.select_after_load = None
        self._update_location()
        self._show_detail()
        self.refresh_bindings()

    def on_files_screen_subfolders_loaded(self, message):
        self.tree.sync_children(message.ref, message.folders, self.listing.pending)

    def on_files_screen_removed(self, message):
        for key in self.listing.forget(message.targets, time.monotonic()):
            self.table.remove_row(key)
        self._update_location()
        self._show_detail()
        self.refresh_bindings()

    # -- the tree and the table --

    def on_folder_tree_chosen(self, message):
        self.open_folder(message.folder, select=message.select)

    def on_folder_tree_unfolded(self, message):
        self.load_subfolders(message.folder)

    @on(DataTable.RowSelected, "#files-table")
    def _row_selected(self, event):
        entry = self.listing.entries.get(event.row_key.value)
        if entry is None:
            return
        if entry.is_folder:
            self.open_folder(entry.folder)
        elif entry.record is None:
            self.open_folder(file_of(entry.target)[0], select=entry.key)
        else:
            self.action_details()

    @on(DataTable.RowHighlighted, "#files-table")
    def _row_highlighted(self, event):
        self._show_detail()
        self.refresh_bindings()
        if event.cursor_row >= self.table.row_count - 1:
            self._maybe_load_more()

    @on(FileTable.NearEnd)
    def _near_end(self):
        self._maybe_load_more()

    def _maybe_load_more(self):
        if self.listing.wants_more():
            self.listing.loading_more = True
            self.load_folder(self.listing.folder, "more", self.listing.generation,
                             after=self.listing.next)

    @on(TransfersPanel.Finished)
    def _transfer_finished(self):
        self.refresh_bindings()

    def check_action(self, action, parameters):
        if not self.is_mounted:
            return True
        return self.listing.allows(action, self.current_entry(), self.transfers.running)

    # -- actions --

    def action_refresh(self):
        here = self.listing.folder
        self.load_shared()
        if here == SHARED:
            self.load_folder(SHARED, "refresh", None)
        else:
            self.load_folder(here, "refresh", None, at_least_files=self.listing.file_count)
        for ref in self.tree.open_folders():
            if ref != here:
                self.load_subfolders(ref)

    def poll(self):
        """Read the folder shown and my grants again, quietly, unless a listing is on its
        way. A folder read past its first page waits for ctrl+r: every page again each
        time would load the admin server for rows out of sight."""
        model = self.listing
        if model.loading_more or self.working("listing"):
            return
        self._polls.add(self.load_shared())
        if model.folder == SHARED or model.file_count <= PAGE:
            self._polls.add(self.load_folder(model.folder, "poll", None, shown=model.shown))

    def action_more(self):
        self._maybe_load_more()

    def action_parent(self):
        here = self.listing.folder
        if here == SHARED:
            return
        if here.parent is not None:
            self.open_folder(here.parent, select=folder_key(here))
        elif here.owner != self.me:
            self.open_folder(SHARED, select=folder_key(here))

    def action_details(self):
        self.query_one("#files-detail", Static).toggle_class("-shown")
        self._show_detail()

    def action_share(self):
        entry = self.current_entry()
        if entry is not None:
            target, role = entry.target, entry.role
        elif self.listing.folder != SHARED:
            target, role = self.listing.folder.prefix, self.listing.role()
        else:
            return
        self.app.push_screen(SharingScreen(self.session, target, role=role))

    def action_cancel_transfer(self):
        if self.transfers.cancel_latest():
            self.notify("Cancelling the latest transfer…", title="Cancel")

    def action_new_folder(self):
        here = self.listing.folder
        if here == SHARED:
            return

        def created(name):
            if not name:
                return
            ref = here.child(name)
            self.listing.pending.add(ref)
            self.tree.sync_children(here, [e.folder.path for e in self.listing.entries.values()
                                           if e.is_folder and not e.pending],
                                    self.listing.pending)
            self.notify(f"{ref.prefix} is shown until you upload a file into it; a folder "
                        f"is kept while it holds files.", title="New folder")
            self.open_folder(ref)

        self.app.push_screen(NamePrompt(
            "New folder", f"Name of the new folder in {here.prefix}:",
            check=self.listing.new_folder_problem,
            help_text=NEW_FOLDER_HELP), created)

    def action_upload_file(self):
        if self.listing.folder != SHARED:
            self.jobs.ask_upload(self.listing.folder, folder=False)

    def action_upload_folder(self):
        if self.listing.folder != SHARED:
            self.jobs.ask_upload(self.listing.folder, folder=True)

    def action_replace(self):
        entry = self.current_entry()
        if entry is not None and not entry.is_folder:
            self.jobs.ask_replace(entry, self.listing.folder)

    def action_download(self):
        entry = self.listing.to_download(self.current_entry())
        if entry is None:
            return
        if entry.pending:
            self.notify("This new folder holds no files yet.", severity="warning")
            return
        self.jobs.ask_download(entry)

    def action_delete(self):
        entry = self.current_entry()
        if entry is not None and self.listing.allows("delete", entry, self.transfers.running):
            self.jobs.ask_delete(entry, self.listing.folder)

    # -- the status line and the detail pane --

    def _set_location(self, text):
        self.query_one("#files-location", Static).update(text)

    def _update_location(self):
        self._set_location(self.listing.summary())

    def _show_detail(self):
        pane = self.query_one("#files-detail", Static)
        if pane.has_class("-shown"):
            pane.update(detail_text(self.current_entry(), self.tz))

    # What the pilot tests look at: the listing's state, under the names it had here.
    _entries = property(lambda self: self.listing.entries)
    _pending = property(lambda self: self.listing.pending)
    _shared = property(lambda self: self.listing.shared)
    _next = property(lambda self: self.listing.next)
    _file_count = property(lambda self: self.listing.file_count)
