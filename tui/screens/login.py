"""The login screen: admin server, CA certificate, user name (or e-mail) and password.

The login runs in a thread worker; a failure comes back as a sentence that says what to do
(wrong password, expired account, unreachable admin server, TLS trouble). On success the
admin URL, user name and CA file are remembered in the user's config folder, never the
password; ``securifile login`` saves a token for password-less starts instead.
"""
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, LoadingIndicator, Static
from textual.worker import WorkerState

from securifile.common.admin_urls import parse_admin_urls

from ..errors import login_problem
from ..session import Session
from ..typeahead import FIELD_KEYS, TypeAheadForm

HINT = ("Your user name or e-mail and password, as in the account e-mail. "
        "Run 'securifile login' once to start without a password next time.")


class LoginScreen(TypeAheadForm, Screen):
    """Posts ``LoginScreen.LoggedIn`` with the new Session (the app takes it from there)."""

    class LoggedIn(Message):
        def __init__(self, session):
            super().__init__()
            self.session = session

    TITLE = "Log in"
    DEFAULT_CSS = """
    LoginScreen {
        align: center middle;
    }
    LoginScreen #login-box {
        width: 76;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $primary 70%;
        background: $surface;
        padding: 1 2 0 2;
        overflow-y: auto;
    }
    LoginScreen #login-title { text-style: bold; width: 100%; content-align: center middle; }
    LoginScreen #login-hint { color: $text-muted; margin-bottom: 1; }
    LoginScreen .field { height: 1; margin-bottom: 1; }
    LoginScreen .field Label { width: 16; }
    LoginScreen .field Input { width: 1fr; background: $background; }
    LoginScreen #login-warning { color: $error; text-style: bold; height: auto; }
    LoginScreen #login-message { color: $error; height: auto; min-height: 1; }
    LoginScreen #login-buttons { height: 1; align-horizontal: right; margin: 1 0; }
    LoginScreen #login-buttons Button { margin-left: 2; }
    LoginScreen LoadingIndicator { height: 1; width: 10; display: none; }
    LoginScreen.-busy LoadingIndicator { display: block; }
    """
    FIELDS = ("admin", "ca", "user", "password")
    BINDINGS = [
        Binding("ctrl+s", "login", "Log in", id="login.submit"),
        Binding("escape", "app.quit", "Quit", id="login.quit"),
        *FIELD_KEYS,  # a login typed ahead (a paste, a password manager) lands field by field
    ]
    AUTO_FOCUS = ""  # on_mount picks the first empty field

    def __init__(self, *, admin_url="", ca="", username="", message="", **kwargs):
        super().__init__(**kwargs)
        self.initial = {"admin": admin_url or "", "ca": ca or "", "user": username or ""}
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(id="login-box"):
            yield Label("SecuriFile: log in", id="login-title")
            yield Static(HINT, id="login-hint")
            for field, label, placeholder in (
                    ("admin", "Admin server", "https://127.0.0.1:8440"),
                    ("ca", "CA certificate", "the cluster's certs/ca.crt (https)"),
                    ("user", "User or e-mail", ""),
                    ("password", "Password", "")):
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input(value=self.initial.get(field, ""), placeholder=placeholder,
                                password=field == "password", id=f"login-{field}", compact=True)
            yield Static("", id="login-warning")
            yield Static(self.message, id="login-message")
            with Horizontal(id="login-buttons"):
                yield LoadingIndicator()
                yield Button("Quit", id="login-quit", compact=True)
                yield Button("Log in", id="login-button", variant="primary", compact=True)
        yield Footer()

    def on_mount(self):
        self.show_warning(self.initial["admin"])
        first_empty = next((f for f in ("admin", "user", "password")
                            if not self.query_one(f"#login-{f}", Input).value), "password")
        self.set_focus(self.field(first_empty))  # now, not after keys already queued

    def field(self, name):
        return self.query_one(f"#login-{name}", Input)

    def value(self, field):
        return self.query_one(f"#login-{field}", Input).value.strip()

    @on(Input.Changed, "#login-admin")
    def admin_changed(self, event):
        self.show_warning(event.value)

    def show_warning(self, url):
        url = (url or "").strip().lower()
        text = ("Not encrypted: with http:// the password, the token and your files cross the "
                "network in the clear." if url.startswith("http:") else "")
        self.query_one("#login-warning", Static).update(text)

    def next_field(self, field):
        """Enter: on to the next field, or log in from the password (or from the user field
        when the password is filled)."""
        name = field.id.removeprefix("login-")
        if name == "password" or (name == "user" and self.field("password").value):
            return None
        return self.field(self.FIELDS[self.FIELDS.index(name) + 1])

    def submit_form(self):
        self.action_login()

    @on(Button.Pressed, "#login-button")
    def action_login(self):
        admin_url, ca, user = self.value("admin"), self.value("ca"), self.value("user")
        password = self.query_one("#login-password", Input).value
        problem = None
        urls = parse_admin_urls(admin_url)  # several instances: "URL,URL"
        if not urls or not all(u.lower().startswith(("https://", "http://")) for u in urls):
            problem = "The admin server is an https:// URL, such as https://127.0.0.1:8440."
        elif ca and not Path(ca).expanduser().is_file():
            problem = f"No CA certificate at {ca}."
        elif not user:
            problem = "Your user name or e-mail address, please."
        elif not password:
            problem = "Your password, please."
        if problem:
            self.say(problem)
            return
        self.say("")
        self.add_class("-busy")
        self.query_one("#login-button", Button).disabled = True
        self.attempt(admin_url, user, password, str(Path(ca).expanduser()) if ca else None)

    @on(Button.Pressed, "#login-quit")
    def quit_pressed(self):
        self.app.exit()

    def say(self, text):
        self.query_one("#login-message", Static).update(text)

    @work(thread=True, exclusive=True, group="login", exit_on_error=False)
    def attempt(self, admin_url, username, password, ca):
        return Session.login(admin_url, username, password, ca=ca), admin_url, username, ca

    def on_worker_state_changed(self, event):
        if event.worker.group != "login" or event.worker.node is not self:
            return
        if event.state == WorkerState.SUCCESS:
            session, admin_url, username, ca = event.worker.result
            self.app.remember_login(admin_url, username, ca)
            self.post_message(self.LoggedIn(session))
        elif event.state == WorkerState.ERROR:
            self.remove_class("-busy")
            self.query_one("#login-button", Button).disabled = False
            text = login_problem(event.worker.error, self.value("admin"), self.value("ca") or None)
            self.say(text)
            self.notify(text, title="Login failed", severity="error")
            password = self.field("password")
            password.value = ""
            self.set_focus(password)
