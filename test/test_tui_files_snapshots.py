"""SVG snapshots of the Files and Sharing screens at 80x24 and 120x40, from fixed data.

The admin server is replaced by ``tui_fakes.FakeAdmin`` (same answers, fixed records), times
are shown in UTC, and no real transfer runs, so every run draws the same picture.
Regenerate with ``pytest test/test_tui_files_snapshots.py --snapshot-update`` and look at
the result (``test/__snapshots__/``) before committing it.
"""
from securifile.tui.screens.files import FilesScreen
from securifile.tui.screens.sharing import SharingScreen
from securifile.tui.screens.dialogs import ConfirmScreen

from .tui_fakes import FilesApp, SharingApp, alice_admin, fake_session, until

SMALL, LARGE = (80, 24), (120, 40)


def files_app():
    return FilesApp(fake_session(alice_admin()), local_dir="/nonexistent")


async def files_loaded(pilot):
    await until(pilot, lambda: isinstance(pilot.app.screen, FilesScreen), what="Files")
    screen = pilot.app.screen
    await until(pilot, lambda: screen.table.row_count and screen._shared, what="the listing")
    await pilot.pause()
    return screen


async def highlight(pilot, screen, key):
    while screen.current_entry().key != key:
        await pilot.press("down")


def test_files_small(snap_compare):
    assert snap_compare(files_app(), terminal_size=SMALL, run_before=files_loaded)


def test_files_large_with_details_and_a_transfer(snap_compare):
    async def run_before(pilot):
        screen = await files_loaded(pilot)
        await highlight(pilot, screen, "f:alice/report-2026.pdf")
        await pilot.press("i")
        transfer = screen.transfers.add("↑ holiday.mov → alice/")
        transfer.progress(1_288_490_189, 3_221_225_472)  # 1.2 of 3 GiB
        await pilot.pause(0.3)

    assert snap_compare(files_app(), terminal_size=LARGE, run_before=run_before)


def test_shared_with_me_small(snap_compare):
    async def run_before(pilot):
        screen = await files_loaded(pilot)
        tree = screen.tree
        shared = next(n for n in tree.root.children if n.data.kind == "shared")
        tree.focus()
        tree.move_cursor(shared)
        await pilot.press("enter")
        await until(pilot, lambda: "d:bob/projects/" in screen._entries, what="the grants")
        await pilot.pause()

    assert snap_compare(files_app(), terminal_size=SMALL, run_before=run_before)


def test_delete_confirmation_small(snap_compare):
    async def run_before(pilot):
        screen = await files_loaded(pilot)
        await highlight(pilot, screen, "f:alice/notes.txt")
        await pilot.press("delete")
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), what="confirm")
        await pilot.pause()

    assert snap_compare(files_app(), terminal_size=SMALL, run_before=run_before)


def sharing_app(target, role):
    return SharingApp(fake_session(alice_admin()), target, role=role)


async def sharing_loaded(pilot):
    await until(pilot, lambda: isinstance(pilot.app.screen, SharingScreen)
                and pilot.app.screen._loaded, what="the grants")
    await pilot.pause()


def test_sharing_as_owner_small(snap_compare):
    assert snap_compare(sharing_app("alice/docs/", "owner"), terminal_size=SMALL,
                        run_before=sharing_loaded)


def test_sharing_as_owner_large(snap_compare):
    assert snap_compare(sharing_app("alice/docs/", "owner"), terminal_size=LARGE,
                        run_before=sharing_loaded)


def test_sharing_view_only_small(snap_compare):
    assert snap_compare(sharing_app("bob/projects/", "editor"), terminal_size=SMALL,
                        run_before=sharing_loaded)
