"""Pilot tests of the Files and Sharing screens.

Most run against a real cluster (admin server and three nodes) and drive the screens as a
user would: the file pickers, the confirmation dialogs, the key bindings. The paging and
role tests use the in-memory admin of ``tui_fakes`` to have 10,000 files at no cost.
"""
import asyncio
import os
import time

import pytest
from textual.widgets import DataTable, Input, Select
from textual_fspicker import FileOpen, SelectDirectory

from securifile.client.admin import AdminUnreachable
from securifile.client.errors import FileNotFound
from securifile.tui.screens.dialogs import ConfirmScreen
from securifile.tui.screens.files import PAGE, SHARED, FilesScreen, FolderRef
from securifile.tui.screens.sharing import SharingScreen
from securifile.tui.session import Session
from securifile.tui.widgets.transfers import CANCELLED, TransfersPanel

from .helpers import AdminApi, disk_copy
from .tui_fakes import FakeAdmin, FilesApp, SharingApp, fake_session, record, until

SIZE = (100, 30)


def files_screen(app):
    return next(s for s in app.screen_stack if isinstance(s, FilesScreen))


async def loaded(pilot):
    """The Files screen, once its first listing has arrived."""
    await until(pilot, lambda: any(isinstance(s, FilesScreen) for s in pilot.app.screen_stack),
                what="the Files screen")
    screen = files_screen(pilot.app)
    await until(pilot, lambda: "loading" not in location(screen), what="the first listing")
    return screen


def location(screen):
    return str(screen.query_one("#files-location").render())


async def listing_done(pilot, screen):
    """Wait until no listing worker of ``screen`` runs, and its answer has been shown."""
    await until(pilot, lambda: not [w for w in pilot.app.workers if w.node is screen
                                    and w.group == "listing" and not w.is_finished],
                what="the listing")
    await pilot.pause()


async def highlight(pilot, screen, key):
    """Move the table's cursor to the row ``key`` with the arrow keys, as a user would."""
    table = screen.table
    screen.set_focus(table)
    await until(pilot, lambda: key in screen._entries, what=f"row {key}")
    target = table.get_row_index(key)
    while table.cursor_row != target:
        await pilot.press("down" if table.cursor_row < target else "up")
    assert screen.current_entry().key == key


async def pick_file(pilot, name):
    """In the FileOpen dialog: type the name, press enter."""
    await until(pilot, lambda: isinstance(pilot.app.screen, FileOpen), what="the file picker")
    await pilot.click(Input)
    await pilot.press(*name)
    await pilot.press("enter")


async def pick_directory(pilot):
    """In the SelectDirectory dialog (opened at the screen's local_dir): press its button."""
    await until(pilot, lambda: isinstance(pilot.app.screen, SelectDirectory),
                what="the folder picker")
    await pilot.click("#select")


async def confirm(pilot):
    await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), what="confirmation")
    await pilot.press("y")


async def started_upload(pilot, screen, name):
    """Upload the local file ``name`` with "u" and the picker; its Transfer once it shows."""
    panel = screen.query_one(TransfersPanel)
    await pilot.press("u")
    await pick_file(pilot, name)
    return await until(pilot, lambda: panel.transfers and panel.transfers[0],
                       what="the upload to start")


def transfers_done(screen):
    panel = screen.query_one(TransfersPanel)
    return panel.transfers and not panel.running


def alice(cluster):
    return Session.from_cluster_file(cluster.data_dir / "cluster.json")


def bob(cluster):
    return Session.login(cluster.cfg.admin_url, "bob", "correct horse battery",
                         ca=str(cluster.layout.ca_cert))


# --- against a real cluster ---------------------------------------------------------------

