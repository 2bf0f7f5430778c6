"""The real terminal client in a real terminal: tmux runs ``securifile-tui`` against a
cluster, the test sends keys and reads the screen back (``capture-pane``), as a user over SSH
would see it. Every wait has a deadline; the tmux server (a private socket) is killed after.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("CI"),
    reason="tmux is not installed (apt-get install tmux); CI installs it and runs this test")


class Tmux:
    """One tmux server on a private socket (in a folder of its own), one session in it."""

    def __init__(self, command, env, width=120, height=40):
        self.folder = Path(tempfile.mkdtemp(prefix="sf-tmux-"))  # short: sockets have a length limit
        self.socket = self.folder / "socket"
        self.session = "tui"
        self.tmux("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
                  command, env=env)

    def tmux(self, *args, env=None, check=True):
        return subprocess.run(["tmux", "-S", str(self.socket), *args], env=env, check=check,
                              capture_output=True, text=True, timeout=10)

    def keys(self, *keys):
        self.tmux("send-keys", "-t", self.session, *keys)

    def screen(self):
        r = self.tmux("capture-pane", "-p", "-t", self.session, check=False)
        return r.stdout if r.returncode == 0 else ""

    def alive(self):
        return self.tmux("has-session", "-t", self.session, check=False).returncode == 0

    def wait_for(self, predicate, timeout=30, what="the screen"):
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"the screen was:\n{text}")
            time.sleep(0.2)

    def resize(self, width, height):
        self.tmux("resize-window", "-t", self.session, "-x", str(width), "-y", str(height))

    def kill(self):
        self.tmux("kill-server", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def tui_command(cluster_file, *options):
    script = Path(sys.executable).with_name("securifile-tui")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "securifile.tui.app"]
    return " ".join(program + ["--cluster", str(cluster_file), "--screen", "servers", *options])


def test_a_login_typed_ahead_in_one_burst_lands_in_the_right_fields(cluster, tmp_path):
    """User name, Tab, password and Enter arrive in one write, as from a password manager."""
    password = json.loads((cluster.data_dir / "credentials" / "admin.json").read_text())["password"]
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), TERM="xterm-256color")
    term = Tmux(tui_command(cluster.data_dir / "cluster.json", "--login"), env)
    try:
        term.wait_for(lambda t: "User or e-mail" in t and "Log in" in t, what="the login screen")
        term.keys("-l", f"admin\t{password}\r")
        # The account's usage joins the status bar once it has been read (its own request),
        # which may come a moment after the servers.
        text = term.wait_for(lambda t: ("Servers (3)" in t and "admin (admin) · " in t)
                             or "Wrong user name" in t,
                             what="the servers screen and its status bar after the login")
        # The status bar: who, the account's usage, where.
        assert "admin (admin) · " in text and "@ " + cluster.cfg.admin_url in text, text
    finally:
        term.kill()


def test_the_client_in_tmux_shows_servers_users_and_help_and_quits(cluster, tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), TERM="xterm-256color")
    term = Tmux(tui_command(cluster.data_dir / "cluster.json"), env)
    try:
        # The account's usage ("alice · ...") joins the status bar once it has been read.
        text = term.wait_for(lambda t: "Servers (3)" in t and t.count("running") >= 3
                             and "alice · " in t, what="three running servers, the usage")
        assert "alice · " in text and "@ " + cluster.cfg.admin_url in text and "TLS" in text
        assert all(name in text for name in cluster.names)
        assert "Events" in text and "Help" in text  # the panel, and F1 in the footer

        term.keys("F4")
        text = term.wait_for(lambda t: "Users (" in t and "alice" in t and "Files of alice" in t,
                             what="the users screen")
        term.keys("F1")
        term.wait_for(lambda t: "Help: Users" in t, what="the help screen")
        term.keys("Escape")
        term.wait_for(lambda t: "Help: Users" not in t, what="help to close")

        term.keys("F3")
        term.wait_for(lambda t: "Servers (3)" in t, what="the servers screen again")
        term.resize(80, 24)  # a small terminal: a sparkline per server instead of plots
        term.wait_for(lambda t: "Used storage" in t and all(f"{n} " in t for n in cluster.names),
                      what="the sparklines at 80x24")
        assert max(len(line) for line in term.screen().splitlines()) <= 80

        term.keys("C-q")
        deadline = time.monotonic() + 15
        while term.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not term.alive(), "the client did not quit on Ctrl+Q"
    finally:
        term.kill()
