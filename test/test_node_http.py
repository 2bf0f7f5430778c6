"""The node's /files handlers in one process, through pytest-tornado's ``http_server`` and
``http_client``: node n1 of a MemoryCluster (test/memory_cluster.py) serves the real
Tornado application over loopback HTTP (the no-TLS mode), its peers answer in-process.
What the handlers do is checked here in milliseconds: routing and redirects, 423 while
locked, owner-only creation, room checks and the mapping of errors to status codes."""
import asyncio
import json
import logging
import socket
import threading

import pytest
from tornado.http1connection import HTTP1Connection
from tornado.httpclient import HTTPClientError

from securifile.common.auth import PEER_SECRET_HEADER, Authenticator
from securifile.common.errors import Forbidden
from securifile.common.paths import FilePath
from securifile.nodes import buffers
from securifile.nodes import http as node_http
from securifile.nodes.http import load_openapi, make_app

from .memory_cluster import MemoryCluster, bearer, token_keys

KEYS = token_keys()
MAX_BODY = 1000
SECRET = "cluster-secret"  # what nodes show each other without TLS


class SharedAuthoriser:
    """Alice owns her namespace; bob is an editor in it (what the admin server would say)."""

    async def check(self, principal, op, fp):
        if principal.name == fp.owner or (principal.name == "bob" and op in ("read", "write")):
            return "owner" if principal.name == fp.owner else "editor"
        raise Forbidden(f"{principal.name} has no access to {fp.full}")


@pytest.fixture
def cluster(tmp_path):
    c = MemoryCluster(tmp_path, capacity_bytes=10_000)
    yield c
    c.close()


@pytest.fixture
def app(cluster):
    return make_app(cluster.nodes["n1"], Authenticator(KEYS[1], list(cluster.nodes), SECRET),
                    SharedAuthoriser(), tls=False, max_body_bytes=MAX_BODY, read_chunk=4,
                    openapi=load_openapi())


async def call(http_client, base_url, method, path, user="alice", body=None, headers=None,
               **options):
    """The answer, whatever its status (errors are answers here too)."""
    request_headers = dict(bearer(KEYS[0], user)) if user else {}
    request_headers.update(headers or {})
    try:
        return await http_client.fetch(f"{base_url}/files/{path}", method=method, body=body,
                                       headers=request_headers, follow_redirects=False,
                                       allow_nonstandard_methods=True, **options)
    except HTTPClientError as e:
        return e.response


def error_code(response):
    return json.loads(response.body)["error"]["code"]


@pytest.mark.gen_test
@pytest.mark.parametrize("expect_continue", [False, True])
async def test_put_then_get_and_a_ranged_read(http_client, base_url, cluster, expect_continue):
    # Without 100-continue a small body arrives while the lock is taken; with it, first.
    r = await call(http_client, base_url, "PUT", "alice/a.txt", body=b"hello world",
                   expect_100_continue=expect_continue)
    assert r.code == 201, r.body
    assert json.loads(r.body)["replicas_wanted"] == 1
    r = await call(http_client, base_url, "PUT", "alice/a.txt", body=b"hello again",
                   expect_100_continue=expect_continue)
    assert r.code == 200 and json.loads(r.body)["version"] == 2
    r = await call(http_client, base_url, "GET", "alice/a.txt")
    assert r.code == 200 and r.body == b"hello again"
    assert r.headers["X-SecuriFile-Version"] == "2" and r.headers["X-SecuriFile-Server"] == "n1"
    r = await call(http_client, base_url, "GET", "alice/a.txt", headers={"Range": "bytes=6-"})
    assert r.code == 206 and r.body == b"again"
    r = await call(http_client, base_url, "GET", "alice/")
    assert [f["path"] for f in json.loads(r.body)["files"]] == ["a.txt"]
    assert cluster.nodes["n1"].upload_slots._busy == {}


