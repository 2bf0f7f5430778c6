"""The top line of every screen: who is logged in where, how much of their quota their files
use, and whether the link is encrypted.

An ``http://`` admin URL means passwords, tokens and file bytes cross the network in the
clear: the bar then says so in the error colour on every screen, not once at login.
"""
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from securifile.common.admin_urls import parse_admin_urls

from ..format import human_size


def usage_text(usage):
    """'356 MiB of 1.0 GiB' (with a quota), '356 MiB used' (without); '' before /me answers."""
    if not usage or "used_bytes" not in usage:
        return ""
    quota = usage.get("quota_bytes")
    used = human_size(usage["used_bytes"])
    return f"{used} used" if quota is None else f"{used} of {human_size(quota)}"


class SessionBar(Static):
    """``SecuriFile · Servers   alice · 1.2 GiB of 10 GiB @ https://host:8440 · TLS``, or the
    plain-HTTP warning."""

    DEFAULT_CSS = """
    SessionBar {
        dock: top;
        height: 1;
        width: 100%;
        background: $panel;
        color: $foreground;
        padding: 0 1;
    }
    SessionBar.-insecure {
        background: $error;
        color: $text;
        text-style: bold;
    }
    """

    status = reactive("", layout=False)

    def __init__(self, title, session=None, **kwargs):
        super().__init__(**kwargs)
        self.title = title
        self.session = session
        self.set_class(self.insecure, "-insecure")

    def on_mount(self):
        if "usage_read" in getattr(type(self.app), "_reactives", {}):
            self.watch(self.app, "usage_read", lambda _count: self.refresh(), init=False)

    @property
    def insecure(self):
        # Several admin server instances ("URL,URL"): insecure if any of them is plain HTTP.
        urls = parse_admin_urls(getattr(self.session, "admin_url", "") or "")
        return any(not url.lower().startswith("https:") for url in urls)

    def render(self):
        left = Text.assemble(("SecuriFile", "bold"), " · ", self.title)
        if self.status:
            left.append(f" · {self.status}")
        if self.session is None:
            return left
        who = self.session.username + (" (admin)" if self.session.is_admin else "")
        usage = usage_text(getattr(self.session, "usage", None))
        if usage:
            who += f" · {usage}"
        if self.insecure:
            right = f"NOT ENCRYPTED: {self.session.admin_url} is plain HTTP · {who}"
        else:
            right = f"{who} @ {self.session.admin_url} · TLS"
        width = self.content_region.width or 80
        gap = width - len(left) - len(right)
        if gap < 2:  # 80 columns: the warning wins over the title; the user name over the URL
            right = (f"NOT ENCRYPTED (http) · {who}" if self.insecure else f"{who} · TLS")
            gap = max(2, width - len(left) - len(right))
        return Text.assemble(left, " " * gap, right)
