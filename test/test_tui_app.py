"""The terminal client driven by Textual's Pilot against a real cluster (admin server and
three nodes), at 80x24 and 120x40: log in, watch the servers, take one offline, see the plot
follow an upload, see a user's file count change, add and remove a user.

Each wait polls the screen with a deadline (``until``), never a bare sleep. A few fast tests
without a cluster cover the pieces (series, ticks, preferences, the command palette).
"""
import asyncio
import json
import time
from datetime import timedelta, timezone

import pytest
from textual.widgets import Input

from securifile.client.errors import PermissionDenied, Unauthorized
from securifile.launcher.cluster import free_ports
from securifile.tui.app import SecuriFileApp
from securifile.tui.errors import login_problem
from securifile.tui.format import axis_size, human_size, linear_byte_ticks, log_byte_ticks
from securifile.tui.prefs import Preferences
from securifile.tui.screens.dialogs import ConfirmScreen, MessageScreen
from securifile.tui.screens.login import LoginScreen
from securifile.tui.screens.servers import ServersScreen, shown_status
from securifile.tui.screens.quota import QuotaScreen
from securifile.tui.screens.users import AddUserScreen, UsersScreen
from securifile.tui.widgets.status import SessionBar
from securifile.tui.session import Session
from securifile.tui.widgets import events as events_panel
from securifile.tui.widgets.events import EventsPanel
from securifile.tui.widgets.storage_plot import StorageLegend, StorageSeries

from .helpers import AdminApi, Api, wait_for
from .tui_data import NOW, fixed_session
from .tui_fakes import FakeEvents, type_ahead

MiB = 1 << 20
POLL = 0.3  # seconds between the screens' calls to the admin server in these tests


def run(scenario):
    asyncio.run(scenario())