def test_upload_see_download_and_delete_a_file(cluster, tmp_path):
    outbox, inbox = tmp_path / "out", tmp_path / "in"
    outbox.mkdir()
    inbox.mkdir()
    data = os.urandom(300_000)
    (outbox / "hello.bin").write_bytes(data)
    session = alice(cluster)

    async def scenario():
        app = FilesApp(session, local_dir=outbox)
        async with app.run_test(size=SIZE) as pilot:
            screen = await loaded(pilot)
            assert screen.folder.prefix == "alice/"

            await pilot.press("u")
            await pick_file(pilot, "hello.bin")
            await until(pilot, lambda: "f:alice/hello.bin" in screen._entries,
                        what="the uploaded file in the table")
            table = screen.query_one("#files-table", DataTable)
            row = [str(c) for c in table.get_row("f:alice/hello.bin")]
            assert row[0] == "hello.bin" and row[1] == "293 KiB" and row[2] == "owner"
            assert row[4] == "1" and row[5] == "alice"
            assert transfers_done(screen)

            await highlight(pilot, screen, "f:alice/hello.bin")
            await pilot.press("i")  # the digest, on demand
            detail = str(screen.query_one("#files-detail").render())
            assert session.client.stat("alice/hello.bin")["digest"] in detail

            screen.local_dir = inbox
            await pilot.press("d")
            await pick_directory(pilot)
            await until(pilot, lambda: (inbox / "hello.bin").exists() and transfers_done(screen),
                        what="the download")
            assert (inbox / "hello.bin").read_bytes() == data

            await pilot.press("delete")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
            await pilot.press("n")  # first change our mind: nothing happens
            assert "f:alice/hello.bin" in screen._entries
            await pilot.press("delete")
            await confirm(pilot)
            await until(pilot, lambda: "f:alice/hello.bin" not in screen._entries,
                        what="the row to go")
            # The catalogue forgets it, and a refresh does not bring it back.
            await until(pilot, lambda: not session.admin.files("alice/")["files"],
                        what="the catalogue to forget the file")
            await pilot.press("ctrl+r")
            await listing_done(pilot, screen)
            assert "f:alice/hello.bin" not in screen._entries

    asyncio.run(scenario())
    with pytest.raises(FileNotFound):
        session.client.stat("alice/hello.bin")
    assert session.admin.files("alice/")["files"] == []


