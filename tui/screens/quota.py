"""The set-quota dialog of the users screen (administrators): a size as the CLIs take it."""
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from securifile.common.sizes import parse_size, size_text

from ..format import human_size
from ..typeahead import FIELD_KEYS, TypeAheadForm
from .dialogs import DIALOG_CSS


def quota_text(user):
    """'1.0 GiB (35 %)' of a users-list row or /me; 'none' without a quota."""
    quota = user.get("quota_bytes")
    if quota is None:
        return "none"
    used = user.get("used_bytes", user.get("total_bytes", 0)) or 0
    return f"{human_size(quota)} ({100 * used / quota:.0f} %)" if quota else human_size(quota)


class QuotaScreen(TypeAheadForm, ModalScreen):
    """Dismisses with ``{"quota_bytes": N or None}``, or None when cancelled."""

    DEFAULT_CSS = DIALOG_CSS.format(name="QuotaScreen") + """
    QuotaScreen #quota-error { color: $error; height: auto; }
    QuotaScreen .field { height: 1; margin-bottom: 1; }
    QuotaScreen .field Label { width: 14; }
    QuotaScreen .field Input { width: 1fr; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="quota.cancel"), *FIELD_KEYS]

    def __init__(self, user):
        super().__init__()
        self.user = user

    def compose(self) -> ComposeResult:
        name, quota = self.user.get("username", ""), self.user.get("quota_bytes")
        with Vertical():
            yield Label(f"Quota of {name}", classes="dialog-title")
            yield Static(f"Uses {human_size(self.user.get('total_bytes', 0))}, each file counted "
                         f"once whatever the copies. Now: {quota_text(self.user)}.")
            with Horizontal(classes="field"):
                yield Label("Quota")
                yield Input(value=size_text(quota), id="quota-size",
                            placeholder="10G, 500M, bytes, or none", compact=True)
            yield Static("", id="quota-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Set", id="set", variant="primary", compact=True)

    def submit_form(self):
        self.submit()

    @on(Button.Pressed, "#set")
    def submit(self):
        try:
            quota = parse_size(self.query_one("#quota-size", Input).value)
        except ValueError as e:
            self.query_one("#quota-error", Static).update(str(e))
            return
        self.dismiss({"quota_bytes": quota})

    @on(Button.Pressed, "#cancel")
    def action_cancel(self):
        self.dismiss(None)