async def until(pilot, predicate, timeout=30.0, what="the screen to show it"):
    """Let the app run until ``predicate()`` is truthy; fail after ``timeout`` seconds.
    ``what`` may be a function, called at the timeout to describe what the screen shows."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{what() if callable(what) else what}")
        await pilot.pause(0.1)


async def type_into(pilot, selector, text):
    """Focus an input by clicking it and type, as a user would."""
    field = pilot.app.screen.query_one(selector, Input)
    field.value = ""
    await pilot.click(selector)
    await pilot.press(*text)


def cell(table, row, column):
    value = table.get_cell(row, column)
    return getattr(value, "plain", str(value))


def admin_password(cluster):
    return json.loads((cluster.data_dir / "credentials" / "admin.json").read_text())["password"]


def admin_session(cluster):
    return Session.login(cluster.cfg.admin_url, "admin", admin_password(cluster),
                         ca=str(cluster.layout.ca_cert))


def login_app(cluster, tmp_path, **kwargs):
    return SecuriFileApp(config_dir=tmp_path, login=True, admin_url=cluster.cfg.admin_url,
                         ca=str(cluster.layout.ca_cert), start="servers", poll_seconds=POLL,
                         **kwargs)


# --- login ------------------------------------------------------------------------------------

def test_login_opens_the_client_and_remembers_the_server_and_user_but_not_the_password(cluster, tmp_path):
    password = admin_password(cluster)

    async def scenario():
        app = login_app(cluster, tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, LoginScreen) and app.screen.focused,
                        what="the login screen")
            # The e-mail works too. Typed at full speed, as a password manager does.
            type_ahead(app, [*"admin@localhost", "tab", *password, "enter"])
            await until(pilot, lambda: isinstance(app.screen, ServersScreen), what="the servers screen")
            assert app.session.username == "admin" and app.session.is_admin

    run(scenario)
    remembered = (tmp_path / "tui.json").read_text()
    assert json.loads(remembered) == {"admin_url": cluster.cfg.admin_url,
                                      "username": "admin@localhost",
                                      "ca": str(cluster.layout.ca_cert)}
    assert password not in remembered
    assert (tmp_path / "tui.json").stat().st_mode & 0o777 == 0o600


def test_login_says_why_it_failed(cluster, tmp_path):
    """Wrong password, expired account, unreachable admin server, TLS without our CA."""
    admin = AdminApi(cluster)
    admin.add_user("ephemeral", password="correct horse battery", valid_days=2 / 86400)
    wait_for(lambda: admin.call("POST", "/api/v1/login", {"username": "ephemeral",
                                                          "password": "correct horse battery"}).status == 403,
             timeout=20, interval=0.2, what="the account to expire")
    closed_port = free_ports(1)[0]

    async def attempt(pilot, user, password):
        screen = pilot.app.screen
        await type_into(pilot, "#login-user", user)
        await type_into(pilot, "#login-password", password)
        await pilot.press("enter")
        message = screen.query_one("#login-message")
        await until(pilot, lambda: str(message.render()).strip()
                    and not screen.query_one("#login-button").disabled, what="a login message")
        return str(message.render())

    async def scenario():
        app = login_app(cluster, tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, LoginScreen), what="the login screen")
            text = await attempt(pilot, "admin", "not the password")
            assert "Wrong user name or password" in text

            text = await attempt(pilot, "ephemeral", "correct horse battery")
            assert "expired" in text and "administrator" in text

            app.screen.query_one("#login-admin", Input).value = f"https://127.0.0.1:{closed_port}"
            text = await attempt(pilot, "admin", "whatever it is")
            assert "Cannot reach the admin server" in text

            app.screen.query_one("#login-admin", Input).value = cluster.cfg.admin_url
            app.screen.query_one("#login-ca", Input).value = ""  # the system's CAs do not know ours
            text = await attempt(pilot, "admin", "whatever it is")
            assert text.startswith("TLS failed") and "CA certificate" in text
            assert isinstance(app.screen, LoginScreen) and app.session is None

    run(scenario)
    assert not (tmp_path / "tui.json").exists()  # nothing remembered from failed logins


class NoNetworkLogin(LoginScreen):
    """The login screen with the attempt recorded instead of sent."""

    attempts = []

    def attempt(self, admin_url, username, password, ca):
        self.attempts.append((username, password))


def test_keys_typed_ahead_on_the_login_screen_land_in_the_field_they_were_typed_for(tmp_path):
    """Tab, Shift+Tab and Enter move on before the keys behind them are routed, and Enter
    on the password logs in with every key typed before it."""
    from textual.app import App

    class LoginApp(App):
        def on_mount(self):
            self.push_screen(NoNetworkLogin(admin_url="https://admin.example:8440"))

    def fields(screen):
        return {f: screen.query_one(f"#login-{f}", Input).value for f in ("ca", "user", "password")}

    async def scenario():
        app = LoginApp()
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, NoNetworkLogin)
                                 and app.screen.focused and app.screen)
            assert screen.focused.id == "login-user"  # the first empty field after the URL
            type_ahead(app, [*"alice", "tab", *"pass word", "shift+tab", "shift+tab", *"ca.pem"])
            await until(pilot, lambda: fields(screen)["ca"] == "ca.pem", what="the CA field typed")
            assert fields(screen) == {"ca": "ca.pem", "user": "alice", "password": "pass word"}

            for f in ("ca", "user", "password"):
                screen.query_one(f"#login-{f}", Input).value = ""
            screen.set_focus(screen.query_one("#login-user"))
            await pilot.pause()
            type_ahead(app, [*"bob", "enter", *"correct horse", "enter"])
            await until(pilot, lambda: NoNetworkLogin.attempts, what="the login attempt")
            assert NoNetworkLogin.attempts == [("bob", "correct horse")]
            assert fields(screen) == {"ca": "", "user": "bob", "password": "correct horse"}

    run(scenario)


def test_a_new_account_typed_ahead_in_the_add_user_dialog_lands_field_by_field():
    from textual.app import App

    results = []

    class DialogApp(App):
        def on_mount(self):
            self.push_screen(AddUserScreen(), results.append)

    async def scenario():
        app = DialogApp()
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, AddUserScreen) and app.screen.focused,
                        what="the dialog")
            type_ahead(app, [*"carol", "tab", *"carol@example.com", "enter", "backspace",
                             "backspace", "backspace", *"30", "enter", *"s3cret", "enter"])
            await until(pilot, lambda: results, what="the dialog to close")
            assert results == [{"username": "carol", "email": "carol@example.com",
                                "valid_days": 30.0, "password": "s3cret", "admin": False}]

    run(scenario)


# --- servers ------------------------------------------------------------------------------------

def test_servers_screen_shows_every_server_running_and_takes_one_offline_and_back(cluster, tmp_path):
    session = admin_session(cluster)

    async def scenario():
        app = SecuriFileApp(session=session, config_dir=tmp_path, start="servers", poll_seconds=POLL)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, ServersScreen) and app.screen)
            table = screen.table

            def statuses():
                return {str(k.value): cell(table, k, "status") for k in table.rows}

            await until(pilot, lambda: statuses() == {n: "running" for n in cluster.names},
                        what="every server running")
            while table.cursor_key != "node2":
                await pilot.press("down")
            await pilot.press("o")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
            await pilot.press("y")
            await until(pilot, lambda: statuses()["node2"] == "offline", what="node2 offline")
            assert "(" in cell(table, "node2", "since")  # since when, and for how long
            assert statuses()["node1"] == statuses()["node3"] == "running"

            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
            await pilot.press("y")
            await until(pilot, lambda: statuses()["node2"] == "running", what="node2 running again")
            events = screen.query_one("#events-table")
            await until(pilot, lambda: any(cell(events, k, "event") == "offline" for k in events.rows),
                        what="the offline event in the events panel")

    run(scenario)


def test_plot_follows_an_upload(cluster, tmp_path):
    session = Session.from_cluster_file(cluster.data_dir / "cluster.json")
    api = Api(cluster)

    async def scenario():
        app = SecuriFileApp(session=session, config_dir=tmp_path, start="servers", poll_seconds=POLL)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, ServersScreen) and app.screen)
            assert not screen.has_class("-compact")  # 120x40: plots, not sparklines
            await until(pilot, lambda: "node1" in screen.series and screen.series["node1"].latest,
                        what="the first samples of node1")
            before = screen.series["node1"].latest[1]
            r = api.put("node1", "alice/plot/one.bin", b"x" * MiB)
            assert r.status == 201, r
            await until(pilot, lambda: screen.series["node1"].latest[1] >= before + MiB,
                        what="a sample of node1 with the upload")
            used = screen.series["node1"].latest[1]
            legend = screen.charts["node1"].query_one(StorageLegend)
            await until(pilot, lambda: human_size(used) in str(legend.render()),
                        what="the legend to show the new used bytes")
            assert "node1" in screen.query_one("#plots").children[0].border_title

            await pilot.resize_terminal(80, 24)  # small terminal: one sparkline per server
            await until(pilot, lambda: screen.has_class("-compact"), what="the compact view")
            spark = screen.sparks["node1"]
            await until(pilot, lambda: max(spark.query_one("Sparkline").data or [0]) >= before + MiB,
                        what="the sparkline with the upload")

    run(scenario)


# --- users --------------------------------------------------------------------------------------

def test_users_screen_shows_alices_file_count_after_an_upload(cluster, tmp_path):
    session = Session.from_cluster_file(cluster.data_dir / "cluster.json")
    api = Api(cluster)

    async def scenario():
        app = SecuriFileApp(session=session, config_dir=tmp_path, start="users", poll_seconds=POLL)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, UsersScreen) and app.screen)
            users = screen.users_table
            await until(pilot, lambda: "alice" in [k.value for k in users.rows], what="alice's row")
            assert cell(users, "alice", "files") == "0"
            r = api.put("node1", "alice/docs/hello.txt", b"hello, world\n")
            assert r.status == 201, r
            await until(pilot, lambda: cell(users, "alice", "files") == "1", what="alice's file count")
            assert cell(users, "alice", "volume") == "13 B"
            files = screen.files_table
            await until(pilot, lambda: "docs/hello.txt" in [k.value for k in files.rows],
                        what="the file in alice's list")
            assert cell(files, "docs/hello.txt", "size") == "13 B"

    run(scenario)


def test_administrator_adds_and_removes_a_user_from_the_screen(cluster, tmp_path):
    session = admin_session(cluster)
    admin = AdminApi(cluster)

    async def scenario():
        app = SecuriFileApp(session=session, config_dir=tmp_path, start="users", poll_seconds=POLL)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, UsersScreen) and app.screen)
            users = screen.users_table
            await until(pilot, lambda: users.row_count >= 2, what="the users")
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, AddUserScreen), what="the form")
            await type_into(pilot, "#add-username", "dora")
            await type_into(pilot, "#add-email", "dora@example.com")
            await type_into(pilot, "#add-days", "10")
            await type_into(pilot, "#add-password", "correct horse battery")
            await pilot.press("enter")
            await until(pilot, lambda: "dora" in [k.value for k in users.rows], what="dora's row")
            assert cell(users, "dora", "email") == "dora@example.com"
            assert AdminApi(cluster, "dora", "correct horse battery").token  # she can log in

            users.move_cursor(row=users.get_row_index("dora"))
            await pilot.press("delete")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
            await pilot.press("y")
            await until(pilot, lambda: "dora" not in [k.value for k in users.rows], what="dora gone")
            names = [u["username"] for u in admin.get("/api/v1/users").json()["users"]]
            assert "dora" not in names

            await pilot.press("a")  # without a password the user gets an enrolment code
            await until(pilot, lambda: isinstance(app.screen, AddUserScreen), what="the form")
            await type_into(pilot, "#add-username", "emil")
            await type_into(pilot, "#add-email", "emil@example.com")
            await pilot.click("#add")
            # A pushed screen composes after it becomes app.screen: wait for its body too.
            shown = await until(pilot, lambda: isinstance(app.screen, MessageScreen)
                                and app.screen.query("#message-body") and app.screen,
                                what="the enrolment note")
            assert "enrolment code was e-mailed" in str(shown.query_one("#message-body").render())

    run(scenario)


def test_administrator_sets_a_quota_and_the_user_sees_it_in_the_status_bar(cluster, tmp_path):
    session = admin_session(cluster)
    alice = Session.from_cluster_file(cluster.data_dir / "cluster.json")
    admin = AdminApi(cluster)

    async def scenario():
        app = SecuriFileApp(session=session, config_dir=tmp_path, start="users", poll_seconds=POLL)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, UsersScreen) and app.screen)
            users = screen.users_table
            await until(pilot, lambda: "alice" in [k.value for k in users.rows], what="alice's row")
            assert cell(users, "alice", "quota") == "none"
            users.move_cursor(row=users.get_row_index("alice"))
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, QuotaScreen)
                        and app.screen.query("#quota-size"), what="the quota form")
            await type_into(pilot, "#quota-size", "10X")
            await pilot.press("enter")
            error = app.screen.query_one("#quota-error")
            await until(pilot, lambda: "not a size" in str(error.render()), what="the complaint")
            await type_into(pilot, "#quota-size", "2G")
            await pilot.press("enter")
            await until(pilot, lambda: cell(users, "alice", "quota").startswith("2.0 GiB"),
                        what="alice's new quota")
            users_now = {u["username"]: u for u in admin.get("/api/v1/users").json()["users"]}
            assert users_now["alice"]["quota_bytes"] == 2 << 30

        alice_app = SecuriFileApp(session=alice, config_dir=tmp_path / "alice", start="users",
                                  poll_seconds=POLL)
        async with alice_app.run_test(size=(120, 40)) as pilot:
            bar = await until(pilot, lambda: isinstance(alice_app.screen, UsersScreen)
                              and alice_app.screen.query_one(SessionBar))
            await until(pilot, lambda: "of 2.0 GiB" in str(bar.render()), what="the usage")

    try:
        run(scenario)
    finally:
        admin.call("PATCH", "/api/v1/users/alice", {"quota_bytes": None})


# --- without a cluster ----------------------------------------------------------------------------

def test_command_palette_offers_the_screens_actions_and_runs_them(tmp_path):
    async def scenario():
        app = SecuriFileApp(session=fixed_session(), config_dir=tmp_path, start="servers",
                            poll_seconds=3600, now=lambda: NOW, tz=timezone.utc)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ServersScreen))
            await app.workers.wait_for_complete()
            await pilot.pause()
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert {"Offline", "View", "Go to Users", "Go to Servers", "Help", "Log out",
                    "Theme"} <= titles
            await pilot.press("ctrl+p")
            await pilot.press(*"Go to Users")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, UsersScreen), what="the users screen")
            await pilot.press("f1")
            await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
            await pilot.press("escape")
            await pilot.press("ctrl+l")
            await until(pilot, lambda: isinstance(app.screen, LoginScreen), what="the login screen")
            assert app.session is None

    run(scenario)


def with_plotted_samples(tmp_path, samples, check):
    """The servers screen over three samples (``(seconds ago, used, available)``) for every
    server; ``check(pilot, app, plots)`` once each server's plot has them."""
    session = fixed_session()
    session.admin.storage = lambda name, since=None, limit=None: [
        {"t": (NOW - timedelta(seconds=s)).isoformat(), "used_bytes": u, "available_bytes": a}
        for s, u, a in samples]

    async def scenario():
        app = SecuriFileApp(session=session, config_dir=tmp_path, start="servers",
                            poll_seconds=3600, now=lambda: NOW, tz=timezone.utc)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, ServersScreen) and app.screen)
            await app.workers.wait_for_complete()
            await until(pilot, lambda: screen.series and all(
                len(s.points) == len(samples) for s in screen.series.values()),
                what="the samples")
            await pilot.pause()
            plots = list(screen.query("StoragePlot"))
            assert plots
            await check(pilot, app, plots)
            assert isinstance(app.screen, ServersScreen)

    run(scenario)


