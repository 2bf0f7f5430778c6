"""The folder tree: my namespace (subfolders loaded when a node opens) and "Shared with me"."""
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.message import Message
from textual.widgets import Tree

from .listing import SHARED, FolderRef, file_of


@dataclass
class TreeItem:
    kind: str  # "folder", "shared" (the root of grants) or "file" (a file shared with me)
    folder: FolderRef | None = None
    target: str | None = None
    loaded: bool = False


class FolderTree(Tree):
    """Folders by FolderRef: a folder may show in more than one place (mine, and shared)."""

    class Chosen(Message):
        """A node was selected: show ``folder`` (or SHARED), highlighting the row ``select``."""

        def __init__(self, folder, select=None):
            super().__init__()
            self.folder, self.select = folder, select

    class Unfolded(Message):
        """A folder's node opened for the first time: its subfolders are wanted."""

        def __init__(self, folder):
            super().__init__()
            self.folder = folder

    def __init__(self, label, *, id=None):
        super().__init__(label, id=id)
        self.show_root = False
        self.guide_depth = 2
        self._folder_nodes = {}  # FolderRef -> [TreeNode] showing it

    def add_roots(self, me):
        """"me (my files)" and "Shared with me"; returns the first."""
        mine = self.root.add(f"{me} (my files)", TreeItem("folder", FolderRef(me)), expand=True)
        self._register(FolderRef(me), mine)
        self.root.add("Shared with me", TreeItem("shared"), expand=False)
        return mine

    @on(Tree.NodeExpanded)
    def _expanded(self, event):
        item = event.node.data
        if item is not None and item.kind == "folder" and not item.loaded:
            self.post_message(self.Unfolded(item.folder))

    @on(Tree.NodeSelected)
    def _selected(self, event):
        item = event.node.data
        if item is None:
            return
        if item.kind == "shared":
            self.post_message(self.Chosen(SHARED))
        elif item.kind == "folder":
            self.post_message(self.Chosen(item.folder))
        elif item.kind == "file":
            self.post_message(self.Chosen(*file_of(item.target)))

    @property
    def shared_node(self):
        return next(n for n in self.root.children if n.data.kind == "shared")

    def open_folders(self):
        """The folders shown expanded with their subfolders loaded (to refresh them)."""
        return [ref for ref, nodes in list(self._folder_nodes.items())
                if any(n.data.loaded and n.is_expanded for n in nodes)]

    def _register(self, ref, node):
        self._folder_nodes.setdefault(ref, []).append(node)

    def _unregister_subtree(self, node):
        for child in node.children:
            self._unregister_subtree(child)
        item = node.data
        if item is not None and item.folder is not None:
            nodes = self._folder_nodes.get(item.folder, [])
            if node in nodes:
                nodes.remove(node)

    def sync_children(self, ref, folder_paths, pending):
        """Make every node showing ``ref`` list its subfolders (plus the ``pending`` ones)."""
        wanted = [FolderRef(ref.owner, p) for p in folder_paths]
        wanted += [p for p in pending if p.parent == ref and p not in wanted]
        wanted.sort()
        for node in list(self._folder_nodes.get(ref, [])):
            node.data.loaded = True
            have = {child.data.folder: child for child in node.children
                    if child.data is not None and child.data.folder is not None}
            for child_ref, child in have.items():
                if child_ref not in wanted:
                    self._unregister_subtree(child)
                    child.remove()
            for index, child_ref in enumerate(wanted):
                label = folder_label(child_ref, pending)
                if child_ref in have:
                    have[child_ref].set_label(label)
                    continue
                following = next((have[w] for w in wanted[index + 1:] if w in have), None)
                child = node.add(label, TreeItem("folder", child_ref), before=following)
                self._register(child_ref, child)
            node.allow_expand = bool(wanted)

    def relabel(self, refs, pending):
        for ref in refs:
            for node in self._folder_nodes.get(ref, []):
                if node.parent is not None and node.parent.data is not None \
                        and node.parent.data.kind == "folder":
                    node.set_label(folder_label(ref, pending))

    def sync_shared(self, grants):
        """"Shared with me" lists the folders and files others granted me."""
        shared_node = self.shared_node
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
                self._register(item.folder, child)
        shared_node.allow_expand = bool(wanted)


def folder_label(ref, pending):
    label = Text(ref.name)
    if ref in pending:
        label.append(" (new)", style="italic")
    return label
