"""``securifile-tui``: the full-screen terminal client (Textual), usable over SSH in 80x24.

    securifile-tui [--cluster cluster.json] [--login] [--admin URL] [--ca PEM] [--user NAME]
                   [--screen files|servers|users]

Who it runs as: the identity in ``--cluster`` (the file ``securifile up`` writes), else the
login ``securifile login`` saved, else whoever logs in on the login screen (``--login``
always asks). Each screen is a Textual mode with its own stack: F2 files, F3 servers,
F4 users; F1 help, Ctrl+P the command palette, which offers every key of the screen.
"""
import argparse
import asyncio
import importlib
import os
import sys
from datetime import datetime, timezone
from functools import partial

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Center, Middle
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Label, LoadingIndicator
from textual.worker import WorkerState

from securifile.client.errors import Unauthorized
from securifile.client.settings import ClientSettings, LoginFolder

from .errors import ErrorReports, describe
from .prefs import Preferences
from .session import Session

SCREENS = (("files", "Files", "f2"), ("servers", "Servers", "f3"), ("users", "Users", "f4"))


def offered(binding):
    """Whether help and the palette list a binding: the footer's, and the hidden ones we named
    (refresh, focus moves), not the tables' cursor keys or Textual's own system keys."""
    return bool(binding.description) and not binding.system and (binding.show or bool(binding.id))


class StartScreen(Screen):
    """Shown while the app finds out who it runs as."""

    DEFAULT_CSS = """
    StartScreen Label { width: 100%; content-align: center middle; }
    StartScreen LoadingIndicator { height: 3; }
    """

    def compose(self) -> ComposeResult:
        with Middle():
            with Center():
                yield Label("SecuriFile: connecting…", id="start-label")
            yield LoadingIndicator()
        yield Footer()


class SessionReady(Message):
    def __init__(self, session):
        super().__init__()
        self.session = session


class SessionFailed(Message):
    """The cluster file or the saved login did not give a session: ask for a password."""

    def __init__(self, text, prefill):
        super().__init__()
        self.text, self.prefill = text, prefill


class UsageRead(Message):
    def __init__(self, session, me):
        super().__init__()
        self.session, self.me = session, me


