"""An administrator grows and shrinks a running cluster from the servers screen (Pilot,
real processes): adds a fourth server through the dialog, sees it running, drains it and
removes it; a removal the admin server refuses reads as a sentence, not a code. A user is
offered none of it."""
import asyncio
import os
from datetime import timezone

import pytest

from securifile.tui.app import SecuriFileApp
from securifile.tui.screens.add_server import AddServerScreen
from securifile.tui.screens.dialogs import ConfirmScreen
from securifile.tui.screens.servers import ServersScreen

from .clusters import start_cluster
from .helpers import AdminApi, Api
from .test_tui_app import POLL, admin_session, cell, type_into, until
from .tui_data import NOW, fixed_session

FILES = 30  # the drain moves one a round (1 s) per node: ten seconds or more of work to refuse
MEMBERSHIP_ACTIONS = {"Add server", "Drain", "Remove"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "tui-membership", servers=3, replicas=1,
                      repair_interval=1.0, repair_batch=1, repair_after=600.0)
    try:
        yield c
    finally:
        c.stop()


def node4_state(admin):
    for s in admin.get("/api/v1/servers").json()["servers"]:
        if s["name"] == "node4":
            return s
    return None


def test_administrator_adds_drains_and_removes_a_server_from_the_screen(cluster, tmp_path):
    session = admin_session(cluster)
    admin, api = AdminApi(cluster), Api(cluster)
    entry = cluster.new_server("node4")

    async def scenario():
        app = SecuriFileApp(session=session, config_dir=tmp_path, start="servers",
                            poll_seconds=POLL)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, ServersScreen) and app.screen)
            table = screen.table
            await until(pilot, lambda: len(table.rows) == 3, what="three servers")
            titles = {c.title for c in app.get_system_commands(screen)}
            assert {"Add server", "Drain"} <= titles and "Remove" not in titles  # node1: a member

            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, AddServerScreen), what="the dialog")
            await type_into(pilot, "#add-server-name", "node4")
            await type_into(pilot, "#add-server-url", entry.url)
            await pilot.press("enter")
            await until(pilot, lambda: "node4" in screen.servers, what="node4 in the table")
            await until(pilot, lambda: any("node4 added" in n.message for n in app._notifications),
                        what=f"the notification: {[(n.title, n.message) for n in app._notifications]}")
            cluster.start_node("node4")
            await until(pilot, lambda: cell(table, "node4", "status") == "running", timeout=90,
                        what="node4 verified and running")

            # node4 holds copies of its own: a removal right after the drain is refused.
            def put(i):
                """Stored; False while node4 still catches up (503); anything else fails."""
                _node, r = api.follow("node4", "PUT", f"alice/tui-drain/{i}.bin",
                                      body=os.urandom(2048))
                if r.status == 503:
                    return False
                assert r.status == 201, r
                return True

            # Running as the admin server sees it; writable once it has caught up (503 before).
            await until(pilot, lambda: put(0), timeout=60, what="node4 taking writes")
            for i in range(1, FILES):
                assert put(i)
            # A drain asked before a majority holds epoch 2 is refused (as a sentence).
            await until(pilot, lambda: admin.get("/api/v1/servers").json()["committed"],
                        timeout=60, what="epoch 2 known to a majority")
            while table.cursor_key != "node4":
                await pilot.press("down")
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
            await pilot.press("y")
            await until(pilot, lambda: "draining" in cell(table, "node4", "status"),
                        what=lambda: f"node4 draining: {cell(table, 'node4', 'status')!r}, "
                                     f"{[(n.title, n.message) for n in app._notifications]}")
            await until(pilot, lambda: "Remove" in {c.title for c in app.get_system_commands(screen)},
                        what="Remove offered for a draining server")
            app.clear_notifications()
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
            await pilot.press("y")
            refusal = await until(pilot, lambda: [n for n in app._notifications
                                                  if n.title == "Membership change refused"],
                                  what=f"the refusal: {[n.message for n in app._notifications]}")
            assert ("drain it first" in refusal[0].message
                    or "not yet known to a majority" in refusal[0].message), refusal[0].message
            assert "node4" in screen.servers

            # Once its copies are elsewhere and the change is known, the removal goes through.
            await until(pilot, lambda: node4_state(admin)["files_left"] == 0
                        and admin.get("/api/v1/servers").json()["committed"], timeout=120,
                        what="node4 drained, epoch committed")
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
            await pilot.press("y")
            await until(pilot, lambda: "node4" not in screen.servers and len(table.rows) == 3,
                        what="node4 gone from the table")
        assert node4_state(admin) is None

    asyncio.run(scenario())
    for i in range(FILES):  # every file still reads back from the three that stay
        _node, r = api.follow("node1", "GET", f"alice/tui-drain/{i}.bin")
        assert r.status == 200 and len(r.body) == 2048, r


def test_a_user_is_not_offered_membership_changes(tmp_path):
    async def scenario():
        app = SecuriFileApp(session=fixed_session(admin=False, username="alice"),
                            config_dir=tmp_path, start="servers", poll_seconds=3600,
                            now=lambda: NOW, tz=timezone.utc)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ServersScreen))
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert not MEMBERSHIP_ACTIONS & {c.title for c in app.get_system_commands(app.screen)}
            await pilot.press("a")  # bound, but not for alice: no dialog
            await pilot.pause()
            assert isinstance(app.screen, ServersScreen)

    asyncio.run(scenario())
