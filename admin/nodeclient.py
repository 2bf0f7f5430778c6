"""Calls from the admin server to nodes (offline/online), with the admin's own certificate."""
import json

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from securifile.common.auth import PEER_SECRET_HEADER
from securifile.common.errors import Unavailable


class NodeStateClient:
    def __init__(self, ssl_context=None, peer_secret=None, timeout=10.0):
        self.ssl_context = ssl_context
        self.peer_secret = peer_secret
        self.timeout = timeout
        self.http = AsyncHTTPClient(force_instance=True)

    async def set_state(self, base_url, state):
        headers = {"Content-Type": "application/json", "X-SecuriFile-Node": "admin"}
        if self.peer_secret:
            headers[PEER_SECRET_HEADER] = self.peer_secret
        req = HTTPRequest(base_url.rstrip("/") + "/peer/admin/state", method="POST",
                          body=json.dumps({"state": state}), headers=headers,
                          ssl_options=self.ssl_context, request_timeout=self.timeout,
                          connect_timeout=self.timeout)
        try:
            resp = await self.http.fetch(req)
        except HTTPClientError as e:
            raise Unavailable(f"server at {base_url} refused: {e.code}", code="node_refused") from None
        except OSError as e:
            raise Unavailable(f"server at {base_url} did not answer: {e}", code="node_unreachable") from None
        return json.loads(resp.body)
