"""Reading folders from the admin server's catalogue, from thread workers.

Listings come 500 rows a page (``AdminClient.files``). Nodes report new and deleted files to
the admin server about once a second, so after an upload or a deletion the screen asks the
catalogue again for a few seconds until it agrees (``settle``).
"""
import time

from securifile.client.admin import PAGE as ADMIN_PAGE

PAGE = ADMIN_PAGE  # rows a listing page asks for; more load as the cursor nears the end
# How long to keep asking the catalogue after a change before showing what it says anyway.
CATALOGUE_WAIT = 8.0
CATALOGUE_POLL = 0.25
SETTLE_WINDOW = 2 * 500  # files re-read per poll while waiting; later pages stay as loaded


class CatalogueReader:
    """Pages of one folder, every file below a folder, and waiting for a change to show."""

    def __init__(self, session):
        self.session = session

    def page(self, ref, after=None, at_least_files=0):
        """One page of ``ref`` (or enough pages for ``at_least_files`` files)."""
        admin = self.session.admin
        first = admin.files(ref.prefix, limit=PAGE, after=after)
        files, page = list(first.get("files", [])), first
        while page.get("next") and len(files) < at_least_files:
            page = admin.files(ref.prefix, limit=PAGE, after=page["next"])
            files += page.get("files", [])
        return {"files": files, "folders": first.get("folders", []), "next": page.get("next")}

    def all_files(self, prefix):
        """The records of every file below the folder ``prefix``, page after page."""
        files, after = [], None
        while True:
            page = self.session.admin.files(prefix, recursive=True, limit=PAGE, after=after)
            files += page.get("files", [])
            after = page.get("next")
            if not after:
                return files

    def settle(self, ref, window, stopping, present=(), absent=(), folders_present=(),
               folders_absent=()):
        """The listing of ``ref`` once it shows the change (or time runs out, or ``stopping()``):
        files ``present`` and not ``absent``, subfolder prefixes likewise."""
        deadline = time.monotonic() + CATALOGUE_WAIT
        while True:
            listing = self.page(ref, at_least_files=window)
            paths = {f"{r['owner']}/{r['path']}" for r in listing["files"]}
            last = max(paths) if paths else ""
            names = {ref.child(p.rsplit("/", 1)[-1]).prefix for p in listing["folders"]}
            settled = (all(p in paths or (listing["next"] and p > last) for p in present)
                       and not any(p in paths for p in absent)
                       and all(f in names for f in folders_present)
                       and not any(f in names for f in folders_absent))
            if settled or stopping() or time.monotonic() > deadline:
                return listing
            time.sleep(CATALOGUE_POLL)
