"""Calls from one node to another (heartbeats, locks, location records, copies, challenges)
and to the admin server (access decisions, reports, the witness).

Every call goes over a kept-alive mutual-TLS connection: one ``aiohttp.ClientSession`` per
node, with one ``ssl.SSLContext`` carrying the node's certificate, keeps its connections to
each peer open between calls, so a peer round costs a request, not a handshake (a new
connection per call cost 5-6 ms of CPU on both sides and made small uploads crawl). Without
TLS (the debug mode) a shared cluster secret in a header stands in for the certificate.

Failure detection is as before: every call has its own deadline, a connection that breaks is
dropped from the pool (the next call opens a new one), and a call that fails on a kept
connection the peer had closed meanwhile (it restarted) is sent once more on a new one; all
our calls may be repeated (locks carry their token, records are applied by stamp).
"""
import asyncio
import json
import logging
import os
from urllib.parse import urlencode

import aiohttp

from securifile.common.admin_urls import MOVE_ON_STATUSES, AdminURLs
from securifile.common.auth import PEER_SECRET_HEADER
from securifile.common.paths import file_url

from .channel_client import MAX_ANSWER, ChannelClosed, ChannelRefused, Channels, TooLong
from .channel_client import PATH as CHANNEL_PATH

log = logging.getLogger("securifile.peerclient")

COPY_CHUNK = 1 << 20
REPLICAS = "/peer/replicas/"  # the route of a node's copies, for its peers only
# The channel ops' HTTP routes (a peer that refuses a channel, a call too long for one).
HTTP_ROUTES = {"lock": "/peer/locks", "locations": "/peer/locations", "record": "/peer/record"}
KEEPALIVE = 60.0  # seconds an idle connection stays open (heartbeats use them every second)
HTTP_ONLY_FOR = 60.0  # seconds a peer that refused a channel is called over HTTP only


class PeerError(Exception):
    """A peer did not do what was asked (unreachable, refused, or a wrong digest).

    ``unreachable``: the connection was refused, reset or closed under the call (the peer is
    gone, or cut off); ``timed_out``: no answer in time (the peer may be alive but stuck).
    """

    def __init__(self, message, status=None, body=None, unreachable=False, timed_out=False):
        super().__init__(message)
        self.status = status
        self.body = body or {}
        self.unreachable = unreachable
        self.timed_out = timed_out


def copy_headers(loc, size=None):
    """What a replica needs to know about the copy it receives (digest None: unknown yet,
    the replica answers the one it computed)."""
    headers = {
        "X-SecuriFile-Algorithm": loc.algorithm,
        "X-SecuriFile-Version": str(loc.version),
        "X-SecuriFile-Origin": loc.origin,
    }
    if loc.digest:
        headers["X-SecuriFile-Digest"] = loc.digest
    if size is not None:
        headers["Content-Length"] = str(size)
    return headers


