"""The Sharing dialog: who holds which role on one file or folder, and changing that.

The owner may grant, change and revoke master, editor and reader; a master may do the same
for everyone but the owner (the owner never appears among the grants); editors and readers
see the list only. The admin server enforces all of this: the dialog merely offers what the
caller's role allows, so nobody is invited to press a button that can only fail.

The admin server lists every account to administrators only; anybody else picks from the
users they already share with, or names a user exactly (n), which the server confirms.
"""
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Select, Static
from textual.worker import WorkerState, get_current_worker

from securifile.common.roles import OWNER, ROLES, allowed, role_on
from securifile.tui.errors import describe
from securifile.tui.screens.dialogs import ConfirmScreen, NamePrompt
from securifile.tui.widgets.table import cursor_row_key


def split_target(target):
    """(owner, path) of a grant target: ``alice/docs/`` -> (alice, docs/); ``alice`` -> (alice, '')."""
    owner, _, path = target.partition("/")
    return owner, path


def describe_target(target):
    owner, path = split_target(target)
    if not path:
        return f"everything {owner} owns (grants here cover all of {owner}/)"
    if path.endswith("/"):
        return f"folder {target} (grants cover everything in it)"
    return f"file {target}"


class SharingScreen(ModalScreen[bool]):
    """Grants on ``target`` (``alice/a.txt``, or a folder ending in '/'); dismisses True if changed.

    ``role``: the caller's role on the target when the opener knows it; otherwise it is
    worked out from the grants others gave the caller.
    """

    DEFAULT_CSS = """
    SharingScreen {
        align: center middle;
        #sharing {
            width: 78;
            max-width: 100%;
            height: auto;
            max-height: 100%;
            border: thick $primary 80%;
            border-title-color: $text;
            background: $surface;
            padding: 0 1;
        }
        #sharing-summary { width: 100%; height: auto; margin-bottom: 1; }
        #grants { height: auto; max-height: 12; min-height: 4; }
        #grant-form { height: auto; margin-top: 1; }
        #grant-user { width: 1fr; }
        #grant-role { width: 16; }
        #grant-apply { min-width: 16; margin-left: 1; }
        #sharing-note { width: 100%; height: auto; color: $text-muted; margin-top: 1; }
        &.-view-only #grant-form { display: none; }
    }
    """
    BINDINGS = [
        Binding("g", "grant", "Grant/change", id="sharing.grant",
                tooltip="Give the picked user the picked role (or change their role)"),
        Binding("n", "find_user", "User by name", id="sharing.find", show=False,
                tooltip="Share with a user you name exactly (others are not listed)"),
        Binding("r,delete", "revoke", "Revoke", id="sharing.revoke",
                tooltip="Take the highlighted user's role away"),
        Binding("ctrl+r", "refresh", "Refresh", id="sharing.refresh",
                tooltip="Ask the admin server for the grants again"),
        Binding("escape", "close", "Close", id="sharing.close", tooltip="Back"),
    ]

    class Loaded(Message):
        def __init__(self, grants, role, users):
            super().__init__()
            self.grants, self.role, self.users = grants, role, users

    def __init__(self, session, target, role=None):
        super().__init__()
        self.session = session
        self.target = target
        self.owner, self.path = split_target(target)
        self.role = role
        self.changed = False
        self._grants = {}  # username -> {"username","role","granted_by"}
        self._users = None
        self._choices = []  # the users the form offers: everyone but the owner and me
        self._loaded = False

    # -- layout --

    def compose(self) -> ComposeResult:
        with Vertical(id="sharing") as box:
            box.border_title = f"Sharing {self.target}"
            yield Static(f"Access to {describe_target(self.target)}. Loading…", id="sharing-summary",
                         markup=False)
            table = DataTable(id="grants", cursor_type="row", zebra_stripes=True)
            table.add_column("User", key="user", width=20)
            table.add_column("Role", key="role", width=8)
            table.add_column("Granted by", key="granted_by", width=20)
            yield table
            with Horizontal(id="grant-form"):
                yield Select([], prompt="User…", id="grant-user")
                yield Select([(r, r) for r in ROLES], value="reader", allow_blank=False,
                             id="grant-role")
                yield Button("Grant (g)", variant="primary", id="grant-apply")
            yield Static("", id="sharing-note", markup=False)
        yield Footer()

    @property
    def may_manage(self):
        return allowed(self.role, "grant")

    def on_mount(self):
        self.set_class(not self.may_manage, "-view-only")
        self.query_one("#grants", DataTable).focus()
        self.load()

    # -- actions --

    def check_action(self, action, parameters):
        if action in ("grant", "find_user"):
            return True if self.may_manage else False
        if action == "revoke":
            if not self.may_manage:
                return False
            return True if self._highlighted() else None
        return True

    def action_close(self):
        self.dismiss(self.changed)

    def action_refresh(self):
        self.load()

    def action_grant(self):
        user = self.query_one("#grant-user", Select).value
        role = self.query_one("#grant-role", Select).value
        if user is Select.BLANK or user is None:
            self.notify("Pick the user to share with first.", severity="warning")
            self.query_one("#grant-user", Select).focus()
            return
        self.apply_grant(user, role)

    def action_revoke(self):
        username = self._highlighted()
        if not username:
            return
        role = self._grants[username]["role"]

        def confirmed(yes):
            if yes:
                self.apply_revoke(username)

        self.app.push_screen(ConfirmScreen(
            f"Take {username}'s {role} role on {self.target} away? It stops working "
            f"everywhere within seconds.", title="Revoke access?", yes="Revoke"), confirmed)

    def action_find_user(self):
        from securifile.common.paths import InvalidPath, check_username

        def problem(name):
            try:
                check_username(name)
            except InvalidPath as e:
                return e.message
            return None

        def named(name):
            if name:
                self.find_user(name)

        self.app.push_screen(NamePrompt("Share with a user", "The exact user name:",
                                        check=problem, yes="Find"), named)

    @work(thread=True, exit_on_error=False, group="sharing-find")
    def find_user(self, name):
        found = self.session.admin.find_user(name)
        self.app.call_from_thread(self._user_found, name, found is not None)

    def _user_found(self, name, exists):
        if not exists:
            self.notify(f"There is no user {name}.", severity="warning", title="Sharing")
            return
        if name in (self.owner, self.session.username):
            self.notify(f"{name} has full access already.", title="Sharing")
            return
        if name not in self._choices:
            self._choices = sorted(self._choices + [name])
            self.query_one("#grant-user", Select).set_options([(u, u) for u in self._choices])
        self.query_one("#grant-user", Select).value = name

    @on(Button.Pressed, "#grant-apply")
    def _grant_pressed(self, event):
        event.stop()
        self.action_grant()

    # -- workers --

    @work(thread=True, exit_on_error=False, exclusive=True, group="sharing-load")
    def load(self):
        admin = self.session.admin
        info = admin.grants(self.target)
        role = self.role
        if role is None:
            role = role_on(self.session.username, admin.shared(), self.owner, self.path)
        users = self._users
        if users is None and allowed(role, "grant"):
            users = [u["username"] for u in admin.users()]
        if not get_current_worker().is_cancelled:
            self.post_message(self.Loaded(info.get("grants", []), role, users))

    @work(thread=True, exit_on_error=False, group="sharing-change")
    def apply_grant(self, username, role):
        admin = self.session.admin
        admin.grant(self.target, username, role)
        info = admin.grants(self.target)
        self.changed = True
        self.post_message(self.Loaded(info.get("grants", []), self.role, self._users))
        self.app.call_from_thread(self.notify, f"{username} is now {role} of {self.target}.",
                                  title="Shared")

    @work(thread=True, exit_on_error=False, group="sharing-change")
    def apply_revoke(self, username):
        admin = self.session.admin
        admin.revoke(self.target, username)
        info = admin.grants(self.target)
        self.changed = True
        self.post_message(self.Loaded(info.get("grants", []), self.role, self._users))
        self.app.call_from_thread(self.notify, f"{username} no longer has access to {self.target}.",
                                  title="Revoked")

    def on_worker_state_changed(self, event):
        if event.state == WorkerState.ERROR:
            title, message = describe(event.worker.error)
            self.notify(message, title=title, severity="error")
            if event.worker.group == "sharing-load" and not self._loaded:
                self.query_one("#sharing-summary", Static).update(
                    f"Access to {describe_target(self.target)}.\nCould not load the grants: "
                    f"{message} (ctrl+r retries).")

    # -- results --

    def on_sharing_screen_loaded(self, message):
        self.role = message.role
        self.set_class(not self.may_manage, "-view-only")
        if message.users is not None and self._users is None:
            self._users = message.users
            self._choices = [u for u in message.users
                             if u not in (self.owner, self.session.username)]
            self.query_one("#grant-user", Select).set_options([(u, u) for u in self._choices])
        self._show_grants(message.grants)
        self._loaded = True
        self._update_summary()
        self.refresh_bindings()

    def _show_grants(self, grants):
        """Update the table in place: rows are keyed by user name."""
        table = self.query_one("#grants", DataTable)
        fresh = {g["username"]: g for g in grants}
        for username in list(self._grants):
            if username not in fresh:
                table.remove_row(username)
                del self._grants[username]
        for username, grant in sorted(fresh.items()):
            cells = (username, grant.get("role", ""), grant.get("granted_by") or "")
            if username in self._grants:
                old = self._grants[username]
                for key, value, before in zip(("role", "granted_by"), cells[1:],
                                              (old.get("role", ""), old.get("granted_by") or "")):
                    if value != before:
                        table.update_cell(username, key, value)
            else:
                table.add_row(*cells, key=username)
            self._grants[username] = grant
        table.sort("user")

    def _update_summary(self):
        who = f"You are {self.role or 'not'} {'of' if self.role else 'shared on'} this."
        count = len(self._grants)
        listed = (f"{count} user{'s' if count != 1 else ''} hold{'s' if count == 1 else ''} a role "
                  f"here" if count else "Nobody else has a role here yet")
        self.query_one("#sharing-summary", Static).update(
            f"Access to {describe_target(self.target)}.\n{listed}; the owner ({self.owner}) "
            f"always has full access. {who}")
        if self.role == OWNER:
            note = ("Pick a user and a role, then Grant (g). To change a role, highlight the "
                    "grant, pick the new role, Grant. Revoke with r.")
        elif self.role == "master":
            note = ("As master you grant, change and revoke roles for everyone but the owner. "
                    "Highlight a grant to change it; r revokes it.")
        else:
            note = (f"You are {self.role or 'without a role'} here: only the owner and masters "
                    f"change access. This list is read-only.")
        self.query_one("#sharing-note", Static).update(note)

    # -- highlighting a grant fills the form, so changing a role is pick-and-grant --

    def _highlighted(self):
        return cursor_row_key(self.query_one("#grants", DataTable))

    @on(DataTable.RowHighlighted, "#grants")
    def _grant_highlighted(self, event):
        self.refresh_bindings()
        username = event.row_key.value if event.row_key is not None else None
        grant = self._grants.get(username)
        if grant is None or not self.may_manage:
            return
        users = self.query_one("#grant-user", Select)
        if username in self._choices:
            users.value = username
        self.query_one("#grant-role", Select).value = grant["role"]

    @on(Select.Changed, "#grant-user")
    def _user_changed(self, event):
        existing = self._grants.get(event.value)
        label = "Change (g)" if existing else "Grant (g)"
        self.query_one("#grant-apply", Button).label = label


__all__ = ["SharingScreen", "split_target"]