@pytest.mark.parametrize("scale", ["log", "linear"])
def test_a_server_that_has_not_measured_its_disk_yet_is_drawn_on_either_scale(tmp_path, scale):
    """A server just added reports no sizes yet (zero used, zero available): its plot shows
    an empty axis rather than the app stopping on log10(0)."""
    async def check(pilot, app, plots):
        for plot in plots:
            plot.scale = scale
            plot.replot()
        await pilot.pause()

    with_plotted_samples(tmp_path, [(40, 0, 0), (20, 0, 0), (0, 0, 0)], check)


def test_a_plot_drawn_again_without_new_samples_is_the_same_plot(tmp_path):
    """plotext applies a log axis to the data in place when it builds: a second render of
    the same samples (a dialog or a notification over the screen) took the log of a log,
    and of log10(1) = 0, stopping the app (a CI run did)."""
    async def check(pilot, app, plots):
        assert all(p.scale == "log" for p in plots)
        for plot in plots:
            drawn = [plot.render().plain for _ in range(3)]
            assert drawn[0] == drawn[1] == drawn[2] and drawn[0].strip()
        app.notify("a notification over the plots")
        await pilot.pause()

    with_plotted_samples(tmp_path, [(40, 0, 10**9), (20, 10, 10**9), (0, 10**6, 10**9)], check)