class PeerClient:
    def __init__(self, self_name, ssl_context=None, peer_secret=None, timeout=10.0):
        self.self_name = self_name
        self.ssl_context = ssl_context
        # The membership epoch this node counts over, sent with locks and witness questions.
        self.epoch = lambda: 0
        self.peer_secret = peer_secret
        self.timeout = timeout
        self._session = None
        self._channels = None
        self._http_only = {}  # base URL -> until when it is called over HTTP (no channel)
        # Counted for /status and the bench: new connections (a TLS handshake each) and calls.
        self.connections_created = 0
        self.requests = 0  # HTTP requests and channel calls
        self.channel_calls = 0

    def stats(self):
        return {"connections_created": self.connections_created, "requests": self.requests,
                "channel_calls": self.channel_calls}

    def _open(self):
        if self._session is None or self._session.closed:
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_end.append(self._created)
            trace.on_connection_reuseconn.append(self._reused)
            trace.on_request_start.append(self._started)
            connector = aiohttp.TCPConnector(
                ssl=self.ssl_context if self.ssl_context is not None else False,
                limit=0, keepalive_timeout=KEEPALIVE, use_dns_cache=True)
            self._session = aiohttp.ClientSession(
                connector=connector, trace_configs=[trace], auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),  # each call sets its own deadline
                skip_auto_headers=("User-Agent", "Accept-Encoding"))
        return self._session

    async def _created(self, _session, ctx, _params):
        self.connections_created += 1

    async def _reused(self, _session, ctx, _params):
        if isinstance(ctx.trace_request_ctx, dict):
            ctx.trace_request_ctx["reused"] = True

    async def _started(self, _session, _ctx, params):
        if params.url.path != CHANNEL_PATH:  # a channel's calls are counted as they go
            self.requests += 1

    async def close(self):
        if self._channels is not None:
            await self._channels.close()
            self._channels = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def drop_channel(self, base):
        """The next call to ``base`` opens a new channel (``Channels.drop``)."""
        if self._channels is not None:
            self._channels.drop(base)

    def _headers(self, extra=None):
        h = {"X-SecuriFile-Node": self.self_name}
        if self.peer_secret:
            h[PEER_SECRET_HEADER] = self.peer_secret
        h.update(extra or {})
        return h

    async def _call(self, url, method="GET", body=None, timeout=None, headers=None,
                    retry=True):
        """One request; the answer's body (bytes). PeerError for anything but a 2xx."""
        timeout = timeout or self.timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ctx = {}
            try:
                async with asyncio.timeout(max(0.001, deadline - loop.time())):
                    async with self._open().request(
                            method, url, data=body, headers=self._headers(headers),
                            trace_request_ctx=ctx, allow_redirects=False) as resp:
                        data = await resp.read()
                        status = resp.status
                break
            except TimeoutError:
                raise PeerError(f"{method} {url}: no answer within {timeout:.1f} s",
                                timed_out=True) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                # A kept connection the peer closed meanwhile (a restart): once more, on a
                # new one. A call that failed on a new connection is not repeated.
                if retry and ctx.get("reused") and not isinstance(
                        e, aiohttp.ClientConnectorError) and loop.time() < deadline:
                    retry = False
                    continue
                raise PeerError(f"{method} {url}: {e!r}", unreachable=True) from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as e:
                raise PeerError(f"{method} {url}: {e!r}", unreachable=True) from None
            except aiohttp.ClientError as e:
                raise PeerError(f"{method} {url}: {e!r}") from None
        if not 200 <= status < 300:
            try:
                answer = json.loads(data) if data else {}
            except ValueError:
                answer = {}
            detail = data[:300].decode("utf-8", "replace")
            raise PeerError(f"{method} {url}: {status} {detail}", status,
                            answer if isinstance(answer, dict) else {})
        return data

    def _open_ws(self, url):
        return self._open().ws_connect(url, headers=self._headers(), heartbeat=None,
                                       max_msg_size=MAX_ANSWER, compress=0)

    async def call_op(self, base, op, body, timeout=None, data=None, http=None):
        """``op`` (nodes/peer_ops.py) over the kept channel to the peer at ``base``, with the
        bytes ``data`` if any: the JSON object answered; PeerError as ``_call`` raises it.
        A peer that refuses a channel, and a call too long for one, go over HTTP instead:
        ``http(timeout)``, by default a POST of ``body`` to the op's JSON route."""
        loop = asyncio.get_running_loop()
        if http is None:
            def http(left):
                return self.call_json(base + HTTP_ROUTES[op], "POST", body, left)
        timeout = timeout or self.timeout
        if self._http_only.get(base, 0.0) > loop.time():
            return await http(timeout)
        deadline = loop.time() + timeout
        if self._channels is None:
            self._channels = Channels(self._open_ws, self.timeout)
        retry, fresh = True, True
        while True:
            try:
                async with asyncio.timeout(max(0.001, deadline - loop.time())):
                    channel, fresh = await self._channels.get(base)
                    self.requests += 1
                    self.channel_calls += 1
                    answer = await channel.call(op, body, data)
                break
            except TimeoutError:
                raise PeerError(f"{op} at {base}: no answer within {timeout:.1f} s",
                                timed_out=True) from None
            except ChannelRefused:
                self._http_only[base] = loop.time() + HTTP_ONLY_FOR
                return await http(max(0.001, deadline - loop.time()))
            except TooLong:
                return await http(max(0.001, deadline - loop.time()))
            except ChannelClosed as e:
                # A kept channel the peer closed meanwhile (a restart): once more, on a new
                # one, as a kept HTTP connection is (every op may be repeated).
                if retry and not fresh and loop.time() < deadline:
                    retry = False
                    continue
                raise PeerError(f"{op} at {base}: {e}", unreachable=True) from None
            except (aiohttp.ClientError, OSError) as e:  # refused, reset, TLS refused
                raise PeerError(f"{op} at {base}: {e!r}", unreachable=True) from None
        status, data = answer.get("status"), answer.get("body")
        if not isinstance(status, int) or not 200 <= status < 300:
            raise PeerError(f"{op} at {base}: {status} {json.dumps(data)[:300]}", status,
                            data if isinstance(data, dict) else {})
        if not isinstance(data, dict):
            raise PeerError(f"{op} at {base}: the answer is not a JSON object")
        return data

    async def call_json(self, url, method="GET", payload=None, timeout=None):
        """``payload`` sent as JSON; the JSON object answered (PeerError otherwise)."""
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else None
        data = await self._call(url, method, body, timeout, headers)
        return self._object(data, method, url)

    @staticmethod
    def _object(data, method, url):
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            raise PeerError(f"{method} {url}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise PeerError(f"{method} {url}: the answer is not a JSON object")
        return answer

    async def call_admin(self, admin, path, method="GET", payload=None, timeout=None):
        """``call_json`` to the admin server: its instances (``admin``: AdminURLs or URLs) in
        turn, the one that answered last first, until one answers; the last error when none
        does. A refusal (4xx) is an answer, not asked of the others."""
        admin = admin if isinstance(admin, AdminURLs) else AdminURLs(admin)
        error = None
        for base in admin.order():
            try:
                answer = await self.call_json(base + path, method, payload, timeout)
            except PeerError as e:
                if not (e.unreachable or e.timed_out or e.status in MOVE_ON_STATUSES):
                    admin.answered(base)
                    raise
                error = e
                log.debug("admin server %s did not answer (%s); trying the next", base, e)
                continue
            admin.answered(base)
            return answer
        raise error

    async def heartbeat(self, base, timeout, pulled=0, counted_down=None):
        body = {"from": self.self_name, "pulled": pulled}
        if counted_down:  # this node (with the majority) counts the callee down since then
            body["down"] = counted_down
        return await self.call_json(base + "/peer/heartbeat", "POST", body, timeout)

    async def challenge(self, base, challenge, timeout):
        return await self.call_json(base + "/peer/challenge", "POST", challenge, timeout)

    async def send_verdict(self, base, passed, detail, hold=0.0):
        """``hold``: seconds the peer must wait before it coordinates a write (this node
        still refuses its locks and records that long, ``nodes/refusals.py``)."""
        return await self.call_json(base + "/peer/verdict", "POST",
                                    {"challenger": self.self_name, "passed": passed,
                                     "detail": detail, "hold": hold})

    async def lock(self, base, fp, holder, lease, token, known=0, stamp=None, timeout=None):
        """Take or renew a lock; the answer has the stamp reserved (``stamp``: at least this
        one) and the peer's record when it is newer than the stamp ``known`` here."""
        body = {"owner": fp.owner, "path": fp.rel, "holder": holder, "lease": lease,
                "token": token, "known": known, "epoch": self.epoch()}
        if stamp is not None:
            body["stamp"] = stamp
        return await self.call_op(base, "lock", body, timeout)

    async def unlock(self, base, fp, token, timeout=None):
        return await self.call_op(base, "lock", {
            "owner": fp.owner, "path": fp.rel, "token": token, "release": True}, timeout)

    async def push_locations(self, base, records, release=None, timeout=None, seq=None,
                             numbered=None):
        """Records to apply, and the locks they end (given back once applied); ``seq``:
        (before, after), this node's map sequence around them (see HeartbeatLoop.note_pushed);
        ``numbered``: (before, after), this node's own numbers of them (``nodes/pushed.py``)."""
        body = {"records": records}
        if release:
            body["release"] = release
        if seq is not None:
            body["seq"] = list(seq)
        if numbered is not None:
            body["numbered"] = list(numbered)
        return await self.call_op(base, "locations", body, timeout)

    async def record_of(self, base, fp, timeout=None):
        """``base``'s record of ``fp`` as JSON (a tombstone too), None when it has none."""
        answer = await self.call_op(base, "record", {"owner": fp.owner, "path": fp.rel}, timeout)
        return answer.get("record")

    async def pull_locations(self, base, since, limit=1000, known=None):
        """A page of ``base``'s changes after ``since``; ``known``: {coordinator: (lo, hi)},
        the records this node was pushed, which come as their sequence numbers alone."""
        query = [("since", since), ("limit", limit)]
        query += [("known", f"{name}:{lo}:{hi}")
                  for name, (lo, hi) in sorted((known or {}).items())]
        return await self.call_json(f"{base}/peer/locations?{urlencode(query)}")

    async def ask_witness(self, admin, side, lease, timeout):
        """Ask the admin server (the witness) for the tie-break lease for ``side``: the lease
        in seconds when granted, 0 when another side holds it. ``admin``: the AdminURLs of
        its instances (they share the lease's row)."""
        answer = await self.call_admin(admin, "/api/v1/witness", "POST",
                                       {"side": side, "lease": lease, "epoch": self.epoch()},
                                       timeout)
        return float(answer.get("lease", 0)) if answer.get("granted") else 0.0

    async def quota_reservation(self, admin, rid, request=None, timeout=None):
        """Reserve (``request``: owner, path, bytes, wanted) or, without one, give back the
        quota reservation ``rid`` at the admin server; its answer (see admin/quotas.py)."""
        return await self.call_admin(admin, f"/api/v1/quota/reservations/{rid}",
                                     "PUT" if request is not None else "DELETE", request, timeout)

    async def membership(self, admin, known, timeout):
        """The admin server's current membership; it notes that this node holds ``known``."""
        return await self.call_admin(admin, f"/api/v1/membership?known={known}", "GET", None,
                                     timeout)

    async def delete_copy(self, base, fp, version):
        await self._call(file_url(fp, base, REPLICAS) + f"?version={version}", "DELETE")

    async def send_copy(self, base, fp, disk_path, loc):
        """Stream a committed file to a peer; the peer answers only once its digest matches."""
        # One open file for the size and the bytes: a write that replaces the file meanwhile
        # (a rename) leaves this one whole, so what is sent is one version, never a mix.
        f = open(disk_path, "rb")
        size = os.fstat(f.fileno()).st_size

        async def produce():
            while chunk := f.read(COPY_CHUNK):
                yield chunk

        # Allow a slow link (10 MB/s) its time on a big file, and a minute on a small one.
        timeout = max(60.0, size / 10e6)
        url = file_url(fp, base, REPLICAS)
        try:
            data = await self._call(url, "PUT", produce(), timeout, copy_headers(loc, size),
                                    retry=False)
        finally:
            f.close()
        return self._stored(self._object(data, "PUT", url), url, loc)

    async def send_copy_bytes(self, base, fp, body, loc, publish):
        """A small file's copy from memory (the bytes the origin committed, ``loc.digest``
        theirs) with its record, in one message over the peer's channel (a PUT, headers and
        body in one write, to a peer without one); the peer answers once its digest matches. ``publish``: {"record", "token", "seq"}, the record naming the
        copy, which the peer applies once the copy is stored, giving the lock back (as
        ``push_locations``)."""
        url = file_url(fp, base, REPLICAS)

        async def over_http(timeout):
            headers = copy_headers(loc, len(body))
            # ASCII JSON (json.dumps escapes the rest): a header value.
            headers["X-SecuriFile-Publish"] = json.dumps(publish, separators=(",", ":"))
            return self._object(await self._call(url, "PUT", body, timeout, headers), "PUT", url)

        meta = {"owner": fp.owner, "path": fp.rel, "algorithm": loc.algorithm,
                "version": loc.version, "digest": loc.digest,
                "publish": publish}
        answer = await self.call_op(base, "copy", meta, 60.0, data=body, http=over_http)
        return self._stored(answer, url, loc)

    def _stored(self, answer, url, loc):
        if answer.get("digest") != loc.digest:
            raise PeerError(f"PUT {url}: stored digest {answer.get('digest')}, not {loc.digest}")
        return answer

    async def stream_copy(self, base, fp, loc, size, chunks):
        """Send a copy whose bytes are still arriving (``chunks``, an async iterator that
        ends when they all came); the replica's answer, with the digest it computed.

        No overall deadline: the caller bounds how long each chunk may wait (a stuck replica
        is dropped by cancelling this call, which closes the connection, so the replica sees
        its body cut and keeps nothing).
        """
        url = file_url(fp, base, REPLICAS)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
        try:
            async with self._open().put(url, data=chunks, timeout=timeout,
                                        headers=self._headers(copy_headers(loc, size))) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as e:
            raise PeerError(f"PUT {url}: {e!r}", unreachable=True) from None
        except aiohttp.ClientError as e:
            raise PeerError(f"PUT {url}: {e!r}") from None
        if not 200 <= status < 300:
            raise PeerError(f"PUT {url}: {status} {data[:300].decode('utf-8', 'replace')}", status)
        return self._object(data, "PUT", url)
