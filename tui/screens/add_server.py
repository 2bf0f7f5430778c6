"""The dialog that asks an administrator for a new server's name and URL."""
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from ..typeahead import FIELD_KEYS, TypeAheadForm
from .dialogs import DIALOG_CSS

HELP = ("The running servers learn of it without a restart and verify it before placing "
        "copies on it. Start its node with a configuration naming this URL.")


class AddServerScreen(TypeAheadForm, ModalScreen[dict]):
    """Dismisses with ``{"name", "url"}``, or None when cancelled; the admin server checks
    both again (a name it refuses comes back as a notification)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="AddServerScreen") + """
    AddServerScreen #add-server-error { color: $error; height: auto; }
    AddServerScreen #add-server-help { color: $text-muted; margin-top: 1; }
    AddServerScreen .field { height: 1; margin-bottom: 1; }
    AddServerScreen .field Label { width: 8; }
    AddServerScreen .field Input { width: 1fr; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="add-server.cancel"), *FIELD_KEYS]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Add a server", classes="dialog-title")
            for field, label, placeholder in (("name", "Name", "node4"),
                                              ("url", "URL", "https://HOST:PORT")):
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input(placeholder=placeholder, id=f"add-server-{field}", compact=True)
            yield Static("", id="add-server-error", markup=False)
            yield Static(HELP, id="add-server-help", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Add", id="add", variant="primary", compact=True)

    def submit_form(self):
        self.submit()

    @on(Button.Pressed, "#add")
    def submit(self):
        name = self.query_one("#add-server-name", Input).value.strip()
        url = self.query_one("#add-server-url", Input).value.strip()
        problem = None
        if not name:
            problem = "A server name is needed."
        elif not url.startswith(("https://", "http://")):
            problem = "The URL is https://HOST:PORT (http:// for a cluster without TLS)."
        if problem:
            self.query_one("#add-server-error", Static).update(problem)
            return
        self.dismiss({"name": name, "url": url})

    @on(Input.Changed)
    def _clear_error(self):
        self.query_one("#add-server-error", Static).update("")

    @on(Button.Pressed, "#cancel")
    def action_cancel(self):
        self.dismiss(None)
