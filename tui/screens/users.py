"""The users screen: every account with its file count, volume and quota, and the files of
the selected one; administrators also see e-mail and validity, add and remove accounts and
set quotas.

The account list is polled and updated in place (rows keyed by user name). Moving the cursor
to a user loads that user's files page by page in a thread worker, each page appended as it
arrives, so a user with many files does not hold the screen up.
"""
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, Label, Static
from textual.worker import WorkerState, get_current_worker

from securifile.client.admin import PAGE

from ..format import date_time, human_size, valid_until
from ..polling import PollWhileShown
from ..typeahead import FIELD_KEYS, TypeAheadForm
from ..widgets.status import SessionBar
from ..widgets.table import LiveTable
from .dialogs import DIALOG_CSS, ConfirmScreen, MessageScreen
from .quota import QuotaScreen, quota_text

FILES_PAGE = PAGE
USERS_MAX_PAGES = 1000  # 200,000 accounts; a bound on one refresh, not a limit in practice
FILES_CAP = 20000  # rows; past this the list says how many more there are
USER_COLUMNS = (("username", "User"), ("files", "Files"), ("volume", "Volume"), ("quota", "Quota"))
ADMIN_COLUMNS = (("email", "E-mail"), ("valid", "Valid until"), ("role", "Role"))
FILE_COLUMNS = (("path", "Path"), ("size", "Size"), ("version", "Ver"), ("modified", "Modified"),
                ("replicas", "Copies"), ("digest", "Digest"))


class UsersPage(Message):
    def __init__(self, users, first, last):
        super().__init__()
        self.users, self.first, self.last = users, first, last


class FilesPage(Message):
    """One page of a user's files; ``first`` starts a new listing, ``last`` ends it."""

    def __init__(self, username, page, first, last):
        super().__init__()
        self.username, self.page, self.first, self.last = username, page, first, last


class UserAdded(Message):
    def __init__(self, result):
        super().__init__()
        self.result = result


class QuotaSet(Message):
    def __init__(self, result):
        super().__init__()
        self.result = result


class UserRemoved(Message):
    def __init__(self, username):
        super().__init__()
        self.username = username


