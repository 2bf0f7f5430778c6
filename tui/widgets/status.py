"""The top line of every screen: who is logged in where, and whether the link is encrypted.

An ``http://`` admin URL means passwords, tokens and file bytes cross the network in the
clear: the bar then says so in the error colour on every screen, not once at login.
"""
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from securifile.common.admin_urls import parse_admin_urls


class SessionBar(Static):
    """``SecuriFile · Servers   alice @ https://host:8440 · TLS``, or the plain-HTTP warning."""

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
