"""The Files screen: a folder tree, the current folder's table, transfers with progress bars.

Listings come from the admin server (``AdminClient.files``, which reads the SQL catalogue),
500 rows a page, the next page fetched when the cursor or the scroll reaches the end; file
bytes go to and from the storage nodes through ``Client``. Every network call runs in a
thread worker and comes back as a message; errors become notifications.

Nodes report new and deleted files to the admin server about once a second, so after an
upload or a deletion the screen asks the catalogue again for a few seconds until it agrees.

A folder exists while it holds a file. "New folder" therefore makes a *pending* folder that
lives in this screen only, marked "new", until a file is uploaded into it.
"""
import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static, Tree
from textual.worker import WorkerState, get_current_worker
from textual_fspicker import FileOpen, SelectDirectory

from securifile.client.admin import PAGE as ADMIN_PAGE
from securifile.client.errors import ClientError, TransferCancelled
from securifile.client.files import parse_remote, plan_download
from securifile.tui.errors import describe
from securifile.tui.format import date_time, human_size
from securifile.tui.screens.dialogs import ConfirmScreen
from securifile.tui.screens.sharing import OWNER, SharingScreen, at_least, role_on
from securifile.tui.widgets.status import SessionBar
from securifile.tui.widgets.transfers import CANCELLED, DONE, FAILED, TransfersPanel

PAGE = ADMIN_PAGE  # rows a listing page asks for; more load as the cursor nears the end
# How long to keep asking the catalogue after a change before showing what it says anyway.
CATALOGUE_WAIT = 8.0
CATALOGUE_POLL = 0.25
SETTLE_WINDOW = 2 * 500  # files re-read per poll while waiting; later pages stay as loaded
# A deleted file stays hidden this long even if a listing still names it (reports lag).
GONE_SECONDS = 15.0
# (label, key, width): fixed widths keep the layout still while pages of rows arrive; the
# name takes what is left (within limits) once the columns that must show are placed.
COLUMNS = (("Name", "name", None), ("Size", "size", 9), ("Role", "role", 6),
           ("Modified", "modified", 16), ("Ver", "version", 3), ("Owner", "owner", 8),
           ("Replicas", "replicas", 12))
WIDE = 110  # from this terminal width on, every column shows beside the tree


@dataclass(frozen=True, order=True)
class FolderRef:
    """A folder: ``path`` is relative to the owner's namespace, without slashes at the ends."""

    owner: str
    path: str = ""

    @property
    def prefix(self):
        """``alice/docs/``: the listing prefix and the grant target."""
        return f"{self.owner}/{self.path}/" if self.path else f"{self.owner}/"

    @property
    def name(self):
        return self.path.rsplit("/", 1)[-1] if self.path else self.owner

    @property
    def parent(self):
        if not self.path:
            return None
        return FolderRef(self.owner, self.path.rpartition("/")[0])

    @property
    def role_path(self):
        """The path roles are asked for: '' for the namespace, 'docs/' for a folder."""
        return f"{self.path}/" if self.path else ""

    def child(self, name):
        return FolderRef(self.owner, f"{self.path}/{name}" if self.path else name)

    def __str__(self):
        return self.prefix


SHARED = "shared"  # the virtual folder "Shared with me"


@dataclass
class Entry:
    """One row of the table: a file, or a folder (real or pending)."""

    kind: str  # "file" or "folder"
    name: str
    owner: str
    target: str  # the remote file path, or the folder prefix ending in '/'
    role: str | None = None
    record: dict | None = None  # the catalogue's file record (None for grants-only rows)
    folder: FolderRef | None = None
    pending: bool = False

    @property
    def key(self):
        return ("d:" if self.kind == "folder" else "f:") + self.target

    @property
    def is_folder(self):
        return self.kind == "folder"


@dataclass
class TreeItem:
    kind: str  # "folder", "shared" (the root of grants) or "file" (a file shared with me)
    folder: FolderRef | None = None
    target: str | None = None
    loaded: bool = False


def folder_key(ref):
    return "d:" + ref.prefix


class FileTable(DataTable):
    """The folder's table; tells the screen when the view has been scrolled to the end."""

    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]

    class NearEnd(Message):
        pass

    def watch_scroll_y(self, old_value, new_value):
        super().watch_scroll_y(old_value, new_value)
        if new_value > old_value and self.max_scroll_y and new_value >= self.max_scroll_y - 1:
            self.post_message(self.NearEnd())