class SecuriFileApp(ErrorReports, App):
    """The SecuriFile terminal client.

    ``session``: start logged in (tests, embedding); else ``cluster_file``; else the saved
    login; else the login screen. ``config_dir`` holds the remembered login and theme
    (default ``~/.config/securifile``). ``now`` and ``tz`` fix the clock and zone shown
    (snapshot tests); ``poll_seconds`` is how often screens ask the admin server.
    """

    TITLE = "SecuriFile"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("f1", "help", "Help", id="app.help"),
        Binding("f2", "show('files')", "Files", id="app.files"),
        Binding("f3", "show('servers')", "Servers", id="app.servers"),
        Binding("f4", "show('users')", "Users", id="app.users"),
        Binding("ctrl+l", "logout", "Log out", id="app.logout", show=False),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", show=False, priority=True),
    ]
    usage_read = reactive(0)  # counts /me answers: the session bars redraw the usage on it

    def __init__(self, session=None, cluster_file=None, *, config_dir=None, login=False,
                 admin_url=None, ca=None, username=None, start=None, poll_seconds=2.0,
                 now=None, tz=None):
        super().__init__()
        self.session = session
        self.cluster_file = cluster_file
        self.config_dir = config_dir
        self.prefs = Preferences(config_dir) if config_dir else Preferences.default()
        self.force_login = login
        self.prefill = {"admin_url": admin_url, "ca": ca, "username": username}
        self.start = start
        self.poll_seconds = poll_seconds
        self._now = now
        self.tz = tz
        self._usage_timer = None
        saved_theme = self.prefs.load().get("theme")
        if saved_theme in self.available_themes:
            self.theme = saved_theme

    # -- clock --

    def now(self):
        return self._now() if self._now else datetime.now(timezone.utc)

    # -- start-up --

    def get_default_screen(self):
        return StartScreen()

    def on_mount(self):
        if self.session is not None:
            self.start_session(self.session)
        elif self.force_login:
            self.ask_login()
        else:
            self.connect(self.cluster_file)

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def connect(self, cluster_file=None):
        """A session from the cluster file, else from the saved login; else the login screen."""
        prefill = {}
        try:
            if cluster_file:
                settings = ClientSettings.from_cluster_file(cluster_file)
                prefill = {"admin_url": settings.admin_url, "ca": settings.ca,
                           "username": settings.username}
                session = Session.from_settings(settings)
            else:
                folder = LoginFolder(self.config_dir) if self.config_dir else LoginFolder.default()
                if folder is None or not folder.exists():
                    self.post_message(SessionFailed("", {}))
                    return
                settings = folder.settings()
                prefill = {"admin_url": settings.admin_url, "ca": settings.ca,
                           "username": settings.username}
                session = Session.from_settings(settings)
                session.folder = folder
        except Exception as e:  # shown on the login screen, never as a traceback
            where = f"the cluster file {cluster_file}" if cluster_file else "the saved login"
            if isinstance(e, Unauthorized):
                text = f"The credentials in {where} are no longer valid: log in with your password."
            else:
                text = f"Could not start from {where}: {describe(e)[1]}"
            self.post_message(SessionFailed(text, prefill))
            return
        self.post_message(SessionReady(session))

    def on_session_ready(self, message: SessionReady):
        self.start_session(message.session)

    def on_session_failed(self, message: SessionFailed):
        for key, value in message.prefill.items():  # what was given on the command line wins
            self.prefill[key] = self.prefill.get(key) or value
        self.ask_login(message.text)

    def ask_login(self, message=""):
        """Show the login screen, in a mode of its own, prefilled with what is known."""
        from .screens.login import LoginScreen

        remembered = self.prefs.load()
        values = {k: self.prefill.get(k) or remembered.get(k) or "" for k in ("admin_url", "ca", "username")}
        if "login" in self._modes:
            if self.current_mode == "login":
                return
            self.remove_mode("login")
        self.add_mode("login", lambda: LoginScreen(message=message, **values))
        self.switch_mode("login")

    def on_login_screen_logged_in(self, message):
        self.start_session(message.session)

    def remember_login(self, admin_url, username, ca):
        """After a good login: the server, the user and the CA file, never the password."""
        self.prefs.update(admin_url=admin_url, username=username, ca=ca)

    def start_session(self, session):
        if session is None:
            return
        self.session = session
        for mode, factory in self.screen_factories().items():
            if mode not in self._modes:
                self.add_mode(mode, factory)
        start = self.start or ("files" if "files" in self._modes else "servers")
        self.switch_mode(start if start in self._modes else "servers")
        self.read_usage()
        if self._usage_timer is None:
            self._usage_timer = self.set_interval(self.poll_seconds, self.read_usage)
        if "login" in self._modes:
            self.remove_mode("login")
        if session.admin_url and not session.admin_url.lower().startswith("https:"):
            self.notify(f"{session.admin_url} is plain HTTP: passwords, tokens and files cross "
                        f"the network unencrypted.", title="Not encrypted", severity="warning",
                        timeout=10)

    @work(thread=True, exclusive=True, group="usage", exit_on_error=False)
    def read_usage(self):
        """The account's usage and quota for the status bar (the screens' own polls report
        an unreachable admin server; this one keeps the last figures quietly)."""
        session = self.session
        if session is None:
            return
        try:
            me = session.admin.me()
        except Exception:  # noqa: BLE001 (see above)
            return
        self.post_message(UsageRead(session, me))

    def on_usage_read(self, message: UsageRead):
        if message.session is self.session:
            self.session.usage = message.me
            self.usage_read += 1

    def screen_factories(self):
        from .screens.servers import ServersScreen
        from .screens.users import UsersScreen

        factories = {
            "servers": lambda: ServersScreen(self.session, poll_seconds=self.poll_seconds),
            "users": lambda: UsersScreen(self.session, poll_seconds=max(self.poll_seconds, 2.5)),
        }
        files = self.files_screen_class()
        if files is not None:
            # The folder shown changes less often than the servers' state, and a page of it
            # costs the admin server more: read it every 2.5 polls (5 s by default).
            factories["files"] = lambda: files(self.session, poll_seconds=2.5 * self.poll_seconds)
        return factories

    def files_screen_class(self):
        return self._optional_screen("files", "FilesScreen")

    def sharing_screen_class(self):
        return self._optional_screen("sharing", "SharingScreen")

    def _optional_screen(self, module, name):
        """A screen another module provides, or None while it does not exist (or is broken)."""
        path = f"{__package__}.screens.{module}"
        try:
            return getattr(importlib.import_module(path), name)
        except ModuleNotFoundError as e:
            if e.name != path:  # the module is there, but something it imports is not
                self.report_error(e, source=f"import-{module}")
            return None
        except Exception as e:  # a half-written module must not take the other screens down
            self.report_error(e, source=f"import-{module}")
            return None

    # -- navigation and actions --

    def action_show(self, mode):
        if self.session is None:
            return
        if mode not in self._modes:
            self.notify(f"The {mode} screen is not available in this version.", severity="warning")
            return
        self.switch_mode(mode)

    def check_action(self, action, parameters):
        if action in ("show", "logout") and self.session is None:
            return False
        if action == "show" and parameters and parameters[0] not in self._modes:
            return False
        return True

    def action_help(self):
        from .screens.dialogs import HelpScreen

        screen = self.screen
        keys, seen = [], set()
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not offered(binding) or (binding.action, binding.description) in seen:
                continue
            seen.add((binding.action, binding.description))
            keys.append((self.get_key_display(binding), binding.tooltip or binding.description))
        self.push_screen(HelpScreen(getattr(screen, "TITLE", None) or self.title, keys))

    def action_change_password(self):
        from .screens.password import PasswordScreen

        if self.session is not None:
            self.push_screen(PasswordScreen(self.session))

    async def action_logout(self):
        """Revoke the session's own token, forget the session and show the login screen (a
        saved login stays saved and valid)."""
        if self.session is None:
            return
        old, self.session = self.session, None
        self.ask_login("Logged out.")
        for mode, _, _ in SCREENS:
            if mode in self._modes:
                await self.remove_mode(mode)
        await asyncio.to_thread(old.logout)
        old.close()

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        if self.session is None:
            return
        for mode, title, key in SCREENS:
            if mode in self._modes:
                yield SystemCommand(f"Go to {title}", f"Show the {title.lower()} screen ({key.upper()})",
                                    partial(self.action_show, mode))
        yield SystemCommand("Help", "Keys of this screen and how the client works (F1)", self.action_help)
        yield SystemCommand("Log out", "Forget this session and log in again (Ctrl+L)", self.action_logout)
        yield SystemCommand("Change password", "Set a new password for this account",
                            self.action_change_password)
        seen = set()
        for active in screen.active_bindings.values():
            node, binding = active.node, active.binding
            if not offered(binding) or not active.enabled or node is self or binding.action in seen:
                continue
            seen.add(binding.action)
            help_text = f"{binding.tooltip or binding.description} ({self.get_key_display(binding)})"
            yield SystemCommand(binding.description, help_text,
                                partial(self.run_action, binding.action, node))

    def watch_theme(self, theme):
        if self.is_running:
            self.prefs.update(theme=theme)

    # -- errors --

    def on_worker_state_changed(self, event):
        if event.state == WorkerState.ERROR and event.worker.group != "connect":
            self.report_error(event.worker.error, source=event.worker.group or "app")