@pytest.mark.gen_test
async def test_a_file_goes_out_without_nagles_delay(http_client, base_url, cluster, monkeypatch):
    """Each chunk of a download is sent with TCP_NODELAY on, as nginx sends a file: with
    Nagle's algorithm a 1 GiB download ran about 12% slower for 15% more CPU."""
    delayed = []
    write = HTTP1Connection.write

    def watched(connection, chunk):
        if not connection.is_client:
            sock = connection.stream.socket
            delayed.append(not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return write(connection, chunk)

    r = await call(http_client, base_url, "PUT", "alice/a.txt", body=b"hello world")
    assert r.code == 201, r.body
    monkeypatch.setattr(HTTP1Connection, "write", watched)
    r = await call(http_client, base_url, "GET", "alice/a.txt")  # three chunks of 4 bytes
    assert r.code == 200 and r.body == b"hello world"
    assert len(delayed) >= 2 and not any(delayed), delayed


async def get_while_ticking(http_client, base_url, path, tick, every):
    """GET ``path`` while another task on the event loop calls ``tick`` every ``every`` s
    (0: at each turn of the loop)."""
    stop = asyncio.Event()

    async def ticker():
        while not stop.is_set():
            tick()
            await asyncio.sleep(every)

    ticking = asyncio.ensure_future(ticker())
    try:
        return await call(http_client, base_url, "GET", path)
    finally:
        stop.set()
        await ticking


@pytest.mark.gen_test
async def test_a_long_download_gives_the_event_loop_turns(http_client, base_url, cluster,
                                                          monkeypatch):
    """A write the socket takes at once completes without a turn of the event loop, so a
    download could hold the loop for its whole length: a 4 GiB one did for seconds, and the
    node's peers, missing its heartbeats, marked it down. It yields every YIELD_EVERY
    bytes (here 40: ten chunks of 4 bytes)."""
    monkeypatch.setattr(node_http, "YIELD_EVERY", 40)
    data = bytes(range(250)) * 2  # 125 chunks
    r = await call(http_client, base_url, "PUT", "alice/long.bin", body=data)
    assert r.code == 201, r.body
    turns, seen = [0], []
    write = HTTP1Connection.write

    def watched(connection, chunk):
        if not connection.is_client:
            seen.append(turns[0])
        return write(connection, chunk)

    monkeypatch.setattr(HTTP1Connection, "write", watched)

    def tick():
        turns[0] += 1

    r = await get_while_ticking(http_client, base_url, "alice/long.bin", tick, 0)
    assert r.code == 200 and r.body == data
    assert len(set(seen)) >= 10, seen  # the loop turned at least every ten chunks


@pytest.mark.gen_test(timeout=60)
async def test_a_chunk_read_from_the_disk_is_awaited_without_holding_the_event_loop(
        http_client, base_url, cluster, monkeypatch, from_disk):
    """A download's chunks that come from the disk are read by a worker thread (the next
    one while this one is sent), the first one too; the handler awaits each read, so the
    event loop serves other requests meanwhile. Each worker read here waits until the loop
    has turned after it began (at most 0.5 s): one the loop waited for instead (inside the
    chunk generator) times out. The digest's check holds a chunk back, so the first chunk
    asked for pulls two: neither may be waited for."""
    data = bytes(range(200))  # 50 chunks of 4 bytes
    r = await call(http_client, base_url, "PUT", "alice/cold.bin", body=data)
    assert r.code == 201, r.body
    turned, waited_out, reads = threading.Event(), [], []
    real = buffers._READERS

    class Readers:
        def submit(self, fn, *args):
            def read():
                turned.clear()
                waited_out.append(not turned.wait(0.5))  # the loop turns while this runs
                reads.append(1)
                return fn(*args)
            return real.submit(read)

    monkeypatch.setattr(buffers, "_READERS", Readers())
    r = await get_while_ticking(http_client, base_url, "alice/cold.bin", turned.set, 0.001)
    assert r.code == 200 and r.body == data
    assert len(reads) == 50 and not any(waited_out), (len(reads), waited_out.count(True))


@pytest.mark.gen_test
async def test_requests_for_a_file_held_elsewhere_are_redirected(http_client, base_url, cluster):
    cluster.place("alice", "far.txt", ["n2", "n3"])
    for method, body in (("GET", None), ("PUT", b"new")):
        r = await call(http_client, base_url, method, "alice/far.txt", body=body)
        assert r.code == 307, (method, r.body)
        assert r.headers["Location"] == "mem://n2/files/alice/far.txt?holder=n2"
    r = await call(http_client, base_url, "GET", "alice/far.txt?avoid=n2")
    assert r.code == 307 and r.headers["Location"].startswith("mem://n3/")
    # Nothing was written here, and nothing is held.
    assert not cluster.nodes["n1"].store.path_for(FilePath("alice", "far.txt")).exists()
    assert cluster.nodes["n1"].upload_slots._busy == {}


@pytest.mark.gen_test
async def test_a_locked_file_answers_423_naming_the_writer(http_client, base_url, cluster):
    fp = cluster.place("alice", "busy.txt", ["n2", "n3"])
    ticket = await cluster.nodes["n3"].lock(fp, "bob")
    r = await call(http_client, base_url, "PUT", "alice/busy.txt", body=b"x")
    assert r.code == 423 and error_code(r) == "locked"
    assert json.loads(r.body)["error"]["holder"] == "bob"
    cluster.nodes["n3"].release(ticket)


@pytest.mark.gen_test
async def test_only_the_owner_creates_files_an_editor_changes_them(http_client, base_url, cluster):
    r = await call(http_client, base_url, "PUT", "alice/new.txt", user="bob", body=b"x")
    assert r.code == 403 and error_code(r) == "forbidden"
    assert cluster.nodes["n1"].locations.get(FilePath("alice", "new.txt")) is None
    assert (await call(http_client, base_url, "PUT", "alice/new.txt", body=b"v1")).code == 201
    r = await call(http_client, base_url, "PUT", "alice/new.txt", user="bob", body=b"v2")
    assert r.code == 200 and json.loads(r.body)["version"] == 2
    r = await call(http_client, base_url, "DELETE", "alice/new.txt", user="bob")
    assert r.code == 403


@pytest.mark.gen_test
async def test_size_and_room_are_refused_with_their_codes(http_client, base_url, cluster):
    r = await call(http_client, base_url, "PUT", "alice/big.bin", body=b"x" * (MAX_BODY + 1))
    assert r.code == 413 and error_code(r) == "too_large"
    cluster.nodes["n1"].store.capacity_bytes = 10
    r = await call(http_client, base_url, "PUT", "alice/big.bin", body=b"x" * 11,
                   expect_100_continue=True)
    assert r.code == 507
    assert not cluster.nodes["n1"].store.path_for(FilePath("alice", "big.bin")).exists()


@pytest.mark.gen_test
async def test_errors_map_to_their_status_and_json_codes(http_client, base_url, cluster):
    cases = [
        ("GET", "alice/missing.txt", "alice", None, {}, 404, "not_found"),
        ("GET", "bob/x.txt", "alice", None, {}, 403, "forbidden"),
        ("GET", "alice/x.txt", None, None, {}, 401, "unauthenticated"),
        ("PUT", "alice/../x", "alice", b"x", {}, 400, "invalid_path"),
        ("PUT", "alice/d.txt", "alice", b"x", {"Content-Digest": "sha-256=:bad:"}, 400,
         "invalid_digest"),
        ("DELETE", "alice/missing.txt", "alice", None, {}, 404, "not_found"),
    ]
    for method, path, user, body, headers, status, code in cases:
        r = await call(http_client, base_url, method, path, user, body, headers)
        assert (r.code, error_code(r)) == (status, code), (method, path, r.body)
    r = await call(http_client, base_url, "PUT", "alice/file.txt", body=b"x")
    assert r.code == 201
    r = await call(http_client, base_url, "PUT", "alice/file.txt/under", body=b"x")
    assert (r.code, error_code(r)) == (409, "parent_is_a_file")


@pytest.mark.gen_test
async def test_a_node_without_a_majority_serves_nobody(http_client, base_url, cluster):
    cluster.nodes["n1"].peers.set_self("offline", "taken offline by the test")
    r = await call(http_client, base_url, "GET", "alice/x.txt")
    assert r.code == 503 and error_code(r) == "server_not_running"
    assert "Retry-After" not in r.headers  # it will not pass by itself: ask another server


@pytest.mark.gen_test
async def test_a_node_being_verified_says_when_to_ask_again(http_client, base_url, cluster):
    cluster.nodes["n1"].peers.set_self("verifying", "back after a restart")
    r = await call(http_client, base_url, "GET", "alice/x.txt")
    assert r.code == 503 and error_code(r) == "server_not_running"
    assert r.headers["Retry-After"] == "1"


async def peer_call(http_client, base_url, method, path, payload=None, peer="n2"):
    headers = {PEER_SECRET_HEADER: SECRET, "X-SecuriFile-Node": peer,
               "Content-Type": "application/json"}
    try:
        return await http_client.fetch(f"{base_url}/peer/{path}", method=method, headers=headers,
                                       body=None if payload is None else json.dumps(payload))
    except HTTPClientError as e:
        return e.response


@pytest.mark.gen_test
async def test_a_lock_a_peer_takes_here_refuses_users_until_given_back(http_client, base_url,
                                                                         cluster):
    lock = {"owner": "alice", "path": "p.txt", "holder": "bob", "token": "t1", "lease": 30}
    r = await peer_call(http_client, base_url, "POST", "locks", lock)
    assert r.code == 200 and json.loads(r.body)["stamp"] == 1
    r = await call(http_client, base_url, "PUT", "alice/p.txt", body=b"x")
    assert r.code == 423 and json.loads(r.body)["error"]["node"] == "n2"
    r = await peer_call(http_client, base_url, "POST", "locks", {**lock, "release": True})
    assert r.code == 200
    assert (await call(http_client, base_url, "PUT", "alice/p.txt", body=b"x")).code == 201
    r = await peer_call(http_client, base_url, "GET", "locations?since=0")
    assert [rec["path"] for rec in json.loads(r.body)["records"]] == ["p.txt"]


@pytest.mark.gen_test
async def test_peer_routes_answer_nodes_only_and_an_offline_node_no_heartbeat(
        http_client, base_url, cluster):
    r = await peer_call(http_client, base_url, "POST", "heartbeat", {"from": "n2", "pulled": 4})
    assert r.code == 200 and json.loads(r.body)["status"] == "running"
    assert cluster.nodes["n1"].pulled_by == {"n2": 4}
    try:
        await http_client.fetch(f"{base_url}/peer/heartbeat", method="POST", body="{}",
                                headers=bearer(KEYS[0], "alice"))
        raise AssertionError("a user reached a peer route")
    except HTTPClientError as e:
        assert e.code == 403 and error_code(e.response) == "not_a_node"
    r = await peer_call(http_client, base_url, "POST", "admin/state", {"state": "offline"})
    assert r.code == 403 and error_code(r) == "not_the_admin"
    cluster.nodes["n1"].set_admin_state("offline")
    r = await peer_call(http_client, base_url, "POST", "heartbeat", {"from": "n2"})
    assert r.code == 503 and error_code(r) == "server_offline"


@pytest.mark.gen_test
async def test_a_method_a_streamed_route_lacks_is_a_clean_405(http_client, base_url, cluster,
                                                              caplog):
    """TRACE or QUERY with a body on /files or /peer/replicas (the OpenAPI fuzz sends
    them): Tornado answers 405 before prepare, and the answer's cleanup and the body's
    sink looked for what prepare sets: "Uncaught exception" in the node's log and the
    connection dropped for the one with a body."""
    with caplog.at_level(logging.ERROR):
        for method in ("TRACE", "QUERY"):
            r = await call(http_client, base_url, method, "alice/a.txt", body=b"0123")
            assert r.code == 405 and error_code(r) == "http_error", (method, r.code)
            r = await http_client.fetch(
                f"{base_url}/peer/replicas/alice/a.txt", method=method, body=b"0123",
                headers={PEER_SECRET_HEADER: SECRET, "X-SecuriFile-Node": "n2"},
                allow_nonstandard_methods=True, raise_error=False)
            assert r.code == 405, (method, r.code)
    assert "Uncaught exception" not in caplog.text and "AttributeError" not in caplog.text