def test_users_screen_lists_every_account_page_by_page_and_drops_removed_ones(tmp_path):
    session = fixed_session()
    accounts = [{"username": f"u{i:04d}", "email": f"u{i:04d}@example.com", "admin": False,
                 "disabled": False, "valid_until": "2036-03-11T12:00:00+00:00",
                 "file_count": i, "total_bytes": i} for i in range(450)]
    session.admin.users = lambda page_size=0: [dict(u) for u in accounts]
    calls, one_page = [], session.admin.users_page

    def users_page(*, limit=200, after=None):
        calls.append((limit, after))
        return one_page(limit=limit, after=after)

    session.admin.users_page = users_page

    async def scenario():
        app = SecuriFileApp(session=session, config_dir=tmp_path, start="users",
                            poll_seconds=3600, now=lambda: NOW, tz=timezone.utc)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, UsersScreen) and app.screen)
            await until(pilot, lambda: len(screen.users) == 450, what="every account")
            assert calls == [(200, None), (200, "u0199"), (200, "u0399")]  # keyset pages
            assert screen.users_table.row_count == 450
            del accounts[10:20]
            screen.poll()
            await until(pilot, lambda: len(screen.users) == 440, what="the removed accounts gone")
            assert screen.users_table.row_count == 440 and "u0015" not in screen.users

    run(scenario)


