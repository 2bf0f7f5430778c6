"""Calls from the admin server to nodes (offline/online), with the admin's own certificate.

Without TLS (debug mode) the admin server proves itself with a one-minute token signed by
its token key, which only it holds; the nodes' shared secret would let any node pose as it.
"""
import json

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from securifile.common.errors import Unavailable
from securifile.common.tokens import ROLE_ADMIN_SERVER, mint_token


class NodeStateClient:
    def __init__(self, ssl_context=None, token_key=None, timeout=10.0):
        self.ssl_context = ssl_context
        self.token_key = token_key
        self.timeout = timeout
        self.http = AsyncHTTPClient(force_instance=True)

    async def set_state(self, base_url, state):
        headers = {"Content-Type": "application/json", "X-SecuriFile-Node": "admin"}
        if self.ssl_context is None and self.token_key:
            token, _ = mint_token(self.token_key, "admin", 60, role=ROLE_ADMIN_SERVER)
            headers["Authorization"] = f"Bearer {token}"
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
