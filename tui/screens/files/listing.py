"""What the Files screen shows, without widgets: folders, the rows of the folder shown, the
folders made here and not yet kept, the files just deleted, and what the caller may do.

A folder exists while it holds a file. "New folder" therefore makes a *pending* folder that
lives in this screen only, marked "new", until a file is uploaded into it.
"""
from dataclasses import dataclass

from securifile.client.errors import ClientError
from securifile.client.files import parse_remote
from securifile.common.roles import OWNER, at_least, role_on

# A deleted file stays hidden this long even if a listing still names it (reports lag).
GONE_SECONDS = 15.0


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


def folder_key(ref):
    return "d:" + ref.prefix


def file_of(target):
    """The folder a remote file path lies in, and its row key there."""
    owner, _, path = target.partition("/")
    return FolderRef(owner, path.rpartition("/")[0]), "f:" + target


def grant_entry(grant):
    """The row of "Shared with me" for one grant given to the caller."""
    owner, path = grant["owner"], grant.get("path", "")
    if not path or path.endswith("/"):
        ref = FolderRef(owner, path.rstrip("/"))
        return Entry("folder", ref.prefix.rstrip("/"), owner, ref.prefix, role=grant.get("role"),
                     folder=ref)
    return Entry("file", f"{owner}/{path}", owner, f"{owner}/{path}", role=grant.get("role"))


class FolderListing:
    """The folder shown (a FolderRef, or SHARED) and its rows by key, as pages arrive.

    ``generation`` counts visits, so that an answer for a folder since left is dropped;
    ``next`` is the cursor of the next page (None when the folder is complete).
    """

    def __init__(self, me):
        self.me = me
        self.folder = FolderRef(me)
        self.generation = 0
        self.entries = {}  # row key -> Entry, for the rows in the table
        self.next = None
        self.loading_more = False
        self.shared = []  # the grants others gave me
        self.pending = set()  # FolderRefs made with "New folder", until a file lands in them
        self.gone = {}  # deleted remote path -> until when (monotonic) to hide it
        self.file_count = 0  # file rows loaded; workers read it to refresh as many
        self.select_after_load = None
        self.shown = 0  # listings shown so far: a poll asked before the last one is stale

    def open(self, ref, select=None):
        """Start a visit to ``ref``; ``select``: a row key to highlight once loaded."""
        self.folder = ref
        self.generation += 1
        self.next = None
        self.loading_more = False
        self.select_after_load = select
        self.file_count = 0
        self.entries.clear()

    @property
    def where(self):
        return "Shared with me" if self.folder == SHARED else self.folder.prefix

    def role(self, ref=None):
        """My role on ``ref`` (the folder shown by default); None in "Shared with me"."""
        ref = self.folder if ref is None else ref
        if ref == SHARED:
            return None
        return role_on(self.me, self.shared, ref.owner, ref.role_path)

    def wants_more(self):
        return bool(self.next) and not self.loading_more and self.folder != SHARED

    def keep_real(self, ref, listing):
        """Pending folders the catalogue now has something in stop being pending; returns them."""
        real = {FolderRef(ref.owner, p) for p in listing.get("folders", [])}
        if listing.get("files") or real:
            real.add(ref)
        made = self.pending & real
        self.pending -= made
        return made

    def entries_from(self, ref, listing, mode, now):
        """The rows a listing of ``ref`` makes (with pending folders, without files just gone)."""
        if ref == SHARED:
            return [grant_entry(g) for g in listing.get("grants", [])]
        entries = []
        if mode != "more":
            real = set()
            for path in listing.get("folders", []):
                child = FolderRef(ref.owner, path)
                real.add(child)
                entries.append(Entry("folder", child.name, child.owner, child.prefix,
                                     role=self.role(child), folder=child))
            for pending in sorted(self.pending):
                if pending.parent == ref and pending not in real:
                    entries.append(Entry("folder", pending.name, pending.owner, pending.prefix,
                                         role=OWNER, folder=pending, pending=True))
        lead = len(ref.path) + 1 if ref.path else 0
        for record in listing.get("files", []):
            target = f"{record['owner']}/{record['path']}"
            if self.gone.get(target, 0) > now:
                continue
            entries.append(Entry("file", record["path"][lead:], record["owner"], target,
                                 role=record.get("role"), record=record))
        return entries

    def merge(self, entries, complete, last):
        """Take ``entries`` as the rows; returns (keys removed, entries added, (old, new) changed).

        Without ``complete`` the listing covers files up to ``last`` only; rows after it
        (loaded earlier as later pages) stay.
        """
        fresh = {e.key: e for e in entries}
        removed = [key for key, entry in self.entries.items()
                   if key not in fresh and (entry.is_folder or complete or entry.target <= last)]
        for key in removed:
            del self.entries[key]
        added, changed = [], []
        for entry in entries:
            old = self.entries.get(entry.key)
            if old is None:
                added.append(entry)
            else:
                changed.append((old, entry))
            self.entries[entry.key] = entry
        return removed, added, changed

    def add_page(self, entries):
        """Take the rows of a next page; returns those that were not there yet."""
        added = [e for e in entries if e.key not in self.entries]
        self.entries.update((e.key, e) for e in added)
        return added

    def forget(self, targets, now):
        """Files were deleted: hide them for a while; returns the keys of the rows to drop."""
        gone = []
        for target in targets:
            self.gone[target] = now + GONE_SECONDS
            key = "f:" + target
            if key in self.entries:
                del self.entries[key]
                gone.append(key)
        return gone

    def shared_roles_changed(self):
        """After the grants changed: the folder rows of others' namespaces whose role differs."""
        changed = []
        for entry in self.entries.values():
            if entry.is_folder and entry.folder.owner != self.me:
                role = self.role(entry.folder)
                if role != entry.role:
                    entry.role = role
                    changed.append(entry)
        return changed

    def summary(self):
        """The location line; counts the file rows as it goes (``file_count``)."""
        if self.folder == SHARED:
            count = len(self.entries)
            return (f"Shared with me · {count} grant{'s' if count != 1 else ''} "
                    f"· enter opens, s shows the grants")
        ref = self.folder
        folders = sum(1 for e in self.entries.values() if e.is_folder)
        files = self.file_count = len(self.entries) - folders
        role = self.role()
        parts = [ref.prefix, f"you: {role}" if role else "shared items only",
                 f"{folders} folder{'s' if folders != 1 else ''}, {files} file{'s' if files != 1 else ''}"]
        if self.next:
            parts.append("more: m or scroll down")
        if ref in self.pending:
            parts.append("new folder: upload a file (u) to keep it")
        return " · ".join(parts)

    def new_folder_problem(self, name):
        """What is wrong with ``name`` for a new folder in the folder shown, or None."""
        here = self.folder
        if "/" in name:
            return "One folder at a time: no '/' in the name."
        try:
            parse_remote(f"{here.child(name).prefix}x")
        except ClientError as e:
            return getattr(e, "message", str(e))
        if folder_key(here.child(name)) in self.entries:
            return f"{name}/ already exists here."
        return None

    def to_download(self, entry):
        """What "download" takes: the highlighted ``entry``, else the whole folder shown."""
        if entry is not None or self.folder == SHARED:
            return entry
        ref = self.folder
        return Entry("folder", ref.name, ref.owner, ref.prefix, role=self.role(), folder=ref)

    def allows(self, action, entry, transfers_running):
        """Whether ``action`` applies here: True, False (hidden) or None (shown disabled)."""
        here = self.folder
        folder_role = self.role()
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
            return bool(self.next and here != SHARED)
        if action == "cancel_transfer":
            return bool(transfers_running)
        return True
