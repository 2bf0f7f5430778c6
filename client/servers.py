"""Which server to ask: the known servers, the one in use, and the ones that just failed.

Also how servers are told apart (scheme, host and port: ``server_origin``) and the two
query parameters by which a node and the client talk about file holders (``holder``,
``avoid``).
"""
import random
import threading
import time
from urllib.parse import parse_qs, quote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def server_origin(url):
    """(scheme, host, port) with defaults filled in and the host lower-cased."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def base_url(url):
    """``scheme://host:port`` of a server URL (ValueError if it is not http or https)."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) server URL: {url!r}")
    return f"{parts.scheme.lower()}://{parts.netloc}"


def holder_named(url):
    """The server name a node put in its redirect (``?holder=NAME``), or None."""
    names = parse_qs(urlsplit(url).query).get("holder")
    return names[0] if names else None


def with_avoid(path, avoid):
    """``path`` asking the node to send us to none of the servers named in ``avoid``."""
    if not avoid:
        return path
    return f"{path}{'&' if '?' in path else '?'}avoid={quote(','.join(avoid), safe=',')}"


class ServerSelector:
    """The known servers, the one currently in use, and those that recently did not answer.

    Starts at a random server and stays with it until it fails, as the product asks. A server
    that failed is avoided for ``suspect_seconds`` while others are left.
    """

    def __init__(self, urls, *, members=(), allow_empty=False, rng=None, clock=time.monotonic,
                 suspect_seconds=30.0):
        self._lock = threading.Lock()
        self._lanes = threading.local()
        self._clock = clock
        self._suspect_seconds = suspect_seconds
        self._suspect_until = {}
        self._rng = rng or random.Random()
        self._urls = []
        self._members = []
        self._current = 0
        if urls or not allow_empty:  # empty: the client waits for the admin server's list
            self.set_servers(urls, members)

    def set_servers(self, urls, members=()):
        """Replace the list (e.g. fresh from the admin server); keep the current one if listed.

        ``members``: other servers of the cluster (down ones, say) that are never picked but
        may be named by a redirect.
        """
        urls = list(dict.fromkeys(base_url(u) for u in urls))
        if not urls:
            raise ValueError("the client needs at least one server URL")
        members = list(dict.fromkeys([base_url(u) for u in members] + urls))
        with self._lock:
            current = self._urls[self._current] if self._urls else None
            self._urls, self._members = urls, members
            self._current = urls.index(current) if current in urls else self._rng.randrange(len(urls))

    @property
    def members(self):
        """Every server of the cluster known to the client, usable or not."""
        with self._lock:
            return list(self._members)

    @property
    def servers(self):
        with self._lock:
            return list(self._urls)

    def set_lane(self, lane):
        """This thread starts ``lane`` servers after the current one (0: the current one):
        the workers of a folder transfer spread their files over the servers."""
        self._lanes.lane = lane

    def current(self, exclude=()):
        """The server to talk to: the current one (shifted by this thread's lane) unless
        excluded or suspect; None if none left."""
        lane = getattr(self._lanes, "lane", 0)
        with self._lock:
            now = self._clock()
            n = len(self._urls)
            order = [self._urls[(self._current + lane + i) % n] for i in range(n)]
            candidates = [u for u in order if u not in exclude]
            for url in candidates:
                if self._suspect_until.get(url, 0) <= now:
                    return url
            return candidates[0] if candidates else None

    def failed(self, url):
        """``url`` did not answer: suspect it and, if it was current, move to the next one."""
        origin = server_origin(url)
        with self._lock:
            url = next((u for u in self._urls if server_origin(u) == origin), base_url(url))
            self._suspect_until[url] = self._clock() + self._suspect_seconds
            if url not in self._urls or self._urls[self._current] != url:
                return
            now = self._clock()
            n = len(self._urls)
            for i in range(1, n):
                candidate = (self._current + i) % n
                if self._suspect_until.get(self._urls[candidate], 0) <= now:
                    self._current = candidate
                    return
            self._current = (self._current + 1) % n

    def answered(self, url):
        """``url`` answered: it is no longer suspect."""
        origin = server_origin(url)
        with self._lock:
            for u in [u for u in self._suspect_until if server_origin(u) == origin]:
                del self._suspect_until[u]

    def is_known(self, url):
        """True if ``url`` is on one of the cluster's servers (scheme, host and port all match)."""
        origin = server_origin(url)
        with self._lock:
            return any(server_origin(u) == origin for u in self._members)
