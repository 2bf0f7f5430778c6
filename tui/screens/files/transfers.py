"""Uploads, downloads and deletions from the Files screen: the pickers and confirmations
that start them, the thread workers that move the bytes (``Client``) with progress in the
transfers panel, and telling the screen what changed.

Every transfer runs as a thread worker of the screen (group "transfer"), so an error that
escapes becomes the screen's notification; the expected ones end the transfer here.
"""
from functools import partial
from pathlib import Path

from textual_fspicker import FileOpen, SelectDirectory

from securifile.client.errors import ClientError, TransferCancelled
from securifile.client.files import parse_remote, plan_download
from securifile.client.plans import PARALLEL
from securifile.tui.errors import describe
from securifile.tui.screens.dialogs import ConfirmScreen
from securifile.tui.widgets.transfers import CANCELLED, DONE, FAILED

from .catalogue import SETTLE_WINDOW
from .questions import delete_question, overwrite_question, replace_question
from .listing import SHARED


class FileTransfers:
    """Starts and runs the transfers of one Files ``screen`` (its panel, its listing)."""

    def __init__(self, screen, catalogue):
        self.screen = screen
        self.catalogue = catalogue
        self.closing = False  # the screen is going: workers stop waiting and telling

    @property
    def panel(self):
        return self.screen.transfers

    @property
    def session(self):
        return self.screen.session

    def _run(self, job, *args):
        self.screen.run_worker(partial(job, *args), thread=True, exit_on_error=False,
                               group="transfer")
        self.screen.refresh_bindings()

    def close(self):
        """Leaving (the app quits): stop transfers, or their threads would keep it alive."""
        self.closing = True
        self.panel.cancel_all()

    # -- asking what to send where --

    def ask_upload(self, here, folder):
        """A local file (or, with ``folder``, a whole folder) into the folder ``here``."""
        def chosen(path):
            if path is None:
                return
            path = Path(path)
            self.screen.local_dir = path.parent
            remote = f"{here.prefix}{path.name}{'/' if folder else ''}"
            self.start_upload(path, remote, here, folder=folder)

        if folder:
            picker = SelectDirectory(
                self.screen.local_dir,
                title=f"Open the folder to upload into {here.prefix}, then Upload",
                select_button="Upload")
        else:
            picker = FileOpen(self.screen.local_dir, title=f"Upload a file into {here.prefix}",
                              open_button="Upload")
        self.screen.app.push_screen(picker, chosen)

    def ask_replace(self, entry, here):
        def chosen(path):
            if path is None:
                return
            self.screen.local_dir = path.parent
            self.start_upload(Path(path), entry.target, here, folder=False, confirm=True)

        self.screen.app.push_screen(FileOpen(
            self.screen.local_dir, title=f"New version of {entry.target}", open_button="Replace"),
            chosen)

    def start_upload(self, local, remote, ref, folder, confirm=None):
        """Check the names, ask before replacing what exists, then start the worker."""
        try:
            parse_remote(remote, folder=folder)
        except ClientError as e:
            self.screen.notify(getattr(e, "message", str(e)), title="Not a valid name",
                               severity="error")
            return
        listing = self.screen.listing
        key = ("d:" if folder else "f:") + remote
        existing = listing.entries.get(key) if ref == listing.folder else None
        if confirm is None:
            confirm = existing is not None and not existing.pending

        def go(yes=True):
            if yes:
                transfer = self.panel.add(f"↑ {local.name}{'/' if folder else ''} → {ref.prefix}")
                self._run(self.upload, local, remote, transfer, ref, folder)

        if confirm:
            version = (existing.record or {}).get("version") if existing else None
            self.screen.app.push_screen(ConfirmScreen(
                replace_question(remote, local, folder, version), title="Replace?",
                yes="Replace"), go)
        else:
            go()

    def ask_download(self, entry):
        """``entry`` (a file or a whole folder) into a local folder the user picks."""
        local_name = entry.folder.name if entry.is_folder else entry.target.rsplit("/", 1)[-1]

        def chosen(directory):
            if directory is None:
                return
            directory = Path(directory)
            self.screen.local_dir = directory
            local = directory / local_name

            def go(yes=True):
                if yes:
                    self._run(self.download, entry, local,
                              self.panel.add(f"↓ {entry.target} → {local}"))

            if local.exists():
                self.screen.app.push_screen(ConfirmScreen(
                    overwrite_question(local, entry), title="Overwrite?", yes="Overwrite"), go)
            else:
                go()

        self.screen.app.push_screen(SelectDirectory(
            self.screen.local_dir, title=f"Download {entry.target} into which folder?",
            select_button="Download here"), chosen)

    def ask_delete(self, entry, ref):
        def confirmed(yes):
            if not yes:
                return
            if entry.is_folder:
                transfer = self.panel.add(f"✕ {entry.target}", unit="files")
                self._run(self.delete_folder, entry, ref, transfer)
            else:
                self._run(self.delete_file, entry, ref)

        self.screen.app.push_screen(ConfirmScreen(delete_question(entry), title="Delete?",
                                                  yes="Delete"), confirmed)

    # -- the workers (threads) --

    def _ui(self, callback, *args, **kwargs):
        """Run ``callback`` on the UI thread (from a worker) and wait for it."""
        if self.closing:
            return None
        try:
            return self.screen.app.call_from_thread(callback, *args, **kwargs)
        except RuntimeError:  # the app is shutting down: nobody is left to tell
            return None

    def _end(self, transfer, state, detail, note=None, severity="information"):
        self._ui(self.panel.finish, transfer, state, detail)
        if note:
            self._ui(self.screen.notify, note, severity=severity,
                     title={DONE: "Done", FAILED: "Failed", CANCELLED: "Cancelled"}[state])

    def _settle(self, ref, **change):
        """Show the catalogue's listing of ``ref`` once it has the change (see ``settle``)."""
        if ref == SHARED:
            return
        window = min(self.screen.listing.file_count, SETTLE_WINDOW)
        listing = self.catalogue.settle(ref, window, lambda: self.closing, **change)
        self.screen.post_message(self.screen.Listed(ref, listing, "refresh", None))

    def upload(self, local, remote, transfer, ref, folder=False):
        client = self.session.client
        stored = []
        try:
            if folder:
                client.put_tree(local, remote, progress=transfer.progress, cancel=transfer.cancel,
                                on_file=lambda _l, r, _rec: stored.append(r), parallel=PARALLEL)
            else:
                client.put(local, remote, progress=transfer.progress, cancel=transfer.cancel)
                stored.append(remote)
        except TransferCancelled:
            kept = (f"; {len(stored)} file{'s' if len(stored) != 1 else ''} already uploaded "
                    f"stay" if stored else "; nothing was stored")
            self._end(transfer, CANCELLED, "cancelled",
                      f"Upload of {local.name} cancelled{kept}.", "warning")
        except (ClientError, OSError) as e:
            title, message = describe(e)
            self._end(transfer, FAILED, "failed", f"{local.name}: {message}", "error")
        else:
            self._end(transfer, DONE, "done")
        if stored:
            if folder:
                self._settle(ref, folders_present=[remote.rstrip("/") + "/"])
            else:
                self._settle(ref, present=stored)

    def download(self, entry, local, transfer):
        client = self.session.client
        try:
            if entry.is_folder:
                plan = plan_download(self.catalogue.all_files(entry.target), entry.target, local)
                transfer.progress(0, sum(size for _, _, size in plan))
                client.get_plan(plan, progress=transfer.progress, cancel=transfer.cancel,
                                parallel=PARALLEL)
                local.mkdir(parents=True, exist_ok=True)
                detail = f"{len(plan)} files"
            else:
                client.get(entry.target, local, progress=transfer.progress, cancel=transfer.cancel)
                detail = "done"
        except TransferCancelled:
            self._end(transfer, CANCELLED, "cancelled", f"Download of {entry.name} cancelled.",
                      "warning")
        except (ClientError, OSError) as e:
            title, message = describe(e)
            self._end(transfer, FAILED, "failed", f"{entry.name}: {message}", "error")
        else:
            self._end(transfer, DONE, detail, f"Saved {entry.target} to {local}.")

    def delete_file(self, entry, ref):
        self.session.client.delete(entry.target)
        self.screen.post_message(self.screen.Removed([entry.target]))
        self._ui(self.screen.notify, f"Deleted {entry.target} from every server.", title="Deleted")
        self._settle(ref, absent=[entry.target])

    def delete_folder(self, entry, ref, transfer):
        client = self.session.client
        targets, deleted = [], []
        try:
            targets = [f"{r['owner']}/{r['path']}" for r in self.catalogue.all_files(entry.target)]
            transfer.progress(0, len(targets))
            client.delete_all(targets, progress=transfer.progress, cancel=transfer.cancel,
                              on_file=lambda name, *_: deleted.append(name), parallel=PARALLEL)
        except TransferCancelled:
            self._end(transfer, CANCELLED, "cancelled",
                      f"Stopped deleting {entry.target}: {len(deleted)} of "
                      f"{len(targets)} files were deleted.", "warning")
        except (ClientError, OSError) as e:
            self._end(transfer, FAILED, "failed", f"{entry.target}: {describe(e)[1]}", "error")
        else:
            self._end(transfer, DONE, f"{len(targets)} deleted",
                      f"Deleted {entry.target} ({len(targets)} files).")
            self._settle(ref, folders_absent=[entry.target])
            return
        if deleted:
            self.screen.post_message(self.screen.Removed(deleted))
            self._settle(ref)
