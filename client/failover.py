"""Sending a request to a server that serves: failover, redirects to holders, waiting.

``ClusterClient`` is the part of the client that knows the cluster, not the files: it takes
the running servers from the admin server when it knows one (``GET /api/v1/servers``),
starts at a random one, moves on when a server does not answer or says it does not serve
now (503 ``server_not_running``, ``no_quorum``, ``not_synced``), follows ``307`` to the node
that holds a file (only to servers it knows), and when that holder does not answer or does
not serve, asks again naming it in ``avoid`` so that the node redirects to the next holder.
When no server serves, it asks again with a growing pause for a bounded time. ``Client``
(storage.py) builds the file operations on its ``request``.
"""
import contextlib
import threading
import time
from urllib.parse import urljoin

from .admin import AdminClient
from .errors import (
    ClientError, HolderUnreachable, NoRunningServer, NoServerAvailable, NoServerServing,
    ProtocolError, RedirectRefused, TooManyRedirects, Unreachable, not_serving,
)
from .servers import ServerSelector, base_url, holder_named, server_origin, with_avoid
from .settings import ClientSettings
from .transport import ConnectionsOwner, Transport, error_from_response, tls_context

REDIRECT_STATUSES = (307, 308)
# While the admin server does not answer, ask it again this often for the server list.
ADMIN_RETRY_SECONDS = 5.0
# States in the admin server's list that end on their own, soon (a restart's verification).
COMING_BACK = frozenset({"verifying"})


class Backoff:
    """Pauses that double from ``first`` up to ``cap``, within ``budget`` seconds in all."""

    def __init__(self, budget, clock, sleep, first=0.25, cap=2.0):
        self.budget, self.clock, self.sleep = budget, clock, sleep
        self.delay, self.cap = first, cap
        self.deadline = None

    def pause(self):
        """Sleep before the next try; False (without sleeping) once the budget is spent."""
        now = self.clock()
        if self.deadline is None:
            self.deadline = now + self.budget
        if now + self.delay > self.deadline:
            return False
        self.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)
        return True