def test_a_non_administrator_is_not_offered_administrative_actions(tmp_path):
    async def scenario():
        session = fixed_session(admin=False, username="alice")
        app = SecuriFileApp(session=session, config_dir=tmp_path, start="servers",
                            poll_seconds=3600, now=lambda: NOW, tz=timezone.utc)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ServersScreen))
            await app.workers.wait_for_complete()
            await pilot.pause()
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert not {"Offline", "Online"} & titles
            await pilot.press("o")  # bound, but not for alice: nothing happens
            await pilot.pause()
            assert isinstance(app.screen, ServersScreen)
            await pilot.press("f4")
            await until(pilot, lambda: isinstance(app.screen, UsersScreen))
            await app.workers.wait_for_complete()
            await pilot.pause()
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert not {"Add user", "Remove"} & titles

    run(scenario)


def test_events_panel_pages_through_a_burst_between_two_polls_without_a_gap():
    """450 events between two polls: all fetched, in pages of at most 200; a flood beyond
    MAX_PAGES pages a poll is caught up on the next poll, still in order."""
    from textual.app import App

    admin = FakeEvents()
    admin.add(30)

    class EventsApp(App):
        def compose(self):
            yield EventsPanel(admin, poll_seconds=3600, cap=300)

    def shown_ids(panel):
        return [int(k.value) for k in panel.table.rows]

    async def scenario():
        async with EventsApp().run_test(size=(120, 40)) as pilot:
            panel = pilot.app.query_one(EventsPanel)
            await until(pilot, lambda: panel.last_id == 30, what="the first load")
            assert admin.calls == [(None, events_panel.FIRST_LOAD)]

            admin.add(450)
            admin.calls.clear()
            panel.poll()
            await until(pilot, lambda: panel.last_id == 480, what="the burst of 450")
            assert shown_ids(panel) == list(range(181, 481))  # the newest 300, no gap
            assert admin.calls == [(30, 200), (230, 200), (430, 200)]

            flood = events_panel.MAX_PAGES * events_panel.PAGE + 150
            admin.add(flood)
            admin.calls.clear()
            panel.poll()
            await until(pilot, lambda: panel.last_id == 480 + flood - 150, what="the first slice")
            await until(pilot, lambda: not any(w.group == "events" and not w.is_finished
                                               for w in panel.workers), what="the poll to end")
            assert len(admin.calls) == events_panel.MAX_PAGES
            panel.poll()
            await until(pilot, lambda: panel.last_id == 480 + flood, what="the rest")
            assert shown_ids(panel) == list(range(480 + flood - 299, 480 + flood + 1))

    run(scenario)


