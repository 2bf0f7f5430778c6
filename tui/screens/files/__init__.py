"""The Files screen, in parts a reader can open by name:

- ``screen``: ``FilesScreen``, which lays out and wires the parts below;
- ``listing``: the folder shown and its rows, pending folders, roles (no widgets);
- ``catalogue``: reading folders from the admin server, and waiting for a change to show;
- ``table`` and ``tree``: the folder's table (and the detail pane's text), the folder tree;
- ``questions``: what is asked before changing anything (the dialogs are shared ones);
- ``transfers``: uploads, downloads and deletions, from the picker to the progress bar.
"""
from .catalogue import PAGE
from .listing import SHARED, FolderRef
from .screen import FilesScreen

__all__ = ["FilesScreen", "FolderRef", "SHARED", "PAGE"]
