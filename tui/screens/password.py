"""Change the password: the current one, the new one twice; the admin server checks the rest.

The policy (12+ characters, not the name or e-mail, hard to guess) lives on the server; its
message is shown as it comes, so the client never disagrees with it.
"""
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static
from textual.worker import WorkerState

from ..errors import describe
from .dialogs import DIALOG_CSS


class PasswordScreen(ModalScreen[bool]):
    """Dismisses with True once the password was changed, False when cancelled."""

    DEFAULT_CSS = DIALOG_CSS.format(name="PasswordScreen") + """
    PasswordScreen Input { margin-bottom: 1; }
    PasswordScreen #password-error { color: $error; height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="password.cancel")]

    def __init__(self, session):
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Change the password of {self.session.username}", classes="dialog-title")
            yield Input(password=True, placeholder="current password", id="current")
            yield Input(password=True, placeholder="new password (12+ characters, hard to guess)",
                        id="new")
            yield Input(password=True, placeholder="new password again", id="again")
            yield Static("", id="password-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Change", id="change", variant="primary", compact=True)

    def on_mount(self):
        self.query_one("#current", Input).focus()

    def _value(self, name):
        return self.query_one(f"#{name}", Input).value

    def _say(self, text):
        self.query_one("#password-error", Static).update(text)

    @on(Input.Submitted)
    def _next_field(self, event):
        order = ["current", "new", "again"]
        if event.input.id != "again":
            self.query_one(f"#{order[order.index(event.input.id) + 1]}", Input).focus()
        else:
            self.action_change()

    @on(Button.Pressed, "#change")
    def action_change(self):
        current, new = self._value("current"), self._value("new")
        if not current or not new:
            self._say("Type the current password and the new one.")
        elif new != self._value("again"):
            self._say("The two new passwords differ.")
        else:
            self._say("")
            self.submit(current, new)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self):
        self.dismiss(False)

    @work(thread=True, exclusive=True, exit_on_error=False, group="password")
    def submit(self, current, new):
        self.session.change_password(current, new)

    def on_worker_state_changed(self, event):
        if event.worker.group != "password":
            return
        if event.state == WorkerState.SUCCESS:
            self.app.notify("Your password has been changed.", title="Password")
            self.dismiss(True)
        elif event.state == WorkerState.ERROR:
            _title, message = describe(event.worker.error)
            self._say(message)