def test_share_a_folder_with_bob_then_revoke(cluster, tmp_path):
    AdminApi(cluster).add_user("bob")
    docs, downloads = tmp_path / "docs", tmp_path / "downloads"
    downloads.mkdir()
    (docs / "minutes").mkdir(parents=True)
    (docs / "plan.md").write_text("the plan\n")
    (docs / "minutes" / "monday.md").write_text("we met\n")
    session = alice(cluster)

    async def alice_uploads_and_shares():
        app = FilesApp(session, local_dir=docs)
        async with app.run_test(size=SIZE) as pilot:
            screen = await loaded(pilot)
            await pilot.press("U")  # upload a whole folder
            await pick_directory(pilot)
            await until(pilot, lambda: "d:alice/docs/" in screen._entries,
                        what="the uploaded folder")
            await highlight(pilot, screen, "d:alice/docs/")
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, SharingScreen)
                        and app.screen.query("#grant-user"), what="sharing")
            sharing = app.screen
            users = sharing.query_one("#grant-user", Select)
            await until(pilot, lambda: sharing._loaded, what="the grants")
            # alice shares with nobody yet, and only administrators see every account:
            # she names bob exactly, and the admin server confirms he exists.
            assert "bob" not in sharing._choices and "alice" not in sharing._choices
            await pilot.press("n")
            await until(pilot, lambda: app.screen.query("#prompt-name"), what="the name prompt")
            await pilot.press("b", "o", "b", "enter")
            await until(pilot, lambda: users.value == "bob", what="bob to be picked")
            assert sharing.query_one("#grant-role", Select).value == "reader"
            await pilot.press("g")
            await until(pilot, lambda: "bob" in sharing._grants, what="bob's grant")
            assert sharing._grants["bob"]["role"] == "reader"
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is screen, what="the Files screen")

    async def bob_looks(expect_shared):
        app = FilesApp(bob(cluster))
        async with app.run_test(size=SIZE) as pilot:
            screen = await loaded(pilot)
            tree = screen.query_one("#folder-tree")
            shared_node = next(n for n in tree.root.children if n.data.kind == "shared")
            if not expect_shared:
                screen.open_folder(SHARED)
                await listing_done(pilot, screen)
                assert "Shared with me · 0 grants" in location(screen)
                assert not screen._entries and not shared_node.children
                return
            await until(pilot, lambda: [str(n.label) for n in shared_node.children]
                        == ["alice/docs/"], what="'Shared with me' to list alice/docs/")
            tree.focus()
            tree.move_cursor(shared_node)
            await pilot.press("enter")  # open "Shared with me"
            await until(pilot, lambda: "d:alice/docs/" in screen._entries, what="the grant row")
            assert screen._entries["d:alice/docs/"].role == "reader"
            await highlight(pilot, screen, "d:alice/docs/")
            await pilot.press("enter")  # into the folder
            await until(pilot, lambda: "f:alice/docs/plan.md" in screen._entries,
                        what="alice's file")
            assert "d:alice/docs/minutes/" in screen._entries
            assert screen._entries["f:alice/docs/plan.md"].role == "reader"
            # A reader is offered downloads, never uploads, new folders or deletions.
            await highlight(pilot, screen, "f:alice/docs/plan.md")
            offered = {b.binding.action for b in screen.active_bindings.values()}
            assert {"download", "share", "details"} <= offered
            assert not {"upload_file", "upload_folder", "new_folder", "delete",
                        "replace"} & offered
            # A reader downloads the whole shared folder, through the picker.
            screen.local_dir = downloads
            await highlight(pilot, screen, "d:alice/docs/minutes/")
            await pilot.press("backspace")  # back up to alice/ (only docs/ shows)
            await until(pilot, lambda: set(screen._entries) == {"d:alice/docs/"},
                        what="alice/ as bob sees it")
            await pilot.press("d")
            await pick_directory(pilot)
            await until(pilot, lambda: transfers_done(screen), what="the folder download")
            assert (downloads / "docs" / "plan.md").read_text() == "the plan\n"
            assert (downloads / "docs" / "minutes" / "monday.md").read_text() == "we met\n"
            # ...and the Sharing dialog is read-only for a reader.
            await highlight(pilot, screen, "d:alice/docs/")
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, SharingScreen), what="sharing")
            await until(pilot, lambda: app.screen._loaded, what="the grants")
            assert [str(c) for c in app.screen.query_one("#grants").get_row("bob")] == [
                "bob", "reader", "alice"]
            assert app.screen.has_class("-view-only")
            assert app.screen.check_action("grant", ()) is False
            await pilot.press("escape")

    async def alice_revokes():
        app = FilesApp(session, local_dir=docs)
        async with app.run_test(size=SIZE) as pilot:
            screen = await loaded(pilot)
            await highlight(pilot, screen, "d:alice/docs/")
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, SharingScreen), what="sharing")
            sharing = app.screen
            await until(pilot, lambda: "bob" in sharing._grants, what="bob's grant listed")
            sharing.query_one("#grants").focus()
            await pilot.press("r")
            await confirm(pilot)
            await until(pilot, lambda: not sharing._grants, what="the grant to go")
            assert session.admin.grants("alice/docs/")["grants"] == []
            await pilot.press("escape")
            # Deleting a folder deletes every file in it, after a confirmation.
            await until(pilot, lambda: app.screen is screen, what="the Files screen")
            await pilot.press("delete")
            await confirm(pilot)
            await until(pilot, lambda: "d:alice/docs/" not in screen._entries,
                        what="the folder to go")
            assert transfers_done(screen)
            assert session.admin.files("alice/", recursive=True)["files"] == []

    asyncio.run(alice_uploads_and_shares())
    asyncio.run(bob_looks(expect_shared=True))
    asyncio.run(alice_revokes())
    asyncio.run(bob_looks(expect_shared=False))


