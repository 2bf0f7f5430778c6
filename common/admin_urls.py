"""Which admin server instance to ask: the one that answered last, then the others.

Several admin server instances share one PostgreSQL database, so any of them can answer any
question. Nodes and clients keep the list, try the instance that answered last first, and
move on to the next when it does not answer (refused, reset, timed out) or answers 5xx;
each call tries each instance at most once, so a call is bounded by the list's length
times the per-request timeout. Shared by the nodes (async) and the client (threads).
"""
import threading

# Answers after which the next instance is asked: the instance is down, overloaded or
# cut from its database, and another may be fine.
MOVE_ON_STATUSES = frozenset({500, 502, 503, 504, 599})


def parse_admin_urls(value):
    """A list of base URLs from a list or a "url, url" string (blanks ignored)."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = []
    for item in items:
        url = str(item).strip().rstrip("/")
        if url and url not in urls:
            urls.append(url)
    return urls


class AdminURLs:
    """The admin server instances in the order to try them, with the last one that answered
    first. Safe to share between threads."""

    def __init__(self, urls):
        self.urls = parse_admin_urls(urls)
        if not self.urls:
            raise ValueError("no admin server URL")
        self._current = self.urls[0]
        self._lock = threading.Lock()

    @property
    def current(self):
        return self._current

    def order(self):
        """Every instance once, the one that answered last first."""
        with self._lock:
            i = self.urls.index(self._current)
        return self.urls[i:] + self.urls[:i]

    def answered(self, url):
        """``url`` answered: ask it first next time."""
        with self._lock:
            if url in self.urls:
                self._current = url

    def __len__(self):
        return len(self.urls)

    def __str__(self):
        return ", ".join(self.urls)
