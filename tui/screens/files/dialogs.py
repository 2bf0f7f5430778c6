"""The Files screen's own dialogs, and the questions it asks before changing anything."""
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

NEW_FOLDER_HELP = ("SecuriFile keeps a folder while it holds files. The new folder is shown "
                   "here, marked new, until you upload a file into it (u or U); left empty, "
                   "it is not kept.")


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


def replace_question(remote, local, folder, version):
    if folder:
        return (f"{remote} exists. Files in {local} replace the files of the same "
                f"name there (each gets a new version); other files stay.")
    return (f"Replace {remote}{f' (version {version})' if version else ''} with "
            f"{local}? It becomes a new version.")


def overwrite_question(local, entry):
    what = "Files in the folder" if entry.is_folder else "It"
    return f"{local} exists. {what} will be overwritten by {entry.target}."


def delete_question(entry):
    if entry.is_folder:
        return (f"Delete the folder {entry.target} and every file in it, on every "
                f"server? This cannot be undone.")
    return (f"Delete {entry.target} (version {(entry.record or {}).get('version')}) "
            f"and all its copies on every server? This cannot be undone.")
