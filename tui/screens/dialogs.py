"""Small modal screens shared by the others: confirm, ask for a name, show a message, F1 help."""
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static

DIALOG_CSS = """
{name} {{
    align: center middle;
    background: $background 60%;
}}
{name} > Vertical {{
    width: 72;
    max-width: 100%;
    height: auto;
    max-height: 100%;
    border: thick $primary 80%;
    background: $surface;
    padding: 1 2 0 2;
}}
{name} .dialog-title {{
    text-style: bold;
    width: 100%;
    margin-bottom: 1;
}}
{name} .dialog-buttons {{
    height: auto;
    width: 100%;
    align-horizontal: right;
    margin: 1 0;
}}
{name} .dialog-buttons Button {{
    margin-left: 2;
}}
{name} Input {{
    background: $background;
}}
"""


class ConfirmScreen(ModalScreen[bool]):
    """Ask before something that cannot be undone; dismisses with True only on 'yes'."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmScreen")
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question, *, title="Are you sure?", yes="Yes", danger=True):
        super().__init__()
        self.question, self.title_text, self.yes, self.danger = question, title, yes, danger

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.question)
            with Horizontal(classes="dialog-buttons"):
                yield Button("No (n)", id="no", compact=True)
                yield Button(f"{self.yes} (y)", id="yes", compact=True,
                             variant="error" if self.danger else "primary")

    def on_mount(self):
        self.query_one("#no", Button).focus()  # Enter on a stray key press does nothing harmful

    @on(Button.Pressed)
    def pressed(self, event):
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer):
        self.dismiss(answer)


class NamePrompt(ModalScreen[str | None]):
    """Asks for a name; ``check(name)`` returns what is wrong with it, or None."""

    DEFAULT_CSS = """
    NamePrompt {
        align: center middle;
        & > Vertical {
            width: 64;
            max-width: 100%;
            height: auto;
            border: thick $primary 80%;
            background: $surface;
            padding: 1 2 0 2;
        }
        .prompt-title { text-style: bold; margin-bottom: 1; }
        #prompt-error { color: $error; height: auto; }
        #prompt-help { color: $text-muted; margin-top: 1; }
        .prompt-buttons { height: auto; align-horizontal: right; margin: 1 0; }
        .prompt-buttons Button { margin-left: 2; }
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, title, question, *, help_text="", check=None, yes="Create"):
        super().__init__()
        self.title_text, self.question, self.help_text = title, question, help_text
        self.check, self.yes = check, yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="prompt-title")
            yield Label(self.question, markup=False)
            yield Input(id="prompt-name")
            yield Static("", id="prompt-error", markup=False)
            if self.help_text:
                yield Static(self.help_text, id="prompt-help", markup=False)
            with Horizontal(classes="prompt-buttons"):
                yield Button("Cancel (esc)", id="cancel", compact=True)
                yield Button(f"{self.yes} (enter)", id="ok", variant="primary", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _submit(self, event):
        event.stop()
        name = self.query_one("#prompt-name", Input).value.strip()
        problem = "A name is needed." if not name else (self.check(name) if self.check else None)
        if problem:
            self.query_one("#prompt-error", Static).update(problem)
        else:
            self.dismiss(name)

    @on(Input.Changed)
    def _clear_error(self):
        self.query_one("#prompt-error", Static).update("")

    @on(Button.Pressed, "#cancel")
    def action_cancel(self):
        self.dismiss(None)


class MessageScreen(ModalScreen[None]):
    """Something the user must read (and may copy), such as a generated password."""

    DEFAULT_CSS = DIALOG_CSS.format(name="MessageScreen")
    BINDINGS = [Binding("escape,enter", "close", "Close", id="message.close")]

    def __init__(self, title, body):
        super().__init__()
        self.title_text, self.body = title, body

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.body, id="message-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="primary", compact=True)

    @on(Button.Pressed, "#close")
    def action_close(self):
        self.dismiss(None)


HELP_TEXT = (
    "SecuriFile keeps every file on several servers and encrypts every connection.\n\n"
    "Screens: F2 files, F3 servers, F4 users. Ctrl+P opens the command palette: every action "
    "below can be found there by name, and so can the theme. Tab moves between panels; the "
    "arrow keys move in a table and Enter selects. The mouse works too: click a row, a button "
    "or a key in the footer.\n\n"
    "The servers screen asks the admin server every few seconds. Its plots show the used, "
    "available and total (capacity) storage of each server over the last ten minutes, on a "
    "logarithmic byte axis (l switches to linear); on a small terminal one sparkline per "
    "server replaces them (v switches)."
)


class HelpScreen(ModalScreen[None]):
    """F1: the keys of the screen it was opened from, and a few words on the rest."""

    DEFAULT_CSS = DIALOG_CSS.format(name="HelpScreen") + """
    HelpScreen > Vertical { width: 84; height: 90%; }
    HelpScreen VerticalScroll { height: 1fr; }
    HelpScreen DataTable { height: auto; margin-bottom: 1; }
    """
    BINDINGS = [Binding("escape,f1,q", "close", "Close", id="help.close")]

    def __init__(self, title, keys):
        super().__init__()
        self.title_text = title
        self.keys = keys  # [(key display, description)]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Help: {self.title_text}", classes="dialog-title")
            with VerticalScroll():
                table = DataTable(cursor_type="none", show_cursor=False, id="help-keys")
                table.add_column("Key", key="key")
                table.add_column("Action", key="action")
                for key, description in self.keys:
                    table.add_row(Text(key, style="bold"), description)
                yield table
                yield Static(HELP_TEXT, id="help-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="primary", compact=True)

    @on(Button.Pressed, "#close")
    def action_close(self):
        self.dismiss(None)
