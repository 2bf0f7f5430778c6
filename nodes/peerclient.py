"""Calls from one node to another: heartbeats, replica copies, location records.

One TLS context with the node's own certificate is built once and shared by every call
(Tornado otherwise builds one per request). Without TLS (the debug mode) a shared cluster
secret in a header stands in for the certificate.
"""
import json
import os
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.simple_httpclient import HTTPStreamClosedError, HTTPTimeoutError

from securifile.common.auth import PEER_SECRET_HEADER
COPY_CHUNK = 1 << 20


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


def file_url(base, fp, prefix="/peer/replicas/"):
    return base.rstrip("/") + prefix + quote(fp.owner, safe="") + "/" + quote(fp.rel, safe="/")


class PeerClient:
    def __init__(self, self_name, ssl_context=None, peer_secret=None, timeout=10.0):
        self.self_name = self_name
        self.ssl_context = ssl_context
        self.peer_secret = peer_secret
        self.timeout = timeout
        self.http = AsyncHTTPClient(force_instance=True, max_clients=100)

    def _headers(self, extra=None):
        h = {"X-SecuriFile-Node": self.self_name}
        if self.peer_secret:
            h[PEER_SECRET_HEADER] = self.peer_secret
        h.update(extra or {})
        return h

    async def _fetch(self, url, method="GET", body=None, timeout=None, headers=None, **kw):
        req = HTTPRequest(
            url, method=method, body=body, headers=self._headers(headers),
            ssl_options=self.ssl_context, connect_timeout=timeout or self.timeout,
            request_timeout=timeout or self.timeout, **kw)
        try:
            return await self.http.fetch(req)
        except HTTPTimeoutError as e:
            raise PeerError(f"{method} {url}: {e}", timed_out=True) from None
        except HTTPStreamClosedError as e:
            raise PeerError(f"{method} {url}: {e}", unreachable=True) from None
        except HTTPClientError as e:
            detail = e.response.body[:300].decode("utf-8", "replace") if e.response else ""
            try:
                body = json.loads(e.response.body) if e.response else {}
            except ValueError:
                body = {}
            raise PeerError(f"{method} {url}: {e.code} {detail}", e.code, body) from None
        except TimeoutError as e:
            raise PeerError(f"{method} {url}: {e!r}", timed_out=True) from None
        except OSError as e:  # refused, reset, no route
            raise PeerError(f"{method} {url}: {e!r}", unreachable=True) from None

    async def _json(self, url, method="GET", payload=None, timeout=None):
        """``payload`` sent as JSON; the JSON object answered."""
        body = None if payload is None else json.dumps(payload)
        headers = {"Content-Type": "application/json"} if body is not None else None
        resp = await self._fetch(url, method, body, timeout, headers)
        try:
            answer = json.loads(resp.body) if resp.body else {}
        except ValueError:
            raise PeerError(f"{method} {url}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise PeerError(f"{method} {url}: the answer is not a JSON object")
        return answer

    async def heartbeat(self, base, timeout, pulled=0):
        return await self._json(base + "/peer/heartbeat", "POST",
                                {"from": self.self_name, "pulled": pulled}, timeout)

    async def challenge(self, base, challenge, timeout):
        return await self._json(base + "/peer/challenge", "POST", challenge, timeout)

    async def send_verdict(self, base, passed, detail):
        return await self._json(base + "/peer/verdict", "POST",
                                {"challenger": self.self_name, "passed": passed, "detail": detail})

    async def lock(self, base, fp, holder, lease, token, known=0, stamp=None, timeout=None):
        """Take or renew a lock; the answer has the stamp reserved (``stamp``: at least this
        one) and the peer's record when it is newer than the stamp ``known`` here."""
        body = {"owner": fp.owner, "path": fp.rel, "holder": holder, "lease": lease,
                "token": token, "known": known}
        if stamp is not None:
            body["stamp"] = stamp
        return await self._json(base + "/peer/locks", "POST", body, timeout)

    async def unlock(self, base, fp, token, timeout=None):
        return await self._json(base + "/peer/locks", "POST", {
            "owner": fp.owner, "path": fp.rel, "token": token, "release": True}, timeout)

    async def push_locations(self, base, records, release=None, timeout=None):
        """Records to apply, and the locks they end (given back once applied)."""
        body = {"records": records}
        if release:
            body["release"] = release
        return await self._json(base + "/peer/locations", "POST", body, timeout)

    async def pull_locations(self, base, since, limit=1000):
        return await self._json(f"{base}/peer/locations?since={since}&limit={limit}")

    async def ask_witness(self, admin_url, side, lease, timeout):
        """Ask the admin server (the witness) for the tie-break lease for ``side``: the lease
        in seconds when granted, 0 when another side holds it."""
        answer = await self._json(admin_url.rstrip("/") + "/api/v1/witness", "POST",
                                  {"side": side, "lease": lease}, timeout)
        return float(answer.get("lease", 0)) if answer.get("granted") else 0.0

    async def delete_copy(self, base, fp, version):
        await self._fetch(file_url(base, fp) + f"?version={version}", "DELETE")

    async def send_copy(self, base, fp, disk_path, loc):
        """Stream a committed file to a peer; the peer answers only once its digest matches."""
        # One open file for the size and the bytes: a write that replaces the file meanwhile
        # (a rename) leaves this one whole, so what is sent is one version, never a mix.
        f = open(disk_path, "rb")
        size = os.fstat(f.fileno()).st_size

        async def produce(write):
            with f:
                while chunk := f.read(COPY_CHUNK):
                    await write(chunk)

        headers = {
            "Content-Length": str(size),
            "X-SecuriFile-Digest": loc.digest,
            "X-SecuriFile-Algorithm": loc.algorithm,
            "X-SecuriFile-Version": str(loc.version),
            "X-SecuriFile-Origin": loc.origin,
        }
        # Allow a slow link (10 MB/s) its time on a big file, and a minute on a small one.
        timeout = max(60.0, size / 10e6)
        try:
            resp = await self._fetch(file_url(base, fp), "PUT", timeout=timeout,
                                     headers=headers, body_producer=produce)
        finally:
            f.close()
        answer = json.loads(resp.body)
        if answer.get("digest") != loc.digest:
            raise PeerError(f"{base} stored digest {answer.get('digest')} for {fp}, not {loc.digest}")
        return answer
