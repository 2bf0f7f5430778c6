"""The node's handlers over HTTPS in this process (pytest-tornado's ``https_server`` and
``https_client``) with certificates from a test CA: who a certificate makes the caller on
user routes and on /peer routes (the tokens and peer secret of test_node_http.py do not
exercise the certificate path)."""
import json
from datetime import datetime, timedelta, timezone

import pytest
from tornado.httpclient import HTTPClientError

from securifile.common.auth import Authenticator
from securifile.common.certnames import ROLE_NODE, CertLayout
from securifile.common.certs import ensure_ca, ensure_server_cert, ensure_user_cert
from securifile.common.paths import FilePath
from securifile.common.tls import client_context, server_context
from securifile.nodes.http import load_openapi, make_app

from .test_node_http import KEYS, MAX_BODY, SharedAuthoriser, cluster  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A test CA, the nodes' certificates (n1 serves) and alice's user certificate."""
    layout = CertLayout(tmp_path_factory.mktemp("certs"))
    ca = ensure_ca(layout)
    for name in ("n1", "n2"):
        ensure_server_cert(layout, ca, name, ROLE_NODE)
    ensure_user_cert(layout, ca, "alice", datetime.now(timezone.utc) + timedelta(days=1), "u-alice")
    return layout


@pytest.fixture
def app(cluster):  # noqa: F811 (the cluster fixture imported above)
    return make_app(cluster.nodes["n1"], Authenticator(KEYS[1], list(cluster.nodes)),
                    SharedAuthoriser(), tls=True, max_body_bytes=MAX_BODY, read_chunk=4,
                    openapi=load_openapi())


@pytest.fixture
def ssl_options(certs):
    return server_context(certs.server_cert("n1"), certs.server_key("n1"), certs.ca_cert)


def as_alice(certs):
    return client_context(certs.ca_cert, certs.user_cert("alice"), certs.user_key("alice"))


def as_node(certs, name="n2"):
    return client_context(certs.ca_cert, certs.server_cert(name), certs.server_key(name))


async def fetch(client, url, context, **options):
    """(status, JSON answer) whatever the status."""
    try:
        r = await client.fetch(url, ssl_options=context, follow_redirects=False, **options)
    except HTTPClientError as e:
        r = e.response
    return r.code, json.loads(r.body) if r.body else None


@pytest.mark.gen_test
async def test_a_users_certificate_makes_the_user(https_client, base_url, certs):
    status, _ = await fetch(https_client, f"{base_url}/files/alice/a.txt", as_alice(certs),
                            method="PUT", body=b"hello")
    assert status == 201
    r = await https_client.fetch(f"{base_url}/files/alice/a.txt", ssl_options=as_alice(certs))
    assert r.code == 200 and r.body == b"hello"
    status, answer = await fetch(https_client, f"{base_url}/files/bob/b.txt", as_alice(certs))
    assert (status, answer["error"]["code"]) == (403, "forbidden")


@pytest.mark.gen_test
async def test_a_server_certificate_is_not_a_user(https_client, base_url, certs, cluster):  # noqa: F811
    status, answer = await fetch(https_client, f"{base_url}/files/alice/a.txt", as_node(certs),
                                 method="PUT", body=b"x")
    assert (status, answer["error"]["code"]) == (403, "not_a_user")
    status, answer = await fetch(https_client, f"{base_url}/files/alice/", as_node(certs))
    assert (status, answer["error"]["code"]) == (403, "not_a_user")
    assert cluster.nodes["n1"].locations.get(FilePath("alice", "a.txt")) is None


@pytest.mark.gen_test
async def test_peer_routes_take_node_certificates_only(https_client, base_url, certs, cluster):  # noqa: F811
    heartbeat = dict(method="POST", body=json.dumps({"from": "n2", "pulled": 3}),
                     headers={"Content-Type": "application/json"})
    status, answer = await fetch(https_client, f"{base_url}/peer/heartbeat", as_alice(certs),
                                 **heartbeat)
    assert (status, answer["error"]["code"]) == (403, "not_a_node")
    assert cluster.nodes["n1"].pulled_by == {}
    status, answer = await fetch(https_client, f"{base_url}/peer/heartbeat", as_node(certs),
                                 **heartbeat)
    assert status == 200 and answer["status"] == "running"
    assert cluster.nodes["n1"].pulled_by == {"n2": 3}


@pytest.mark.gen_test
async def test_metrics_want_a_monitor_and_unknown_routes_are_404(https_client, base_url, certs):
    status, answer = await fetch(https_client, f"{base_url}/metrics", as_alice(certs))
    assert status == 403
    status, answer = await fetch(https_client, f"{base_url}/nowhere", as_alice(certs))
    assert (status, answer["error"]["code"]) == (404, "no_endpoint")
