"""The transfers panel: one progress bar per upload, download or deletion, each cancellable.

A transfer runs in a thread worker and reports bytes through ``Transfer.progress``, which
only stores two numbers; the panel redraws the bars from those numbers a few times a
second, so a fast transfer never floods the message queue. Cancelling sets the transfer's
``cancel`` event, which the client library checks between chunks (``TransferCancelled``).
"""
import itertools
import threading
from dataclasses import dataclass, field

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Label, ProgressBar

from securifile.tui.format import human_size

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
# Finished transfers stay on screen this long so the outcome can be read.
LINGER_SECONDS = 4.0
REDRAW_SECONDS = 0.1
_ids = itertools.count(1)


@dataclass(eq=False)
class Transfer:
    """One transfer's state, shared between its worker thread and the panel.

    ``unit`` is "bytes" for transfers or "files" for per-file work such as a folder deletion.
    """

    title: str
    unit: str = "bytes"
    id: int = field(default_factory=lambda: next(_ids))
    cancel: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    total: int | None = None
    state: str = RUNNING
    detail: str = ""

    def progress(self, done, total):
        """The client library's progress callback (called from the worker thread)."""
        self.done, self.total = done, total

    @property
    def running(self):
        return self.state == RUNNING

    def amount(self):
        """``3.0 MiB / 12.0 MiB`` or ``4 / 10 files``; ``preparing…`` before the first report."""
        if self.total is None:
            return "preparing…"  # an upload reads the whole file for its digest first
        if self.unit == "files":
            return f"{self.done} / {self.total if self.total is not None else '?'} files"
        total = human_size(self.total) if self.total is not None else "?"
        return f"{human_size(self.done)} / {total}"


class TransferRow(Horizontal):
    """A transfer's title, bar, amount and cancel button."""

    DEFAULT_CSS = """
    TransferRow {
        height: 1;
        .transfer-title { width: 1fr; min-width: 12; text-wrap: nowrap; text-overflow: ellipsis; }
        ProgressBar { width: auto; }
        Bar { width: 16; }
        .transfer-amount { width: 22; color: $text-muted; text-align: right; padding-right: 1; }
        Button { min-width: 3; width: 3; }
        &.-done .transfer-amount { color: $success; }
        &.-failed .transfer-amount { color: $error; }
        &.-cancelled .transfer-amount { color: $warning; }
    }
    """

    def __init__(self, transfer):
        super().__init__(id=f"transfer-{transfer.id}")
        self.transfer = transfer
        self._bar = ProgressBar(total=None, show_eta=False)
        self._amount = Label("", classes="transfer-amount")
        self._cancel = Button("✕", compact=True, variant="error", tooltip="Cancel this transfer",
                              id=f"cancel-{transfer.id}")

    def compose(self) -> ComposeResult:
        yield Label(self.transfer.title, classes="transfer-title", markup=False)
        yield self._bar
        yield self._amount
        yield self._cancel

    def on_mount(self):
        self.redraw()

    def redraw(self):
        t = self.transfer
        if t.total is not None:
            self._bar.update(total=max(t.total, 1), progress=t.done if t.total else 1)
        self._amount.update(t.amount() if t.running else (t.detail or t.state))
        self.set_class(t.state == DONE, "-done")
        self.set_class(t.state == FAILED, "-failed")
        self.set_class(t.state == CANCELLED, "-cancelled")
        self._cancel.disabled = not t.running


class TransfersPanel(VerticalScroll):
    """Running and just-finished transfers; hidden while there are none."""

    DEFAULT_CSS = """
    TransfersPanel {
        height: auto;
        max-height: 6;
        border-top: hkey $primary;
        border-title-color: $text-primary;
        padding: 0 1;
        display: none;
        &.-active { display: block; }
    }
    """

    class Finished(Message):
        """A transfer ended (done, failed or cancelled)."""

        def __init__(self, transfer):
            super().__init__()
            self.transfer = transfer

    def __init__(self, *, id=None, linger=LINGER_SECONDS):
        super().__init__(id=id)
        self.border_title = "Transfers"
        self.linger = linger
        self._transfers = {}

    def on_mount(self):
        self.set_interval(REDRAW_SECONDS, self._redraw)

    @property
    def transfers(self):
        return list(self._transfers.values())

    @property
    def running(self):
        return [t for t in self._transfers.values() if t.running]

    def add(self, title, unit="bytes"):
        """Start showing a transfer; the worker gets its ``progress`` and ``cancel``."""
        transfer = Transfer(title, unit=unit)
        self._transfers[transfer.id] = transfer
        self.mount(TransferRow(transfer))
        self.add_class("-active")
        self.call_after_refresh(self.scroll_end, animate=False)
        return transfer

    def finish(self, transfer, state, detail=""):
        """Record how a transfer ended; its row goes away a few seconds later."""
        transfer.state, transfer.detail = state, detail
        self._redraw()
        self.post_message(self.Finished(transfer))
        if self.linger is not None:
            self.set_timer(self.linger, lambda: self.dismiss(transfer))

    def dismiss(self, transfer):
        self._transfers.pop(transfer.id, None)
        for row in self.query(TransferRow):
            if row.transfer is transfer:
                row.remove()
        if not self._transfers:
            self.remove_class("-active")

    def cancel_latest(self):
        """Cancel the most recently started transfer still running; False if none."""
        running = self.running
        if not running:
            return False
        running[-1].cancel.set()
        return True

    def cancel_all(self):
        for transfer in self.running:
            transfer.cancel.set()

    def _redraw(self):
        for row in self.query(TransferRow):
            if row.is_mounted:
                row.redraw()

    @on(Button.Pressed)
    def _cancel_pressed(self, event):
        event.stop()
        for row in self.query(TransferRow):
            if event.button is row._cancel:
                row.transfer.cancel.set()


__all__ = ["Transfer", "TransferRow", "TransfersPanel", "RUNNING", "DONE", "FAILED", "CANCELLED"]