class NamePrompt(ModalScreen[str | None]):
    """Asks for a name; ``check(name)`` returns what is wrong with it, or None."""

    DEFAULT_CSS = """
    NamePrompt {
        align: center middle;
        & > Vertical {
            width: 64;
            max-width: 100%;
            height: auto;
            border: thick $primary 80%;
            background: $surface;
            padding: 1 2 0 2;
        }
        .prompt-title { text-style: bold; margin-bottom: 1; }
        #prompt-error { color: $error; height: auto; }
        #prompt-help { color: $text-muted; margin-top: 1; }
        .prompt-buttons { height: auto; align-horizontal: right; margin: 1 0; }
        .prompt-buttons Button { margin-left: 2; }
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, title, question, *, help_text="", check=None, yes="Create"):
        super().__init__()
        self.title_text, self.question, self.help_text = title, question, help_text
        self.check, self.yes = check, yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="prompt-title")
            yield Label(self.question, markup=False)
            yield Input(id="prompt-name")
            yield Static("", id="prompt-error", markup=False)
            if self.help_text:
                yield Static(self.help_text, id="prompt-help", markup=False)
            with Horizontal(classes="prompt-buttons"):
                yield Button("Cancel (esc)", id="cancel", compact=True)
                yield Button(f"{self.yes} (enter)", id="ok", variant="primary", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _submit(self, event):
        event.stop()
        name = self.query_one("#prompt-name", Input).value.strip()
        problem = "A name is needed." if not name else (self.check(name) if self.check else None)
        if problem:
            self.query_one("#prompt-error", Static).update(problem)
        else:
            self.dismiss(name)

    @on(Input.Changed)
    def _clear_error(self):
        self.query_one("#prompt-error", Static).update("")

    @on(Button.Pressed, "#cancel")
    def action_cancel(self):
        self.dismiss(None)


class FilesScreen(Screen):
    """My files and the files shared with me.

    ``local_dir``: where the local pickers start (the current directory by default);
    ``tz``: the zone times are shown in (the local one by default).
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
        """A listing came back: ``mode`` is open (new folder), more (next page) or refresh."""

        def __init__(self, ref, listing, mode, generation):
            super().__init__()
            self.ref, self.listing, self.mode, self.generation = ref, listing, mode, generation

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

    def __init__(self, session, *, local_dir=None, tz=None, name=None, id=None):
        super().__init__(name=name, id=id)
        self.session = session
        self.me = session.username
        self.local_dir = Path(local_dir) if local_dir else Path.cwd()
        self.tz = tz
        self._folder = FolderRef(self.me)
        self._generation = 0
        self._entries = {}  # row key -> Entry, for the rows in the table
        self._next = None  # the cursor of the next page, None when the folder is complete
        self._loading_more = False
        self._shared = []
        self._pending = set()  # FolderRefs made with "New folder", until a file lands in them
        self._gone = {}  # deleted remote path -> until when (monotonic) to hide it
        self._tree_nodes = {}  # FolderRef -> [TreeNode] showing it
        self._file_count = 0  # file rows loaded; workers read it to refresh as many
        self._select_after_load = None
        self._closing = False

    # -- layout --

    def compose(self) -> ComposeResult:
        yield SessionBar("Files", self.session)
        with Horizontal(id="files-body"):
            tree = Tree("Folders", id="folder-tree")
            tree.show_root = False
            tree.guide_depth = 2
            yield tree
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
        return self.query_one("#folder-tree", Tree)

    @property
    def transfers(self):
        return self._transfers

    def on_mount(self):
        if self.tz is None:
            self.tz = getattr(self.app, "tz", None)  # the app shell may fix the zone shown
        self._add_columns(self.app.size.width)
        mine = self.tree.root.add(f"{self.me} (my files)", TreeItem("folder", FolderRef(self.me)),
                                  expand=True)
        self._register_node(FolderRef(self.me), mine)
        self.tree.root.add("Shared with me", TreeItem("shared"), expand=False)
        self.tree.move_cursor(mine)
        self.table.focus()
        self.load_shared()
        self.open_folder(FolderRef(self.me))

    def _add_columns(self, terminal_width):
        wide = terminal_width >= WIDE
        tree = 26 if wide else 20
        available = terminal_width - tree - 2  # the tree's border and the table's scrollbar
        shown = COLUMNS[1:] if wide else COLUMNS[1:4]  # narrow: size, role, modified
        name = available - sum(width + 2 for _, _, width in shown) - 2
        for label, key, width in COLUMNS:
            self.table.add_column(label, key=key, width=width or max(16, min(name, 48)))

    # -- where we are --

    @property
    def folder(self):
        """The folder shown (a FolderRef, or SHARED)."""
        return self._folder

    def folder_role(self, ref=None):
        ref = self._folder if ref is None else ref
        if ref == SHARED:
            return None
        return role_on(self.me, self._shared, ref.owner, ref.role_path)

    def current_entry(self):
        table = self.table
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return self._entries.get(key.value) if key is not None else None

    def open_folder(self, ref, select=None):
        """Show ``ref`` (a FolderRef or SHARED); ``select``: a row key to highlight once loaded."""
        self._folder = ref
        self._generation += 1
        self._next = None
        self._loading_more = False
        self._select_after_load = select
        self._file_count = 0
        self._entries.clear()
        self.table.clear()
        self._show_detail()
        where = "Shared with me" if ref == SHARED else ref.prefix
        self._set_location(f"{where} · loading…")
        self.refresh_bindings()
        self.load_folder(ref, "open", self._generation)

    # -- workers --

    def _fetch(self, ref, after=None, at_least_files=0):
        """One page of ``ref`` (or enough pages for ``at_least_files`` files), from the catalogue."""
        admin = self.session.admin
        first = admin.files(ref.prefix, limit=PAGE, after=after)
        files, page = list(first.get("files", [])), first
        while page.get("next") and len(files) < at_least_files:
            page = admin.files(ref.prefix, limit=PAGE, after=page["next"])
            files += page.get("files", [])
        return {"files": files, "folders": first.get("folders", []), "next": page.get("next")}

    @work(thread=True, exit_on_error=False, exclusive=True, group="listing")
    def load_folder(self, ref, mode, generation, after=None, at_least_files=0):
        if ref == SHARED:
            grants = self.session.admin.shared()
            listing = {"grants": grants, "next": None}
            if not get_current_worker().is_cancelled:
                self.post_message(self.SharedLoaded(grants))
        else:
            listing = self._fetch(ref, after, at_least_files)
        if not get_current_worker().is_cancelled:
            self.post_message(self.Listed(ref, listing, mode, generation))

    @work(thread=True, exit_on_error=False, group="shared")
    def load_shared(self):
        self.post_message(self.SharedLoaded(self.session.admin.shared()))

    @work(thread=True, exit_on_error=False, group="subfolders")
    def load_subfolders(self, ref):
        listing = self.session.admin.files(ref.prefix, limit=1)
        self.post_message(self.SubfoldersLoaded(ref, listing.get("folders", [])))

    def _settle(self, ref, present=(), absent=(), folders_present=(), folders_absent=()):
        """Ask the catalogue about ``ref`` until it shows the change (or time runs out).

        Runs in a worker after an upload or a deletion, then posts the listing as a refresh.
        """
        if ref == SHARED:
            return
        deadline = time.monotonic() + CATALOGUE_WAIT
        window = min(self._file_count, SETTLE_WINDOW)
        while True:
            listing = self._fetch(ref, at_least_files=window)
            paths = {f"{r['owner']}/{r['path']}" for r in listing["files"]}
            last = max(paths) if paths else ""
            names = {ref.child(p.rsplit("/", 1)[-1]).prefix for p in listing["folders"]}
            settled = (all(p in paths or (listing["next"] and p > last) for p in present)
                       and not any(p in paths for p in absent)
                       and all(f in names for f in folders_present)
                       and not any(f in names for f in folders_absent))
            if settled or self._closing or time.monotonic() > deadline:
                break
            time.sleep(CATALOGUE_POLL)
        self.post_message(self.Listed(ref, listing, "refresh", None))

    def _ui(self, callback, *args, **kwargs):
        """Run ``callback`` on the UI thread (from a worker) and wait for it."""
        if self._closing:
            return None
        try:
            return self.app.call_from_thread(callback, *args, **kwargs)
        except RuntimeError:  # the app is shutting down: nobody is left to tell
            return None

    def on_unmount(self):
        """Leaving (the app quits): stop transfers, or their threads would keep it alive."""
        self._closing = True
        self.transfers.cancel_all()

    def _end_transfer(self, transfer, state, detail, note=None, severity="information"):
        self._ui(self.transfers.finish, transfer, state, detail)
        if note:
            self._ui(self.notify, note, severity=severity,
                     title={DONE: "Done", FAILED: "Failed", CANCELLED: "Cancelled"}[state])

    @work(thread=True, exit_on_error=False, group="transfer")
    def upload(self, local, remote, transfer, ref, folder=False):
        client = self.session.client
        stored = []
        try:
            if folder:
                client.put_tree(local, remote, progress=transfer.progress, cancel=transfer.cancel,
                                on_file=lambda _l, r, _rec: stored.append(r))
            else:
                client.put(local, remote, progress=transfer.progress, cancel=transfer.cancel)
                stored.append(remote)
        except TransferCancelled:
            kept = (f"; {len(stored)} file{'s' if len(stored) != 1 else ''} already uploaded "
                    f"stay" if stored else "; nothing was stored")
            self._end_transfer(transfer, CANCELLED, "cancelled",
                               f"Upload of {local.name} cancelled{kept}.", "warning")
        except (ClientError, OSError) as e:
            title, message = describe(e)
            self._end_transfer(transfer, FAILED, "failed", f"{local.name}: {message}", "error")
        else:
            self._end_transfer(transfer, DONE, "done")
        if stored:
            if folder:
                self._settle(ref, folders_present=[remote.rstrip("/") + "/"])
            else:
                self._settle(ref, present=stored)

    @work(thread=True, exit_on_error=False, group="transfer")
    def download(self, entry, local, transfer):
        client = self.session.client
        try:
            if entry.is_folder:
                files, after = [], None
                while True:
                    page = self.session.admin.files(entry.target, recursive=True, limit=PAGE,
                                                    after=after)
                    files += page.get("files", [])
                    after = page.get("next")
                    if not after:
                        break
                plan = plan_download(files, entry.target, local)
                total = sum(size for _, _, size in plan)
                base = 0
                transfer.progress(0, total)
                for remote, path, size in plan:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    client.get(remote, path, cancel=transfer.cancel,
                               progress=lambda d, t, b=base: transfer.progress(b + d, total))
                    base += size
                local.mkdir(parents=True, exist_ok=True)
                detail = f"{len(plan)} files"
            else:
                client.get(entry.target, local, progress=transfer.progress, cancel=transfer.cancel)
                detail = "done"
        except TransferCancelled:
            self._end_transfer(transfer, CANCELLED, "cancelled",
                               f"Download of {entry.name} cancelled.", "warning")
        except (ClientError, OSError) as e:
            title, message = describe(e)
            self._end_transfer(transfer, FAILED, "failed", f"{entry.name}: {message}", "error")
        else:
            self._end_transfer(transfer, DONE, detail, f"Saved {entry.target} to {local}.")

    @work(thread=True, exit_on_error=False, group="transfer")
    def delete_file(self, entry, ref):
        self.session.client.delete(entry.target)
        self.post_message(self.Removed([entry.target]))
        self._ui(self.notify, f"Deleted {entry.target} from every server.", title="Deleted")
        self._settle(ref, absent=[entry.target])

    @work(thread=True, exit_on_error=False, group="transfer")
    def delete_folder(self, entry, ref, transfer):
        admin, client = self.session.admin, self.session.client
        targets, deleted, after = [], [], None
        try:
            while True:
                page = admin.files(entry.target, recursive=True, limit=PAGE, after=after)
                targets += [f"{r['owner']}/{r['path']}" for r in page.get("files", [])]
                after = page.get("next")
                if not after:
                    break
            transfer.progress(0, len(targets))
            for target in targets:
                if transfer.cancel.is_set():
                    raise TransferCancelled("deletion cancelled")
                client.delete(target)
                deleted.append(target)
                transfer.progress(len(deleted), len(targets))
        except TransferCancelled:
            self._end_transfer(transfer, CANCELLED, "cancelled",
                               f"Stopped deleting {entry.target}: {len(deleted)} of "
                               f"{len(targets)} files were deleted.", "warning")
        except (ClientError, OSError) as e:
            self._end_transfer(transfer, FAILED, "failed",
                               f"{entry.target}: {describe(e)[1]}", "error")
        else:
            self._end_transfer(transfer, DONE, f"{len(targets)} deleted",
                               f"Deleted {entry.target} ({len(targets)} files).")
            self._settle(ref, folders_absent=[entry.target])
            return
        if deleted:
            self.post_message(self.Removed(deleted))
            self._settle(ref)

    def on_worker_state_changed(self, event):
        if event.state == WorkerState.ERROR:
            title, message = describe(event.worker.error)
            self.notify(message, title=title, severity="error")
            if event.worker.group == "listing":
                self._loading_more = False
                where = "Shared with me" if self._folder == SHARED else self._folder.prefix
                self._set_location(f"{where} · could not load: {message} (ctrl+r retries)")

    # -- results --

    def on_files_screen_shared_loaded(self, message):
        self._shared = message.grants
        self._sync_shared_tree(message.grants)
        if self._folder != SHARED:
            for entry in self._entries.values():
                if entry.is_folder and entry.folder.owner != self.me:
                    role = self.folder_role(entry.folder)
                    if role != entry.role:
                        entry.role = role
                        self.table.update_cell(entry.key, "role", role or "")
            self._update_location()
        self.refresh_bindings()

    def on_files_screen_listed(self, message):
        ref, listing = message.ref, message.listing
        if ref != SHARED and message.mode != "more":
            # A pending folder is real once the catalogue has something in it.
            real = {FolderRef(ref.owner, p) for p in listing.get("folders", [])}
            if listing.get("files") or real:
                real.add(ref)
            if self._pending & real:
                self._pending -= real
                self._relabel_tree(real)
            self._sync_tree_children(ref, listing.get("folders", []))
        if ref != self._folder:
            return
        if message.generation is not None and message.generation != self._generation:
            return  # an answer for a visit to this folder that has since been left
        entries = self._entries_from(ref, listing, message.mode)
        self._loading_more = False  # a refresh replaces a page load it overtook
        if message.mode == "more":
            for entry in entries:
                if entry.key not in self._entries:
                    self._add_row(entry)
        else:
            complete = not listing.get("next")
            last = max((e.target for e in entries if not e.is_folder), default="")
            self._merge(entries, complete, last)
        self._next = listing.get("next")
        select = self._select_after_load
        if select and select in self._entries:
            self.table.move_cursor(row=self.table.get_row_index(select))
            self._select_after_load = None
        self._update_location()
        self._show_detail()
        self.refresh_bindings()

    def on_files_screen_subfolders_loaded(self, message):
        self._sync_tree_children(message.ref, message.folders)

    def on_files_screen_removed(self, message):
        until = time.monotonic() + GONE_SECONDS
        for target in message.targets:
            self._gone[target] = until
            key = "f:" + target
            if key in self._entries:
                self.table.remove_row(key)
                del self._entries[key]
        self._update_location()
        self._show_detail()
        self.refresh_bindings()

    def _entries_from(self, ref, listing, mode):
        if ref == SHARED:
            return [self._grant_entry(g) for g in listing.get("grants", [])]
        entries = []
        if mode != "more":
            real = set()
            for path in listing.get("folders", []):
                child = FolderRef(ref.owner, path)
                real.add(child)
                entries.append(Entry("folder", child.name, child.owner, child.prefix,
                                     role=self.folder_role(child), folder=child))
            for pending in sorted(self._pending):
                if pending.parent == ref and pending not in real:
                    entries.append(Entry("folder", pending.name, pending.owner, pending.prefix,
                                         role=OWNER, folder=pending, pending=True))
        now = time.monotonic()
        lead = len(ref.path) + 1 if ref.path else 0
        for record in listing.get("files", []):
            target = f"{record['owner']}/{record['path']}"
            if self._gone.get(target, 0) > now:
                continue
            entries.append(Entry("file", record["path"][lead:], record["owner"], target,
                                 role=record.get("role"), record=record))
        return entries

    def _grant_entry(self, grant):
        owner, path = grant["owner"], grant.get("path", "")
        if not path or path.endswith("/"):
            ref = FolderRef(owner, path.rstrip("/"))
            return Entry("folder", ref.prefix.rstrip("/"), owner, ref.prefix, role=grant.get("role"),
                         folder=ref)
        return Entry("file", f"{owner}/{path}", owner, f"{owner}/{path}", role=grant.get("role"))

    # -- the table, updated in place by row key --

    def _cells(self, entry):
        if entry.is_folder:
            name = Text(entry.name + "/", style="bold", overflow="ellipsis", no_wrap=True)
            size = Text("new" if entry.pending else "", style="italic")
            return (name, size, entry.role or "", "", "", entry.owner, "")
        record = entry.record or {}
        replicas = sorted(record.get("replicas", []), key=lambda r: r.get("priority", 0))
        copies = ", ".join(r["server"] for r in replicas)
        if record.get("under_replicated"):
            copies = Text(f"{copies or 'none'} !", style="bold")
        size = record.get("size")
        return (Text(entry.name, overflow="ellipsis", no_wrap=True),
                Text(human_size(size) if size is not None else "", justify="right"),
                entry.role or "",
                date_time(record["modified"], self.tz) if record.get("modified") else "",
                str(record.get("version", "")), entry.owner, copies)

    def _add_row(self, entry):
        self.table.add_row(*self._cells(entry), key=entry.key)
        self._entries[entry.key] = entry

    def _merge(self, entries, complete, last):
        """Make the table show ``entries``: update changed cells, add and remove rows.

        Without ``complete`` the listing covers files up to ``last`` only; rows after it
        (loaded earlier as later pages) stay.
        """
        table = self.table
        fresh = {e.key: e for e in entries}
        for key, entry in list(self._entries.items()):
            if key not in fresh and (entry.is_folder or complete or entry.target <= last):
                table.remove_row(key)
                del self._entries[key]
        added = False
        for entry in entries:
            old = self._entries.get(entry.key)
            if old is None:
                self._add_row(entry)
                added = True
                continue
            for (_, column, _), before, after in zip(COLUMNS, self._cells(old), self._cells(entry)):
                if before != after:
                    table.update_cell(entry.key, column, after)
            self._entries[entry.key] = entry
        if added and len(self._entries) > 1:
            table.sort("name", key=lambda name: (not str(name).endswith("/"), str(name)))

    # -- the status line and the detail pane --

    def _set_location(self, text):
        self.query_one("#files-location", Static).update(text)

    def _update_location(self):
        if self._folder == SHARED:
            count = len(self._entries)
            self._set_location(f"Shared with me · {count} grant{'s' if count != 1 else ''} "
                               f"· enter opens, s shows the grants")
            return
        ref = self._folder
        folders = sum(1 for e in self._entries.values() if e.is_folder)
        files = self._file_count = len(self._entries) - folders
        role = self.folder_role()
        parts = [ref.prefix, f"you: {role}" if role else "shared items only",
                 f"{folders} folder{'s' if folders != 1 else ''}, {files} file{'s' if files != 1 else ''}"]
        if self._next:
            parts.append("more: m or scroll down")
        if ref in self._pending:
            parts.append("new folder: upload a file (u) to keep it")
        self._set_location(" · ".join(parts))

    def _show_detail(self):
        pane = self.query_one("#files-detail", Static)
        if not pane.has_class("-shown"):
            return
        entry = self.current_entry()
        if entry is None:
            pane.update("Nothing highlighted.")
        elif entry.is_folder:
            state = ("new: it is kept once a file is uploaded into it" if entry.pending
                     else "enter opens it, d downloads it whole")
            pane.update(f"Folder {entry.target}\nYour role: {entry.role or 'none'} · {state}")
        elif entry.record is None:
            pane.update(f"File {entry.target}\nShared with you as {entry.role}; enter opens "
                        f"its folder for size, digest and replicas.")
        else:
            r = entry.record
            replicas = sorted(r.get("replicas", []), key=lambda p: p.get("priority", 0))
            copies = ", ".join(f"{p['server']} (priority {p['priority']})" for p in replicas)
            health = "under-replicated" if r.get("under_replicated") else "fully replicated"
            pane.update(
                f"{entry.target}\n"
                f"{human_size(r.get('size'))} ({r.get('size')} bytes) · version {r.get('version')}"
                f" · modified {date_time(r.get('modified'), self.tz)}"
                f" · created {date_time(r.get('created'), self.tz)}\n"
                f"{(r.get('algorithm') or 'digest').upper()} {r.get('digest')}\n"
                f"Origin {r.get('origin')} · replicas {copies or 'none'} · {health}"
                f" · your role {entry.role}")

    # -- the folder tree --

    def _register_node(self, ref, node):
        self._tree_nodes.setdefault(ref, []).append(node)

    def _unregister_subtree(self, node):
        for child in node.children:
            self._unregister_subtree(child)
        item = node.data
        if item is not None and item.folder is not None:
            nodes = self._tree_nodes.get(item.folder, [])
            if node in nodes:
                nodes.remove(node)

    def _sync_tree_children(self, ref, folder_paths):
        """Make every tree node showing ``ref`` list its subfolders (plus pending ones)."""
        wanted = [FolderRef(ref.owner, p) for p in folder_paths]
        wanted += [p for p in self._pending if p.parent == ref and p not in wanted]
        wanted.sort()
        for node in list(self._tree_nodes.get(ref, [])):
            node.data.loaded = True
            have = {child.data.folder: child for child in node.children
                    if child.data is not None and child.data.folder is not None}
            for child_ref, child in have.items():
                if child_ref not in wanted:
                    self._unregister_subtree(child)
                    child.remove()
            for index, child_ref in enumerate(wanted):
                label = self._tree_label(child_ref)
                if child_ref in have:
                    have[child_ref].set_label(label)
                    continue
                following = next((have[w] for w in wanted[index + 1:] if w in have), None)
                child = node.add(label, TreeItem("folder", child_ref), before=following)
                self._register_node(child_ref, child)
            node.allow_expand = bool(wanted)

    def _relabel_tree(self, refs):
        for ref in refs:
            for node in self._tree_nodes.get(ref, []):
                if node.parent is not None and node.parent.data is not None \
                        and node.parent.data.kind == "folder":
                    node.set_label(self._tree_label(ref))

    def _tree_label(self, ref):
        label = Text(ref.name)
        if ref in self._pending:
            label.append(" (new)", style="italic")
        return label

    def _sync_shared_tree(self, grants):
        shared_node = next(n for n in self.tree.root.children if n.data.kind == "shared")
        wanted = []
        for grant in grants:
            owner, path = grant["owner"], grant.get("path", "")
            if not path or path.endswith("/"):
                ref = FolderRef(owner, path.rstrip("/"))
                wanted.append((ref.prefix, ref.prefix, TreeItem("folder", ref)))
            else:
                wanted.append((f"{owner}/{path}", f"{owner}/{path}",
                               TreeItem("file", target=f"{owner}/{path}")))
        have = {}
        for child in shared_node.children:
            item = child.data
            have[item.folder.prefix if item.folder else item.target] = child
        keys = [k for k, _, _ in wanted]
        for key, child in have.items():
            if key not in keys:
                self._unregister_subtree(child)
                child.remove()
        for key, label, item in wanted:
            if key in have:
                have[key].set_label(label)
                continue
            child = shared_node.add(label, item, allow_expand=item.kind == "folder")
            if item.folder is not None:
                self._register_node(item.folder, child)
        shared_node.allow_expand = bool(wanted)

    @on(Tree.NodeExpanded, "#folder-tree")
    def _node_expanded(self, event):
        item = event.node.data
        if item is not None and item.kind == "folder" and not item.loaded:
            self.load_subfolders(item.folder)

    @on(Tree.NodeSelected, "#folder-tree")
    def _node_selected(self, event):
        item = event.node.data
        if item is None:
            return
        if item.kind == "shared":
            self.open_folder(SHARED)
        elif item.kind == "folder":
            self.open_folder(item.folder)
        elif item.kind == "file":
            owner, _, path = item.target.partition("/")
            self.open_folder(FolderRef(owner, path.rpartition("/")[0]), select="f:" + item.target)

    # -- table events --

    @on(DataTable.RowSelected, "#files-table")
    def _row_selected(self, event):
        entry = self._entries.get(event.row_key.value)
        if entry is None:
            return
        if entry.is_folder:
            self.open_folder(entry.folder)
        elif entry.record is None:
            owner, _, path = entry.target.partition("/")
            self.open_folder(FolderRef(owner, path.rpartition("/")[0]), select=entry.key)
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
        if self._next and not self._loading_more and self._folder != SHARED:
            self._loading_more = True
            self.load_folder(self._folder, "more", self._generation, after=self._next)

    @on(TransfersPanel.Finished)
    def _transfer_finished(self):
        self.refresh_bindings()

    # -- what the caller may do here --

    def check_action(self, action, parameters):
        if not self.is_mounted:
            return True
        entry = self.current_entry()
        here = self._folder
        folder_role = self.folder_role()
        if action in ("upload_file", "upload_folder", "new_folder"):
            return here != SHARED and folder_role == OWNER
        if action == "delete":
            if entry is not None:
                return True if entry.role == OWNER and not entry.pending else False
            return None if folder_role == OWNER else False
        if action == "replace":
            if entry is not None and not entry.is_folder:
                return True if at_least(entry.role, "editor") else False
            return None if at_least(folder_role, "editor") else False
        if action == "download":
            return True if entry is not None and not entry.pending or here != SHARED else None
        if action == "share":
            return True if entry is not None or here != SHARED else None
        if action == "details":
            return True if entry is not None else None
        # These three show only while they apply, leaving the footer room at 80 columns.
        if action == "parent":
            return here != SHARED and bool(here.parent or here.owner != self.me)
        if action == "more":
            return bool(self._next and here != SHARED)
        if action == "cancel_transfer":
            return bool(self.transfers.running)
        return True

    # -- actions --

    def action_refresh(self):
        self.load_shared()
        if self._folder == SHARED:
            self.load_folder(SHARED, "refresh", None)
        else:
            self.load_folder(self._folder, "refresh", None, at_least_files=self._file_count)
        for ref, nodes in list(self._tree_nodes.items()):
            if any(n.data.loaded and n.is_expanded for n in nodes) and ref != self._folder:
                self.load_subfolders(ref)

    def action_more(self):
        self._maybe_load_more()

    def action_parent(self):
        here = self._folder
        if here == SHARED:
            return
        if here.parent is not None:
            self.open_folder(here.parent, select=folder_key(here))
        elif here.owner != self.me:
            self.open_folder(SHARED, select=folder_key(here))

    def action_details(self):
        pane = self.query_one("#files-detail", Static)
        pane.toggle_class("-shown")
        self._show_detail()

    def action_share(self):
        entry = self.current_entry()
        if entry is not None:
            target, role = entry.target, entry.role
        elif self._folder != SHARED:
            target, role = self._folder.prefix, self.folder_role()
        else:
            return
        self.app.push_screen(SharingScreen(self.session, target, role=role))

    def action_cancel_transfer(self):
        if self.transfers.cancel_latest():
            self.notify("Cancelling the latest transfer…", title="Cancel")

    def action_new_folder(self):
        here = self._folder
        if here == SHARED:
            return

        def check(name):
            if "/" in name:
                return "One folder at a time: no '/' in the name."
            try:
                parse_remote(f"{here.child(name).prefix}x")
            except ClientError as e:
                return getattr(e, "message", str(e))
            if folder_key(here.child(name)) in self._entries:
                return f"{name}/ already exists here."
            return None

        def created(name):
            if not name:
                return
            ref = here.child(name)
            self._pending.add(ref)
            self._sync_tree_children(here, [e.folder.path for e in self._entries.values()
                                            if e.is_folder and not e.pending])
            self.notify(f"{ref.prefix} is shown until you upload a file into it; a folder "
                        f"is kept while it holds files.", title="New folder")
            self.open_folder(ref)

        self.app.push_screen(NamePrompt(
            "New folder", f"Name of the new folder in {here.prefix}:", check=check,
            help_text="SecuriFile keeps a folder while it holds files. The new folder is shown "
                      "here, marked new, until you upload a file into it (u or U); left empty, "
                      "it is not kept."), created)

    def action_upload_file(self):
        here = self._folder
        if here == SHARED:
            return

        def chosen(path):
            if path is None:
                return
            self.local_dir = path.parent
            self._start_upload(Path(path), f"{here.prefix}{path.name}", here, folder=False)

        self.app.push_screen(FileOpen(self.local_dir, title=f"Upload a file into {here.prefix}",
                                      open_button="Upload"), chosen)

    def action_upload_folder(self):
        here = self._folder
        if here == SHARED:
            return

        def chosen(path):
            if path is None:
                return
            path = Path(path)
            self.local_dir = path.parent
            self._start_upload(path, f"{here.prefix}{path.name}/", here, folder=True)

        self.app.push_screen(SelectDirectory(
            self.local_dir, title=f"Open the folder to upload into {here.prefix}, then Upload",
            select_button="Upload"), chosen)

    def action_replace(self):
        entry = self.current_entry()
        if entry is None or entry.is_folder:
            return
        here = self._folder

        def chosen(path):
            if path is None:
                return
            self.local_dir = path.parent
            self._start_upload(Path(path), entry.target, here, folder=False, confirm=True)

        self.app.push_screen(FileOpen(self.local_dir, title=f"New version of {entry.target}",
                                      open_button="Replace"), chosen)

    def _start_upload(self, local, remote, ref, folder, confirm=None):
        """Check the names, ask before replacing what exists, then start the worker."""
        try:
            if folder:
                parse_remote(remote, folder=True)
            else:
                parse_remote(remote)
        except ClientError as e:
            self.notify(getattr(e, "message", str(e)), title="Not a valid name", severity="error")
            return
        key = ("d:" if folder else "f:") + remote
        existing = self._entries.get(key) if ref == self._folder else None
        if confirm is None:
            confirm = existing is not None and not existing.pending

        def go(yes=True):
            if not yes:
                return
            title = f"↑ {local.name}{'/' if folder else ''} → {ref.prefix}"
            transfer = self.transfers.add(title)
            self.upload(local, remote, transfer, ref, folder)
            self.refresh_bindings()

        if confirm:
            if folder:
                message = (f"{remote} exists. Files in {local} replace the files of the same "
                           f"name there (each gets a new version); other files stay.")
            else:
                version = (existing.record or {}).get("version") if existing else None
                message = (f"Replace {remote}{f' (version {version})' if version else ''} with "
                           f"{local}? It becomes a new version.")
            self.app.push_screen(ConfirmScreen(message, title="Replace?", yes="Replace"), go)
        else:
            go()

    def action_download(self):
        entry = self.current_entry()
        if entry is None:
            if self._folder == SHARED:
                return
            ref = self._folder
            entry = Entry("folder", ref.name, ref.owner, ref.prefix, role=self.folder_role(),
                          folder=ref)
        if entry.pending:
            self.notify("This new folder holds no files yet.", severity="warning")
            return
        local_name = entry.folder.name if entry.is_folder else entry.target.rsplit("/", 1)[-1]

        def chosen(directory):
            if directory is None:
                return
            directory = Path(directory)
            self.local_dir = directory
            local = directory / local_name

            def go(yes=True):
                if yes:
                    title = f"↓ {entry.target} → {local}"
                    self.download(entry, local, self.transfers.add(title))
                    self.refresh_bindings()

            if local.exists():
                what = "Files in the folder" if entry.is_folder else "It"
                self.app.push_screen(ConfirmScreen(
                    f"{local} exists. {what} will be overwritten by {entry.target}.",
                    title="Overwrite?", yes="Overwrite"), go)
            else:
                go()

        self.app.push_screen(SelectDirectory(
            self.local_dir, title=f"Download {entry.target} into which folder?",
            select_button="Download here"), chosen)

    def action_delete(self):
        entry = self.current_entry()
        if entry is None or entry.role != OWNER or entry.pending:
            return
        ref = self._folder
        if entry.is_folder:
            message = (f"Delete the folder {entry.target} and every file in it, on every "
                       f"server? This cannot be undone.")
        else:
            message = (f"Delete {entry.target} (version {(entry.record or {}).get('version')}) "
                       f"and all its copies on every server? This cannot be undone.")

        def confirmed(yes):
            if not yes:
                return
            if entry.is_folder:
                transfer = self.transfers.add(f"✕ {entry.target}", unit="files")
                self.delete_folder(entry, ref, transfer)
            else:
                self.delete_file(entry, ref)
            self.refresh_bindings()

        self.app.push_screen(ConfirmScreen(message, title="Delete?", yes="Delete"), confirmed)


__all__ = ["FilesScreen", "FolderRef", "SHARED", "PAGE"]