class _TryAgain(Exception):
    """Internal: nothing serves the request now, but something may in a moment (servers
    restarting, a holder being verified); ``error`` is the answer once waiting stops."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class ClusterClient(ConnectionsOwner):
    """Requests to the storage nodes of one cluster on behalf of one user.

    ``servers``: base URLs (``https://host:port``). With ``admin_url`` the client asks the
    admin server which of them run (``GET /api/v1/servers``) before the first request and
    every ``server_list_ttl`` seconds, and uses only those; ``servers`` is then the list to
    fall back on while the admin server does not answer (it may be empty). Credentials:
    ``token`` (bearer) and/or a client certificate ``cert``/``key``; ``ca`` is the system's
    CA for HTTPS. ``timeout`` is the longest silence on an open connection,
    ``connect_timeout`` bounds connect and handshake. When a holder named by a redirect does
    not answer, the client asks again naming it in ``avoid``; a node that still names it
    (an older one) is asked again up to ``holder_retries`` times within ``holder_deadline``
    seconds. When every server says it does not serve now, the client asks again with a
    growing pause for up to ``unavailable_wait`` seconds (a cluster restarting, a majority
    forming) before it gives up with ``NoServerServing``.

    An instance is safe to share between threads: the server choice is guarded by a lock and
    keep-alive connections are kept per thread.
    """

    def __init__(self, servers, *, ca=None, cert=None, key=None, token=None, admin_url=None,
                 timeout=60.0, connect_timeout=5.0, max_redirects=8,
                 holder_retries=20, holder_deadline=20.0, server_list_ttl=30.0,
                 unavailable_wait=15.0, rng=None, clock=time.monotonic, sleep=time.sleep):
        self._configured = list(servers)
        self._selector = ServerSelector(servers, allow_empty=bool(admin_url), rng=rng, clock=clock)
        self._token = token
        self.max_redirects = max_redirects
        self.holder_retries, self.holder_deadline = holder_retries, holder_deadline
        self.unavailable_wait = unavailable_wait
        self._clock, self._sleep = clock, sleep
        urls = self._selector.servers + ([admin_url] if admin_url else [])
        secure = any(u.lower().startswith("https:") for u in urls) or ca or cert
        self._transport = Transport(tls_context(ca, cert, key) if secure else None,
                                    timeout=timeout, connect_timeout=connect_timeout)
        self._admin = None
        if admin_url:
            self._admin = AdminClient(admin_url, token=token, transport=self._transport)
        self.server_list_ttl = server_list_ttl
        self._next_refresh = clock()
        self._refresh_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings, **kwargs):
        return cls(settings.servers, ca=settings.ca, cert=settings.cert, key=settings.key,
                   token=settings.token, admin_url=settings.admin_url, **kwargs)

    @classmethod
    def from_cluster_file(cls, path, **kwargs):
        return cls.from_settings(ClientSettings.from_cluster_file(path), **kwargs)

    # -- configuration --

    @property
    def servers(self):
        """The servers requests go to (with an admin server: as of its last answer)."""
        return self._selector.servers

    @property
    def current_server(self):
        return self._selector.current()

    @property
    def admin(self):
        """An AdminClient on the same connections and credentials, or None without admin_url."""
        return self._admin

    @property
    def timeout(self):
        return self._transport.timeout

    @property
    def connect_timeout(self):
        return self._transport.connect_timeout

    def set_servers(self, urls, members=()):
        self._selector.set_servers(urls, members)

    @contextlib.contextmanager
    def worker(self, lane):
        """A worker thread of a folder transfer (``plans.transfer_plan``): it starts ``lane``
        servers after the current one, so that the workers' files spread over the servers
        (each worker then stays with its own until it fails), and closes its connections
        when it has no more files."""
        self._selector.set_lane(lane)
        try:
            yield
        finally:
            self.close()

    def set_token(self, token):
        self._token = token
        if self._admin is not None:
            self._admin.set_token(token)

    def set_credentials(self, token, *, ca=None, cert=None, key=None):
        """Call with these credentials from now on (after a password change made the old
        ones stale): a new TLS context and new connections, shared with the admin client."""
        old = self._transport
        self._transport = Transport(tls_context(ca, cert, key) if old.ssl_context else None,
                                    timeout=old.timeout, connect_timeout=old.connect_timeout)
        if self._admin is not None:
            self._admin._transport = self._transport
        self.set_token(token)

    def refresh_servers(self):
        """Ask the admin server which servers run and use only those; returns the list.

        Down, failed and offline servers are left out (``NoRunningServer`` if that leaves
        none). If the admin server cannot be asked, the list in use (else the configured
        one) stays; with neither, the admin server's error is raised.
        """
        if self._admin is None:
            return self.servers
        try:
            usable, members = self._admin.storage_servers()
        except NoRunningServer:
            self._next_refresh = self._clock() + min(self.server_list_ttl, ADMIN_RETRY_SECONDS)
            raise
        except ClientError:
            self._next_refresh = self._clock() + min(self.server_list_ttl, ADMIN_RETRY_SECONDS)
            if not self._selector.servers:
                if not self._configured:
                    raise
                self._selector.set_servers(self._configured)
            return self.servers
        self._selector.set_servers(usable, members + self._configured)
        self._next_refresh = self._clock() + self.server_list_ttl
        return self.servers

    def _maybe_refresh(self, force=False):
        """Refresh the server list when it is due; True if this call asked the admin server."""
        if self._admin is None or (not force and self._clock() < self._next_refresh):
            return False
        # One thread asks; the others go on with the list they have, if they have one.
        if not self._refresh_lock.acquire(blocking=not self._selector.servers):
            return False
        try:
            if not force and self._clock() < self._next_refresh:
                return False
            self.refresh_servers()
            return True
        finally:
            self._refresh_lock.release()

    # -- servers --

    def status(self, server=None):
        """``GET /status`` of one server (the current one by default), without failover."""
        if server is None:
            self._maybe_refresh()
        base = base_url(server) if server else self._selector.current()
        if base is None:
            raise NoServerAvailable([])
        try:
            resp = self._exchange("GET", base + "/status", {}, None)
        except Unreachable as e:
            raise NoServerAvailable([(base, e.cause)]) from e.cause
        if resp.status != 200:
            raise self._error(resp)
        return resp.json()

    def cluster_status(self):
        """``{url: status dict or the error}`` for every server of the cluster, usable or not."""
        try:
            self._maybe_refresh()
        except NoRunningServer:
            pass  # the members are still known; each one's own answer says more
        result = {}
        for url in self._selector.members:
            try:
                result[url] = self.status(url)
            except ClientError as e:
                result[url] = e
        return result

    # -- requests --

    def _headers(self, extra):
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        headers.update(extra or {})
        return headers

    def request(self, method, path, *, headers=None, body=None, expected=(200,)):
        """The answer of a server that serves ``path`` with a status in ``expected`` (the
        caller reads the body, then releases it), else the typed error."""
        resp = self._request(method, path, self._headers(headers), body)
        if resp.status not in expected:
            error = self._error(resp)
            error.after_lost_request = resp.after_lost_request
            raise error
        return resp

    def _error(self, resp):
        return error_from_response(resp)

    def _exchange(self, method, url, headers, body):
        """One request to one server. Raises Unreachable if it does not answer."""
        return self._transport.exchange(method, url, headers, body)

    def _request(self, method, path, headers, body):
        """Send to a server that serves, failing over and following redirects to holders.

        Rounds over the servers are repeated, with a growing pause, while every server that
        answers says it does not serve now, up to ``unavailable_wait`` seconds.
        """
        avoid = []  # holders that did not answer or serve: the nodes send us elsewhere
        lost = []  # servers the request went to that did not answer
        backoff = Backoff(self.unavailable_wait, self._clock, self._sleep)
        retrying = False
        while True:
            try:
                resp = self._request_round(method, path, headers, body, avoid, retrying, lost)
                # Its answer may be about what the lost request left behind (its lock).
                resp.after_lost_request = bool(lost)
                return resp
            except _TryAgain as e:
                if not backoff.pause():
                    raise e.error from None
                retrying = True

    def _refresh_for_round(self, retrying):
        """The server list for a round; _TryAgain while the admin server says all the
        servers are on their way back (verifying)."""
        try:
            self._maybe_refresh(force=retrying)
        except NoRunningServer as e:
            if any(s.get("status") in COMING_BACK for s in e.servers):
                raise _TryAgain(NoServerServing([(self._admin.url, e)], self.unavailable_wait)) from None
            if retrying and self._selector.servers:
                return  # servers answered a moment ago: their word beats the admin's lagging list
            raise

    def _request_round(self, method, path, headers, body, avoid, retrying, lost):
        """One pass over the servers. Raises _TryAgain if each one that answered said it
        does not serve now, or a node said the file is served again soon (``Retry-After``);
        NoServerAvailable if no server answered at all."""
        self._refresh_for_round(retrying)
        tried, failures = set(), []
        holder_attempts, delay = 0, 0.25
        deadline = self._clock() + self.holder_deadline
        asked_admin = False
        while True:
            entry = self._selector.current(exclude=tried)
            if entry is None and self._admin is not None and not asked_admin:
                asked_admin = True
                if not self._selector.servers:
                    self.refresh_servers()  # nothing to fall back on: its error is the answer
                else:
                    # Every server we knew failed: the admin server may know newer ones.
                    try:
                        self._maybe_refresh(force=True)
                    except ClientError:
                        pass
                entry = self._selector.current(exclude=tried)
            if entry is None:
                if any(not_serving(err) for _, err in failures):
                    raise _TryAgain(NoServerServing(failures, self.unavailable_wait))
                raise NoServerAvailable(failures)
            try:
                resp = self._follow(method, entry + with_avoid(path, avoid), headers, body)
            except Unreachable as e:
                lost.append(e.url)
                if server_origin(e.url) == server_origin(entry):
                    tried.add(entry)
                    failures.append((entry, e.cause))
                    self._selector.failed(entry)
                    continue
                self._selector.failed(e.url)
                holder = holder_named(e.url)
                if holder and holder not in avoid:
                    # Ask again, naming the holder that did not answer: the node sends us to
                    # the next holder at once, without waiting for heartbeats to notice.
                    avoid.append(holder)
                    continue
                # A node that does not take ``avoid`` names it again. The servers notice
                # within a few heartbeats and then name the next holder, so ask, for a while.
                holder_attempts += 1
                if holder_attempts > self.holder_retries or self._clock() + delay > deadline:
                    raise HolderUnreachable(base_url(e.url), e.cause, holder_attempts) from e.cause
                self._sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if resp.status == 503:
                soon = resp.header("Retry-After") is not None
                err = self._error(resp)
                if not not_serving(err):
                    raise _TryAgain(err) if soon else err
                holder = holder_named(resp.url)
                if server_origin(resp.url) != server_origin(entry) and holder and holder not in avoid:
                    avoid.append(holder)  # the holder it sent us to does not serve now
                    continue
                self._selector.failed(entry)
                tried.add(entry)
                failures.append((entry, err))
                continue
            self._selector.answered(entry)
            return resp

    def _follow(self, method, url, headers, body):
        for _ in range(self.max_redirects + 1):
            resp = self._exchange(method, url, headers, body)
            if resp.status not in REDIRECT_STATUSES:
                return resp
            location = resp.header("Location")
            resp.release()
            if not location:
                raise ProtocolError(f"{url} answered {resp.status} without a Location")
            target = urljoin(url, location)
            if not self._selector.is_known(target):
                raise RedirectRefused(target)
            url = target
        raise TooManyRedirects(f"more than {self.max_redirects} redirects for {method} {url}")