def main(argv=None):
    p = argparse.ArgumentParser(prog="securifile-tui", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster", default=os.environ.get("SECURIFILE_CLUSTER"),
                   help="the cluster.json that 'securifile up' wrote (its user's identity)")
    p.add_argument("--login", action="store_true",
                   help="always show the login screen (prefilled from --cluster if given)")
    p.add_argument("--admin", help="the admin server URL to prefill on the login screen")
    p.add_argument("--ca", help="the cluster's CA certificate to prefill on the login screen")
    p.add_argument("--user", help="the user name to prefill on the login screen")
    p.add_argument("--screen", choices=[m for m, _, _ in SCREENS],
                   help="the screen to start on (default: files)")
    args = p.parse_args(argv)
    if args.cluster and not os.path.isfile(args.cluster):
        p.error(f"--cluster {args.cluster}: no such file")
    prefill = {}
    if args.cluster and args.login:
        try:
            settings = ClientSettings.from_cluster_file(args.cluster)
            prefill = {"admin_url": settings.admin_url, "ca": settings.ca}
        except Exception as e:  # a broken file: say so and let the user type the values
            print(f"securifile-tui: {args.cluster}: {e}", file=sys.stderr)
    app = SecuriFileApp(
        cluster_file=args.cluster, login=args.login,
        admin_url=args.admin or prefill.get("admin_url"), ca=args.ca or prefill.get("ca"),
        username=args.user, start=args.screen)
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