def test_cancel_a_large_upload_stores_nothing(cluster, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse: quick to make, long enough to upload
    session = alice(cluster)

    async def scenario():
        app = FilesApp(session, local_dir=tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            screen = await loaded(pilot)
            transfer = await started_upload(pilot, screen, "big.bin")
            # The client reads the file once for its digest before sending: a busy machine
            # takes a while over a gigabyte.
            await until(pilot, lambda: transfer.done > 0 or not transfer.running, timeout=90,
                        what="the first bytes to go")
            assert transfer.running, (transfer.state, transfer.detail,
                                      [n.message for n in app._notifications])
            assert screen.check_action("cancel_transfer", ()) is True
            await pilot.press("c")
            await until(pilot, lambda: transfer.state == CANCELLED, what="the cancellation")
            assert 0 < transfer.done < transfer.total
            assert "f:alice/big.bin" not in screen._entries

    asyncio.run(scenario())
    with pytest.raises(FileNotFound):
        session.client.stat("alice/big.bin")
    # Reports reach the catalogue within about a second: it stays empty well past that.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert session.admin.files("alice/")["files"] == []
        time.sleep(0.2)
    for node in cluster.names:
        assert not disk_copy(cluster, node, "alice", "big.bin").exists()


def test_files_another_client_uploads_and_deletes_show_without_a_refresh(cluster, tmp_path):
    """The folder shown is read again while the screen is in sight: what alice's other
    client (here the API, as curl or the CLI would) changes appears and goes by itself."""
    session = alice(cluster)

    async def scenario():
        app = FilesApp(session, poll_seconds=0.5)
        async with app.run_test(size=SIZE) as pilot:
            screen = await loaded(pilot)
            assert "f:alice/elsewhere.txt" not in screen._entries
            session.client.put_bytes(b"uploaded by another client", "alice/elsewhere.txt")
            await until(pilot, lambda: "f:alice/elsewhere.txt" in screen._entries,
                        what="the file another client uploaded")
            session.client.put_bytes(b"and one in a new folder", "alice/later/inside.txt")
            await until(pilot, lambda: "d:alice/later/" in screen._entries,
                        what="the folder another client made")
            session.client.delete("alice/elsewhere.txt")
            await until(pilot, lambda: "f:alice/elsewhere.txt" not in screen._entries,
                        what="the file another client deleted to go")

    asyncio.run(scenario())


# --- with the in-memory admin: paging, in-place refresh, roles -----------------------------

def many_files(count):
    return FakeAdmin([record("alice", f"big/file-{i:05d}.dat", i) for i in range(count)])


def test_large_folder_loads_page_by_page():
    admin = many_files(10_000)

    async def scenario():
        app = FilesApp(fake_session(admin))
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            await pilot.press("enter")  # open big/
            await until(pilot, lambda: screen._file_count == PAGE, what="the first page")
            assert screen._next and screen.check_action("more", ()) is True
            assert "more: m" in location(screen)
            await pilot.press("m")
            await until(pilot, lambda: screen._file_count == 2 * PAGE, what="the second page")
            # Reaching the last row loads the next page by itself.
            await pilot.press("end")
            await until(pilot, lambda: screen._file_count == 3 * PAGE, what="the third page")
            table = screen.table
            assert table.row_count == 3 * PAGE
            # Every page asked for PAGE rows after the last one seen (a keyset cursor).
            pages = [c for c in admin.calls if c[1] == "alice/big/"]
            assert [c[2] for c in pages] == [PAGE, PAGE, PAGE]
            assert pages[1][3] == f"big/file-{PAGE - 1:05d}.dat"
            assert pages[2][3] == f"big/file-{2 * PAGE - 1:05d}.dat"
            # A change shows in place on refresh: the row keeps its key and the cursor.
            admin.records["alice/big/file-00003.dat"]["version"] = 7
            table.move_cursor(row=table.get_row_index("f:alice/big/file-00003.dat"))
            await pilot.press("ctrl+r")
            await until(pilot, lambda: str(table.get_row("f:alice/big/file-00003.dat")[4]) == "7",
                        what="the new version")
            assert screen.current_entry().key == "f:alice/big/file-00003.dat"
            assert table.row_count == 3 * PAGE

    asyncio.run(scenario())


def test_the_folder_is_read_again_while_in_sight_but_not_past_its_first_page_or_behind_a_dialog():
    admin = many_files(2 * PAGE + 10)
    admin.records["alice/a.txt"] = record("alice", "a.txt", 1)

    def count(prefix):
        return sum(1 for c in admin.calls if c[1] == prefix)

    async def polls_go_on(pilot, more=3):
        """Wait for ``more`` polls (each asks for the grants too)."""
        goal = count(None) + more
        await until(pilot, lambda: count(None) >= goal, what=f"{more} more polls")

    async def scenario():
        app = FilesApp(fake_session(admin), poll_seconds=0.1)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            admin.records["alice/b.txt"] = record("alice", "b.txt", 2)  # another client's
            await until(pilot, lambda: "f:alice/b.txt" in screen._entries, what="b.txt")
            del admin.records["alice/a.txt"]
            await until(pilot, lambda: "f:alice/a.txt" not in screen._entries, what="a.txt to go")
            await highlight(pilot, screen, "d:alice/big/")
            await pilot.press("enter")
            await until(pilot, lambda: screen._file_count == PAGE, what="the first page")
            await polls_go_on(pilot)  # the first page alone is read again
            assert count("alice/big/") > 1
            await pilot.press("m")
            await until(pilot, lambda: screen._file_count == 2 * PAGE, what="the second page")
            await listing_done(pilot, screen)
            read = count("alice/big/")
            await polls_go_on(pilot)
            assert count("alice/big/") == read  # two pages loaded: ctrl+r only
            # A dialog in front pauses the polls; closing it polls at once.
            await pilot.press("n")
            await until(pilot, lambda: app.screen.query("#prompt-name"), what="the name prompt")
            await until(pilot, lambda: not [w for w in app.workers if w.node is screen
                                            and not w.is_finished], what="polls under way")
            asked = count(None)
            await pilot.pause(0.5)  # five intervals
            assert count(None) == asked
            await pilot.press("escape")
            await until(pilot, lambda: count(None) > asked, what="a poll after the dialog")

    asyncio.run(scenario())


def test_a_poll_asked_before_the_last_listing_shown_is_dropped():
    admin = FakeAdmin([record("alice", "a.txt", 1)])

    async def scenario():
        app = FilesApp(fake_session(admin))
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            ref, seen = screen.folder, screen.listing.shown
            without_a = {"files": [], "folders": [], "next": None}
            # A poll asked before the listing shown (an upload's, once it had settled):
            screen.post_message(screen.Listed(ref, without_a, "poll", None, seen - 1))
            await pilot.pause()
            assert "f:alice/a.txt" in screen._entries and screen.listing.shown == seen
            # One asked after it is what the catalogue says now:
            screen.post_message(screen.Listed(ref, without_a, "poll", None, seen))
            await until(pilot, lambda: "f:alice/a.txt" not in screen._entries, what="a.txt to go")

    asyncio.run(scenario())


def test_only_what_the_role_allows_is_offered():
    admin = FakeAdmin(
        [record("carol", "team/a.txt", 10, role="editor"),
         record("carol", "team/sub/b.txt", 10, role="editor")],
        shared=[{"owner": "carol", "path": "team/", "role": "editor"}],
        grants={"carol/team/": [{"username": "alice", "role": "editor", "granted_by": "carol"}]},
        users=["alice", "carol", "dave"])

    async def scenario():
        app = FilesApp(fake_session(admin))
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            offered = {b.binding.action for b in screen.active_bindings.values()}
            assert {"upload_file", "upload_folder", "new_folder"} <= offered  # my namespace
            screen.open_folder(FolderRef("carol", "team"))
            await until(pilot, lambda: "f:carol/team/a.txt" in screen._entries, what="team/")
            await highlight(pilot, screen, "f:carol/team/a.txt")
            assert screen.check_action("replace", ()) is True  # an editor modifies
            for action in ("upload_file", "upload_folder", "new_folder", "delete"):
                assert screen.check_action(action, ()) is False, action
            await pilot.press("delete")  # a hidden action does nothing
            assert not isinstance(app.screen, ConfirmScreen)

    asyncio.run(scenario())


@pytest.mark.parametrize("role,manage", [("owner", True), ("master", True),
                                         ("editor", False), ("reader", False)])
def test_sharing_offers_changes_to_owner_and_master_only(role, manage):
    admin = FakeAdmin(grants={"carol/team/": [
        {"username": "dave", "role": "reader", "granted_by": "carol"}]},
        users=["alice", "carol", "dave", "erin"])

    async def scenario():
        app = SharingApp(fake_session(admin), "carol/team/", role=role)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await until(pilot, lambda: isinstance(app.screen, SharingScreen)
                                 and app.screen._loaded and app.screen, what="the grants")
            assert screen.check_action("grant", ()) is (True if manage else False)
            assert screen.has_class("-view-only") is (not manage)
            if not manage:
                return
            # The owner never appears among the users to pick, nor do I.
            assert screen._choices == ["dave", "erin"]
            # Highlighting a grant fills the form: changing a role is pick-and-grant.
            assert screen.query_one("#grant-user", Select).value == "dave"
            screen.query_one("#grant-role", Select).value = "editor"
            await pilot.press("g")
            await until(pilot, lambda: screen._grants["dave"]["role"] == "editor",
                        what="the changed role")
            assert screen.query_one("#grants", DataTable).get_row("dave")[1] == "editor"

    asyncio.run(scenario())


def test_new_folder_is_pending_until_a_file_lands(tmp_path):
    admin = FakeAdmin([record("alice", "a.txt", 1)])

    async def scenario():
        app = FilesApp(fake_session(admin), local_dir=tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            await pilot.press("n")
            await until(pilot, lambda: app.screen is not screen, what="the name prompt")
            await pilot.press(*"bad/name", "enter")
            assert "no '/'" in str(app.screen.query_one("#prompt-error").render())
            app.screen.query_one(Input).value = ""
            await pilot.press(*"reports", "enter")
            await until(pilot, lambda: screen.folder.prefix == "alice/reports/",
                        what="the new folder to open")
            await until(pilot, lambda: "upload a file (u)" in location(screen), what="the hint")
            await pilot.press("backspace")  # up to alice/, where it shows as new
            await until(pilot, lambda: "d:alice/reports/" in screen._entries, what="the row")
            assert screen._entries["d:alice/reports/"].pending
            # Once the catalogue has a file in it, it is an ordinary folder.
            admin.records["alice/reports/q1.txt"] = record("alice", "reports/q1.txt", 5)
            await pilot.press("ctrl+r")
            await until(pilot, lambda: not screen._pending, what="the folder to become real")
            assert not screen._entries["d:alice/reports/"].pending

    asyncio.run(scenario())


def test_errors_are_notifications_not_tracebacks():
    admin = FakeAdmin([record("alice", "a.txt", 1)])

    async def scenario():
        app = FilesApp(fake_session(admin))
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            admin.failures["files"] = AdminUnreachable("https://admin.example:8440",
                                                       ConnectionRefusedError(111, "refused"))
            await pilot.press("ctrl+r")
            await until(pilot, lambda: app._notifications, what="a notification")
            notice = list(app._notifications)[0]
            assert notice.severity == "error" and "admin server" in notice.title.lower()
            assert "could not load" in location(screen)
            assert "f:alice/a.txt" in screen._entries  # what was shown stays
            del admin.failures["files"]
            await pilot.press("ctrl+r")
            await until(pilot, lambda: "could not load" not in location(screen), what="the retry")

    asyncio.run(scenario())


def test_a_poll_that_keeps_failing_says_so_once_per_outage():
    admin = FakeAdmin([record("alice", "a.txt", 1)])
    outage = AdminUnreachable("https://admin.example:8440", ConnectionRefusedError(111, "refused"))

    def polls():
        return sum(1 for c in admin.calls if c[0] == "shared")

    async def scenario():
        app = FilesApp(fake_session(admin), poll_seconds=0.1)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            said = []  # counted as they are made: a notification on screen expires
            app.notify = lambda message, **kwargs: said.append(message)
            admin.failures["files"] = outage
            await until(pilot, lambda: "could not load" in location(screen), what="a failed poll")
            goal = polls() + 4
            await until(pilot, lambda: polls() >= goal, what="four more polls")
            assert len(said) == 1 and "admin" in said[0].lower(), said
            del admin.failures["files"]
            await until(pilot, lambda: "could not load" not in location(screen), what="recovery")
            admin.failures["files"] = outage  # a new outage is news again
            await until(pilot, lambda: len(said) == 2, what="a second notification")

    asyncio.run(scenario())
