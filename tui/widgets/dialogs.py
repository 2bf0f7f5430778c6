"""Small modal dialogs: a yes/no confirmation for destructive actions, and a name prompt."""
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

DIALOG_CSS = """
    align: center middle;
    & > Vertical {
        width: 64;
        max-width: 95%;
        height: auto;
        border: thick $primary 80%;
        background: $surface;
        padding: 1 2;
    }
    .dialog-message { width: 100%; margin-bottom: 1; }
    .dialog-help { width: 100%; color: $text-muted; margin-bottom: 1; }
    .dialog-error { width: 100%; color: $error; height: auto; }
    .dialog-buttons { width: 100%; height: auto; align-horizontal: right; }
    .dialog-buttons Button { margin-left: 2; }
"""


class ConfirmModal(ModalScreen[bool]):
    """Asks before something that cannot be undone; dismisses True only on an explicit yes."""

    DEFAULT_CSS = "ConfirmModal {" + DIALOG_CSS + "\n & > Vertical { border: thick $error 80%; }\n}"
    BINDINGS = [
        Binding("y", "confirm", "Yes", id="confirm.yes"),
        Binding("n,escape", "cancel", "No", id="confirm.no"),
    ]

    def __init__(self, title, message, *, confirm_label="Delete", variant="error"):
        super().__init__()
        self.title_text, self.message = title, message
        self.confirm_label, self.variant = confirm_label, variant

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self.title_text
            yield Static(self.message, classes="dialog-message", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel (n)", id="no")
                yield Button(f"{self.confirm_label} (y)", variant=self.variant, id="yes")

    def on_mount(self):
        self.query_one("#no", Button).focus()  # the safe choice is the default

    @on(Button.Pressed, "#yes")
    def action_confirm(self):
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def action_cancel(self):
        self.dismiss(False)


class NamePrompt(ModalScreen[str | None]):
    """Asks for a name; ``check(name)`` returns an error sentence or None when it is fine."""

    DEFAULT_CSS = "NamePrompt {" + DIALOG_CSS + "}"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, title, message, *, help_text="", placeholder="", check=None,
                 confirm_label="Create"):
        super().__init__()
        self.title_text, self.message, self.help_text = title, message, help_text
        self.placeholder, self.check, self.confirm_label = placeholder, check, confirm_label

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self.title_text
            yield Label(self.message, classes="dialog-message", markup=False)
            yield Input(placeholder=self.placeholder, id="name")
            yield Static("", classes="dialog-error", id="error", markup=False)
            if self.help_text:
                yield Static(self.help_text, classes="dialog-help", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel (esc)", id="cancel")
                yield Button(f"{self.confirm_label} (enter)", variant="primary", id="ok")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _submit(self, event):
        event.stop()
        name = self.query_one("#name", Input).value.strip()
        problem = "A name is needed." if not name else (self.check(name) if self.check else None)
        if problem:
            self.query_one("#error", Static).update(problem)
            return
        self.dismiss(name)

    @on(Input.Changed)
    def _clear_error(self):
        self.query_one("#error", Static).update("")

    @on(Button.Pressed, "#cancel")
    def action_cancel(self):
        self.dismiss(None)


__all__ = ["ConfirmModal", "NamePrompt"]
