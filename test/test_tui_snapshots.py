"""SVG snapshots of each terminal-client screen at 80x24 and 120x40, with fixed data.

The admin client is the in-memory FixedAdmin of tui_data (a stand-in for the network
boundary only) and the clock is fixed, so a screen draws the same every time. Regenerate
after a deliberate change with ``pytest test/test_tui_snapshots.py --snapshot-update`` and
look at the SVGs (test/__snapshots__/test_tui_snapshots/) before committing them.
"""
from datetime import timezone

import pytest
from textual.widgets import Input

from securifile.tui.app import SecuriFileApp

from .tui_data import NOW, fixed_session

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
pytestmark = pytest.mark.parametrize("size", list(SIZES))


def make_app(tmp_path, **kwargs):
    return SecuriFileApp(config_dir=tmp_path, now=lambda: NOW, tz=timezone.utc,
                         poll_seconds=3600, **kwargs)


async def settle(pilot):
    """Let the workers answer and the screen redraw (twice: answers start new redraws)."""
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False


def test_servers_screen(snap_compare, tmp_path, size):
    app = make_app(tmp_path, session=fixed_session(), start="servers")
    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)


async def files_of(pilot, username):
    """Wait (bounded) until the users screen lists ``username``'s files."""
    for _ in range(50):
        if pilot.app.screen.shown_user == username and not pilot.app.screen.files_table.loading:
            break
        await pilot.pause(0.1)  # the files follow the cursor after a short pause
    await settle(pilot)


def test_users_screen_as_administrator(snap_compare, tmp_path, size):
    async def select_alice(pilot):
        await settle(pilot)
        await pilot.press("down")
        await files_of(pilot, "alice")

    app = make_app(tmp_path, session=fixed_session(), start="users")
    assert snap_compare(app, terminal_size=SIZES[size], run_before=select_alice)


def test_users_screen_as_user(snap_compare, tmp_path, size):
    async def select_self(pilot):
        await settle(pilot)
        await files_of(pilot, "alice")  # a user starts on their own row

    session = fixed_session(admin=False, username="alice")
    app = make_app(tmp_path, session=session, start="users")
    assert snap_compare(app, terminal_size=SIZES[size], run_before=select_self)


def test_login_screen(snap_compare, tmp_path, size):
    app = make_app(tmp_path, login=True, admin_url="https://127.0.0.1:8440",
                   ca="certs/ca.crt", username="alice")
    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)


def test_login_screen_warns_of_plain_http(snap_compare, tmp_path, size):
    app = make_app(tmp_path, login=True, admin_url="http://10.0.0.9:8440", username="alice")
    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)


def test_servers_screen_over_plain_http_says_not_encrypted(snap_compare, tmp_path, size):
    session = fixed_session(admin=False, username="alice", admin_url="http://10.0.0.9:8440")
    app = make_app(tmp_path, session=session, start="servers")
    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)


def test_help_screen(snap_compare, tmp_path, size):
    async def open_help(pilot):
        await settle(pilot)
        await pilot.press("f1")
        await pilot.pause()

    app = make_app(tmp_path, session=fixed_session(), start="servers")
    assert snap_compare(app, terminal_size=SIZES[size], run_before=open_help)


def test_confirm_taking_a_server_offline(snap_compare, tmp_path, size):
    async def ask(pilot):
        await settle(pilot)
        await pilot.press("o")  # node1, the first row, is online
        await pilot.pause()

    app = make_app(tmp_path, session=fixed_session(), start="servers")
    assert snap_compare(app, terminal_size=SIZES[size], run_before=ask)


def test_servers_screen_in_a_light_theme(snap_compare, tmp_path, size):
    app = make_app(tmp_path, session=fixed_session(), start="servers")
    app.theme = "textual-light"  # the plots take their background and colours from the theme
    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)