def test_storage_series_keeps_new_samples_once_and_caps_them():
    series = StorageSeries(cap=3)
    t = [(NOW + timedelta(seconds=i)).isoformat() for i in range(5)]
    assert series.extend([{"t": t[0], "used_bytes": 1, "available_bytes": 9}])
    assert not series.extend([{"t": t[0], "used_bytes": 1, "available_bytes": 9}])  # since is inclusive
    assert series.extend([{"t": x, "used_bytes": i, "available_bytes": 9} for i, x in enumerate(t)])
    assert len(series) == 3 and series.latest[1:] == (4, 9)
    assert series.window(series.latest[0])[0][1] == 3  # one point before the window's start


def test_byte_axis_ticks_are_round_and_cover_the_data():
    assert [axis_size(t) for t in log_byte_ticks(1, 80 << 30)] == ["1 B", "1 KiB", "1 MiB", "1 GiB", "1 TiB"]
    assert [axis_size(t) for t in linear_byte_ticks(0, 80 << 30)] == ["0 B", "20 GiB", "40 GiB", "60 GiB", "80 GiB"]
    ticks = log_byte_ticks(70 << 30, 80 << 30)
    assert ticks[0] <= 70 << 30 and ticks[-1] >= 80 << 30


def test_preferences_never_hold_a_password(tmp_path):
    prefs = Preferences(tmp_path)
    assert prefs.update(admin_url="https://a:8440", username="alice", ca="/ca.crt")
    with pytest.raises(ValueError):
        prefs.update(password="secret")
    assert prefs.load() == {"admin_url": "https://a:8440", "username": "alice", "ca": "/ca.crt"}
    assert (tmp_path / "tui.json").stat().st_mode & 0o777 == 0o600
    prefs.update(theme="nord")
    assert SecuriFileApp(config_dir=tmp_path).theme == "nord"  # the theme chosen last time


def test_status_shows_a_pending_change_and_login_errors_read_as_sentences():
    assert shown_status({"status": "running", "admin_state": "offline"}) == "running → offline"
    assert shown_status({"status": "offline", "admin_state": "offline"}) == "offline"
    # A drain under way, with what it still has to move.
    assert shown_status({"status": "running", "membership": "draining", "files_left": 12}) \
        == "running, draining: 12 left"
    assert shown_status({"status": "running", "membership": "member", "files_left": None}) \
        == "running"
    assert "Wrong user name or password" in login_problem(
        Unauthorized(401, "bad_credentials", "bad credentials"), "https://a")
    assert "expired" in login_problem(
        PermissionDenied(403, "account_expired", "account expired on 2026-01-01"), "https://a")