class AddUserScreen(TypeAheadForm, ModalScreen[dict]):
    """The new account's name, e-mail, validity, optional password and role."""

    DEFAULT_CSS = DIALOG_CSS.format(name="AddUserScreen") + """
    AddUserScreen #add-user-error { color: $error; height: auto; }
    AddUserScreen .field { height: 1; margin-bottom: 1; }
    AddUserScreen .field Label { width: 14; }
    AddUserScreen .field Input { width: 1fr; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="add-user.cancel"), *FIELD_KEYS]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Add a user", classes="dialog-title")
            for field, label, placeholder in (
                    ("username", "User name", "letters, digits, . _ -"),
                    ("email", "E-mail", "the account e-mail goes there"),
                    ("days", "Valid (days)", "365"),
                    ("password", "Password", "empty: the user sets it (e-mailed code)")):
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input(placeholder=placeholder, id=f"add-{field}",
                                password=field == "password", compact=True,
                                value="365" if field == "days" else "")
            yield Checkbox("Administrator", id="add-admin", compact=True)
            yield Static("", id="add-user-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Add", id="add", variant="primary", compact=True)

    def submit_form(self):
        self.submit()

    @on(Button.Pressed, "#add")
    def submit(self):
        value = {f: self.query_one(f"#add-{f}", Input).value.strip()
                 for f in ("username", "email", "days")}
        password = self.query_one("#add-password", Input).value
        problem = None
        if not value["username"]:
            problem = "A user name is needed."
        elif "@" not in value["email"]:
            problem = "An e-mail address is needed (the account e-mail is sent there)."
        else:
            try:
                days = float(value["days"] or "365")
                if days <= 0:
                    raise ValueError
            except ValueError:
                problem = "The validity is a positive number of days."
        if problem:
            self.query_one("#add-user-error", Static).update(problem)
            return
        self.dismiss({"username": value["username"], "email": value["email"], "valid_days": days,
                      "password": password or None,
                      "admin": self.query_one("#add-admin", Checkbox).value})

    @on(Button.Pressed, "#cancel")
    def action_cancel(self):
        self.dismiss(None)


class UsersScreen(PollWhileShown, Screen):
    """Accounts on the left (or top), the selected account's files on the right (or below)."""

    TITLE = "Users"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (150, "-wide")]
    DEFAULT_CSS = """
    UsersScreen #users-body { layout: vertical; }
    UsersScreen.-wide #users-body { layout: horizontal; }
    UsersScreen #users-table, UsersScreen #user-files {
        border: round $panel-lighten-2;
        border-title-color: $foreground;
        height: 1fr;
    }
    UsersScreen #users-table:focus, UsersScreen #user-files:focus { border: round $primary; }
    UsersScreen.-narrow #users-table { height: 2fr; max-height: 14; }
    UsersScreen.-narrow #user-files { height: 3fr; }
    UsersScreen.-wide #users-table { width: 1fr; }
    UsersScreen.-wide #user-files { width: 1fr; }
    """
    BINDINGS = [
        Binding("r,ctrl+r", "refresh", "Refresh", id="users.refresh", show=False,
                tooltip="Ask the admin server now"),
        Binding("a", "add_user", "Add user", id="users.add", tooltip="Create an account (administrators)"),
        Binding("delete,x", "remove_user", "Remove", id="users.remove",
                tooltip="Remove the selected account (administrators)"),
        Binding("q", "set_quota", "Quota", id="users.quota",
                tooltip="Set or lift the selected account's quota (administrators)"),
        Binding("s", "sharing", "Sharing", id="users.sharing",
                tooltip="Grants on the selected file"),
    ]

    def __init__(self, session, *, poll_seconds=5.0, **kwargs):
        super().__init__(**kwargs)
        self.session = session
        self.poll_seconds = poll_seconds
        self.users = {}  # username -> the API's dict
        self.shown_user = None  # whose files the right table holds
        self.listing = {}  # path -> file dict of shown_user
        self._seen = set()
        self._listed = set()  # the accounts this refresh has listed so far
        self._files_owner = None  # whose rows the files table holds (shown_user once loaded)
        self._select_timer = None

    def compose(self) -> ComposeResult:
        yield SessionBar("Users", self.session)
        with Horizontal(id="users-body"):
            users = LiveTable(cursor_type="row", id="users-table")
            users.border_title = "Users"
            for key, label in USER_COLUMNS + (ADMIN_COLUMNS if self.session.is_admin else ()):
                users.add_column(label, key=key)
            yield users
            files = LiveTable(cursor_type="row", id="user-files")
            files.border_title = "Files"
            for key, label in FILE_COLUMNS:
                files.add_column(label, key=key)
            yield files
        yield Footer()

    @property
    def users_table(self):
        return self.query_one("#users-table", LiveTable)

    @property
    def files_table(self):
        return self.query_one("#user-files", LiveTable)

    def on_mount(self):
        self.users_table.focus()
        self.start_polling()

    def on_screen_suspend(self):
        self.pause_polling()

    def on_screen_resume(self):
        self.resume_polling()

    # -- the account list --

    def poll(self):
        if not self.working("users"):
            self.fetch_users()

    @work(thread=True, exclusive=True, group="users", exit_on_error=False)
    def fetch_users(self):
        """Page by page (keyset, by name), each shown as it comes: the first rows appear
        after one short request however many accounts there are."""
        worker, admin, after = get_current_worker(), self.session.admin, None
        for number in range(USERS_MAX_PAGES):
            page = admin.users_page(limit=PAGE, after=after)
            last = len(page) < PAGE or number == USERS_MAX_PAGES - 1
            if worker.is_cancelled:
                return
            self.post_message(UsersPage(page, number == 0, last))
            if last:
                return
            after = page[-1]["username"]

    def on_users_page(self, message: UsersPage):
        self.app.clear_error("users")
        table = self.users_table
        fresh = {u["username"]: u for u in message.users if u.get("username")}
        if message.first:
            self._listed = set()
        self._listed.update(fresh)
        if message.last:
            for name in table.prune(self._listed):
                self.users.pop(name, None)
        for name, user in fresh.items():
            old = self.users.get(name)
            table.upsert(name, self.user_cells(user))
            self.users[name] = user
            if name == self.shown_user and old is not None and self.may_list(name) and (
                    old.get("file_count"), old.get("total_bytes")) != (
                    user.get("file_count"), user.get("total_bytes")):
                self.load_files(name)  # their files changed: list them again
        table.border_title = f"Users ({len(self.users)})"
        if self.shown_user is None and self.users:
            if not self.session.is_admin and self.session.username in self.users:
                table.move_cursor(row=table.get_row_index(self.session.username))
            self.select_soon()

    def user_cells(self, user):
        cells = {
            "username": Text(user["username"], style="bold" if user.get("admin") else ""),
            "files": Text(str(user.get("file_count", 0)), justify="right"),
            "volume": Text(human_size(user.get("total_bytes", 0)), justify="right"),
            # Shown where the server tells (administrators: everyone; others: themselves).
            "quota": Text(quota_text(user) if "quota_bytes" in user else "", justify="right",
                          style="red" if over_quota(user) else ""),
        }
        if self.session.is_admin:
            role = "disabled" if user.get("disabled") else "admin" if user.get("admin") else "user"
            until = valid_until(user.get("valid_until"), self.app.now(), self.app.tz)
            cells.update({
                "email": user.get("email") or "",
                "valid": Text(until, style="red" if until.startswith("expired") else ""),
                "role": Text(role, style="bold" if role == "admin" else "dim" if role == "disabled" else ""),
            })
        return cells

    @property
    def selected_user(self):
        return self.users_table.cursor_key

    # -- the selected user's files --

    @on(DataTable.RowHighlighted, "#users-table")
    def user_highlighted(self, event):
        self.refresh_bindings()
        self.select_soon()

    @on(DataTable.RowHighlighted, "#user-files")
    def file_highlighted(self, event):
        self.refresh_bindings()

    @on(DataTable.RowSelected, "#users-table")
    def user_selected(self, event):
        self.show_files(event.row_key.value)
        self.files_table.focus()

    def select_soon(self):
        """Follow the cursor, but not on every row it passes while a key is held down."""
        if self._select_timer is not None:
            self._select_timer.stop()
        self._select_timer = self.set_timer(0.15, lambda: self.show_files(self.selected_user))

    def show_files(self, username):
        if username is None or username == self.shown_user:
            return
        self.shown_user = username
        if self.may_list(username):
            self.load_files(username)
            return
        user = self.users.get(username, {})  # the counts are public, the list is not
        self.files_table.clear()
        self.listing, self._files_owner = {}, None
        self.files_table.border_title = (
            f"Files of {username}: {user.get('file_count', 0)} "
            f"({human_size(user.get('total_bytes', 0))}), listed to {username} and administrators only")

    def may_list(self, username):
        return self.session.is_admin or username == self.session.username

    def load_files(self, username):
        table = self.files_table
        table.border_title = f"Files of {username} (loading…)"
        if username != self._files_owner:
            table.clear()  # another user's list: nothing to update in place
            self.listing = {}
            self._files_owner = username
        self.fetch_files(username)

    @work(thread=True, exclusive=True, group="user-files", exit_on_error=False)
    def fetch_files(self, username):
        worker = get_current_worker()
        after, fetched, first = None, 0, True
        while not worker.is_cancelled:
            page = self.session.admin.user_files(username, limit=FILES_PAGE, after=after)
            fetched += len(page.get("files", []))
            after = page.get("next")
            last = not after or fetched >= FILES_CAP
            if worker.is_cancelled:
                return
            self.post_message(FilesPage(username, page, first, last))
            first = False
            if last:
                return

    def on_files_page(self, message: FilesPage):
        if message.username != self.shown_user:
            return  # the cursor has moved on
        table = self.files_table
        if message.first:
            self._seen = set()
        for f in message.page.get("files", []):
            path = f.get("path")
            if not path:
                continue
            self._seen.add(path)
            table.upsert(path, self.file_cells(f))
            self.listing[path] = f
        page = message.page
        count, total = page.get("file_count", len(self._seen)), page.get("total_bytes", 0)
        if message.last:
            for gone in table.prune(self._seen):
                self.listing.pop(gone, None)
            more = f", first {len(self.listing)} shown" if count > len(self.listing) else ""
            table.border_title = (f"Files of {message.username}: {count} "
                                  f"({human_size(total)}){more}")
        else:
            table.border_title = f"Files of {message.username}: {len(self._seen)} of {count}…"

    def file_cells(self, f):
        digest = f.get("digest") or ""
        return {
            "path": f.get("path", ""),
            "size": Text(human_size(f.get("size")), justify="right"),
            "version": Text(str(f.get("version", "")), justify="right"),
            "modified": date_time(f.get("modified"), self.app.tz),
            "replicas": Text(str(len(f.get("replicas") or [])), justify="right"),
            "digest": f"{f.get('algorithm', '')}:{digest[:10]}" if digest else "",
        }

    @property
    def selected_file(self):
        return self.files_table.cursor_key

    # -- actions --

    def check_action(self, action, parameters):
        if action in ("add_user", "remove_user", "set_quota"):
            if not self.session.is_admin:
                return False
            if action == "set_quota":
                return self.is_mounted and bool(self.query("#users-table")) and \
                    self.selected_user is not None
            if action == "remove_user":
                user = self.selected_user if self.is_mounted and self.query("#users-table") else None
                return user is not None and user != self.session.username
        if action == "sharing":
            if self.app.sharing_screen_class() is None:
                return False
            # the grants on a file are the owner's (and masters') business, not every admin's
            mounted = self.is_mounted and self.query("#user-files")
            return bool(mounted and self.selected_file and self.shown_user == self.session.username)
        return True

    def action_refresh(self):
        self.poll()
        if self.shown_user and self.may_list(self.shown_user):
            self.load_files(self.shown_user)

    def action_add_user(self):
        def added(values):
            if values:
                self.add_user(values)

        self.app.push_screen(AddUserScreen(), added)

    @work(thread=True, group="add-user", exit_on_error=False)
    def add_user(self, values):
        result = self.session.admin.add_user(values["username"], values["email"],
                                             values["valid_days"], password=values["password"],
                                             admin=values["admin"])
        self.post_message(UserAdded(result))

    def on_user_added(self, message: UserAdded):
        r = message.result
        self.poll()
        if r.get("enrolment_expires_at"):
            until = date_time(r.get("enrolment_expires_at"), self.app.tz)
            if r.get("email_sent"):
                how = (f"An enrolment code was e-mailed to {r.get('email')}: with it the user "
                       f"sets the password, once, until {until}.")
            else:
                how = (f"The account e-mail could not be sent: {r.get('email_error', '')}\n\n"
                       f"Enrolment code (works once, until {until}; pass it on safely):"
                       f"\n\n  {r.get('enrolment_code', '')}")
            self.app.push_screen(MessageScreen(
                f"User {r['username']} added",
                f"{how}\n\nValid until {date_time(r.get('valid_until'), self.app.tz)}."))
        else:
            self.notify(f"User {r['username']} added, valid until "
                        f"{date_time(r.get('valid_until'), self.app.tz)}", title="Users")

    def action_set_quota(self):
        name = self.selected_user
        if name is None:
            return

        def chosen(values):
            if values:
                self.set_quota(name, values["quota_bytes"])

        self.app.push_screen(QuotaScreen(self.users.get(name, {"username": name})), chosen)

    @work(thread=True, group="set-quota", exit_on_error=False)
    def set_quota(self, name, quota):
        self.post_message(QuotaSet(self.session.admin.set_quota(name, quota)))

    def on_quota_set(self, message: QuotaSet):
        r = message.result
        self.notify(f"Quota of {r['username']}: {quota_text(r)}", title="Users")
        self.poll()

    def action_remove_user(self):
        name = self.selected_user
        if name is None:
            return
        user = self.users.get(name, {})
        question = (f"Remove the account {name}? It owns {user.get('file_count', 0)} files "
                    f"({human_size(user.get('total_bytes', 0))}). The user can no longer log "
                    f"in; this cannot be undone.")

        def answered(yes):
            if yes:
                self.remove_user(name)

        self.app.push_screen(ConfirmScreen(question, title=f"Remove {name}", yes="Remove"), answered)

    @work(thread=True, group="remove-user", exit_on_error=False)
    def remove_user(self, name):
        self.session.admin.remove_user(name)
        self.post_message(UserRemoved(name))

    def on_user_removed(self, message: UserRemoved):
        self.notify(f"User {message.username} removed", title="Users")
        if self.shown_user == message.username:
            self.shown_user = None
        self.poll()

    def action_sharing(self):
        screen_class = self.app.sharing_screen_class()
        path = self.selected_file
        if screen_class is None or path is None or self.shown_user is None:
            return
        self.app.push_screen(screen_class(self.session, f"{self.shown_user}/{path}"))

    def on_worker_state_changed(self, event):
        if event.worker.node is self and event.state == WorkerState.ERROR:
            self.app.report_error(event.worker.error, source=event.worker.group or "users")


def over_quota(user):
    quota = user.get("quota_bytes")
    return quota is not None and (user.get("total_bytes") or 0) >= quota
