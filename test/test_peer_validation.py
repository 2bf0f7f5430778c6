"""A node checks what a fellow node sends against the sender's part in the file (issue 9,
point 9): a pushed location record comes from the node that coordinated it under the file's
lock, a copy (or its withdrawal) from the coordinator or a holder, a verdict from a peer that
challenged this node, and a failing one only about copies they hold together. A node
certificate that breaks these rules gets 403 and changes nothing.

One real cluster over TLS for the module: three nodes, one replica, so each file has two
holders and one node that holds nothing of it (the "outsider" whose certificate we use).
"""
import asyncio
import json
import subprocess

import aiohttp
import pytest

from securifile.common.paths import FilePath
from securifile.common.tls import client_context
from securifile.nodes.peerclient import PeerClient, PeerError

from .clusters import start_cluster
from .helpers import AdminApi, Api, disk_copy, wait_for
from .test_metrics import samples, scrape

JSON = {"Content-Type": "application/json"}
FILE = "alice/peer-check/report.txt"
BODY = b"the real bytes"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "peercheck", 3, 1)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def placed(cluster):
    """(holders, outsider) of FILE, once both holders have it on disk."""
    api = Api(cluster)
    assert api.put("node1", FILE, BODY).status in (200, 201)
    nodes = ("node1", "node2", "node3")
    owner, rel = FILE.split("/", 1)
    holders = wait_for(lambda: [n for n in nodes if disk_copy(cluster, n, owner, rel).exists()]
                       if sum(disk_copy(cluster, n, owner, rel).exists() for n in nodes) == 2
                       else None, what="two copies on disk")
    (outsider,) = [n for n in nodes if n not in holders]
    return holders, outsider


def as_node(cluster, name):
    layout = cluster.layout
    return Api(cluster).with_identity(layout.server_cert(name), layout.server_key(name))


def peer_client_of(cluster, name):
    """A PeerClient with ``name``'s node certificate (call it inside an event loop)."""
    layout = cluster.layout
    ctx = client_context(layout.ca_cert, layout.server_cert(name), layout.server_key(name))
    return PeerClient(name, ssl_context=ctx, timeout=10)


def record_on(cluster, node, asker):
    """``node``'s record of FILE (asked with ``asker``'s certificate)."""
    r = as_node(cluster, asker).request(node, "GET", "/peer/locations?since=0&limit=10000",
                                        raw_path=True)
    assert r.status == 200, r
    owner, rel = FILE.split("/", 1)
    (rec,) = [x for x in r.json()["records"] if (x["owner"], x["path"]) == (owner, rel)]
    rec.pop("seq", None)
    return rec


def error_code(r):
    return r.json()["error"]["code"]


def test_a_record_not_from_its_coordinator_is_refused(cluster, placed):
    holders, outsider = placed
    target = holders[1]
    before = record_on(cluster, target, outsider)
    mallory = as_node(cluster, outsider)
    forged = dict(before, deleted=True, version=before["version"] + 1,
                  stamp=before["stamp"] + 100)
    r = mallory.request(target, "POST", "/peer/locations", raw_path=True, headers=JSON,
                        body=json.dumps({"records": [dict(forged,
                                                          coordinator=before["coordinator"])]}))
    assert (r.status, error_code(r)) == (403, "not_the_coordinator"), r
    assert record_on(cluster, target, outsider) == before
    owner, rel = FILE.split("/", 1)
    assert disk_copy(cluster, target, owner, rel).read_bytes() == BODY
    assert Api(cluster).follow(target, "GET", FILE)[1].body == BODY


def test_a_copy_from_a_node_that_neither_coordinates_nor_holds_the_file_is_refused(
        cluster, placed):
    holders, outsider = placed
    mallory = as_node(cluster, outsider)
    owner, rel = FILE.split("/", 1)
    for target in holders:
        r = mallory.request(target, "PUT", f"/peer/replicas/{FILE}", raw_path=True,
                            body=b"planted bytes", headers={
                                "X-SecuriFile-Version": "99", "Content-Length": "13"})
        assert (r.status, error_code(r)) == (403, "not_a_holder"), r
        r = mallory.request(target, "DELETE", f"/peer/replicas/{FILE}?version=99",
                            raw_path=True)
        assert (r.status, error_code(r)) == (403, "not_a_holder"), r
        assert disk_copy(cluster, target, owner, rel).read_bytes() == BODY
    assert Api(cluster).follow(holders[0], "GET", FILE)[1].body == BODY


def test_a_verdict_without_a_challenge_or_about_copies_not_held_together_is_refused(
        cluster, placed):
    holders, outsider = placed
    target = holders[0]
    mallory = as_node(cluster, outsider)

    def verdict(passed):
        return mallory.request(target, "POST", "/peer/verdict", raw_path=True, headers=JSON,
                               body=json.dumps({"passed": passed, "detail": "forged"}))

    for passed in (False, True):  # never challenged: neither fails nor passes anybody
        r = verdict(passed)
        assert (r.status, error_code(r)) == (403, "unsolicited_verdict"), r
    # A challenge about a file it does not hold with the target: answered "not a holder",
    # and gives no right to fail the target.
    owner, rel = FILE.split("/", 1)
    challenge = {"nonce": "00ff", "files": [{"owner": owner, "path": rel,
                                              "algorithm": "sha256", "ranges": [[0, 4]]}]}
    r = mallory.request(target, "POST", "/peer/challenge", raw_path=True, headers=JSON,
                        body=json.dumps(challenge))
    assert r.status == 200 and r.json()["files"][0]["refused"] == "not a holder", r
    r = verdict(False)
    assert (r.status, error_code(r)) == (403, "unsolicited_verdict"), r
    status = Api(cluster).request(target, "GET", "/status", raw_path=True).json()
    assert status["status"] == "running", status
    assert Api(cluster).follow(target, "GET", FILE)[1].body == BODY


def test_a_record_sent_with_a_copy_must_name_that_copy_and_come_from_its_coordinator(
        cluster, placed):
    """A small upload's record travels with its copy (``X-SecuriFile-Publish``); a holder may
    send a copy (a repair), but the record with it is checked as a push is, and must be
    of that very copy: else it is refused and nothing of it applied."""
    import hashlib
    holders, outsider = placed
    sender, target = holders
    before = record_on(cluster, target, outsider)
    owner, rel = FILE.split("/", 1)
    peer = as_node(cluster, sender)

    def copy_with(record):
        publish = json.dumps({"record": record, "token": "t", "seq": None})
        return peer.request(target, "PUT", f"/peer/replicas/{FILE}", raw_path=True, body=BODY,
                            headers={"X-SecuriFile-Version": str(before["version"]),
                                     "X-SecuriFile-Digest": hashlib.sha256(BODY).hexdigest(),
                                     "Content-Length": str(len(BODY)),
                                     "X-SecuriFile-Publish": publish})

    for wrong in (dict(before, path=rel + ".other"), dict(before, version=before["version"] + 1),
                  dict(before, digest="0" * 64), dict(before, deleted=True)):
        r = copy_with(dict(wrong, stamp=before["stamp"] + 5, coordinator=sender))
        assert (r.status, error_code(r)) == (400, "bad_record"), (wrong, r)
    r = copy_with(dict(before, stamp=before["stamp"] + 5, coordinator=outsider))
    assert (r.status, error_code(r)) == (403, "not_the_coordinator"), r
    assert record_on(cluster, target, outsider) == before
    assert disk_copy(cluster, target, owner, rel).read_bytes() == BODY
    assert Api(cluster).follow(target, "GET", FILE)[1].body == BODY


def test_the_channel_checks_what_the_http_route_checks(cluster, placed):
    """Locks and records go over the kept channel (``/peer/channel``): a forged record sent
    there by a node certificate is refused as on ``/peer/locations``, and a user's
    certificate opens no channel at all."""
    holders, outsider = placed
    target = holders[1]
    before = record_on(cluster, target, outsider)
    forged = dict(before, deleted=True, version=before["version"] + 1,
                  stamp=before["stamp"] + 100)
    layout = cluster.layout

    async def scenario():
        mallory = peer_client_of(cluster, outsider)
        try:
            with pytest.raises(PeerError) as refused:
                await mallory.call_op(cluster.url(target), "locations", {"records": [forged]})
            assert mallory.connections_created == 1  # the channel, not a fallback
        finally:
            await mallory.close()
        user = client_context(layout.ca_cert, layout.user_cert("alice"),
                              layout.user_key("alice"))
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as no_channel:
                async with session.ws_connect(cluster.url(target) + "/peer/channel", ssl=user):
                    pass
        return refused.value, no_channel.value

    refused, no_channel = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert (refused.status, refused.body["error"]["code"]) == (403, "not_the_coordinator")
    assert no_channel.status == 403
    assert record_on(cluster, target, outsider) == before
    owner, rel = FILE.split("/", 1)
    assert disk_copy(cluster, target, owner, rel).read_bytes() == BODY


def test_writes_go_over_the_kept_channels(cluster, placed):
    """Every small upload's lock and copy-with-record (or record) messages go over the
    coordinator's two kept channels: four calls per upload here, and new connections well
    under the issue's 0.05 per upload in steady state (the count takes in the admin server's
    too: a report meeting a membership poll, or a heartbeat meeting a pull of records on the
    same peer, may open a second connection now and then)."""
    api = Api(cluster)
    # A channel opens on an idle kept connection (the upgrade needs one of its own), so the
    # heartbeat that used it opens another: once, after the channels first open. Steady
    # state is when a heartbeat round to both peers has run since.
    warm = api.status("node1")["peer_client"]
    wait_for(lambda: api.status("node1")["peer_client"]["requests"] >= warm["requests"] + 4,
             what="a heartbeat round after the channels opened")
    before = api.status("node1")["peer_client"]
    for i in range(40):
        r = api.put("node1", f"alice/peer-check/many/{i}.txt", b"small %d" % i)
        assert r.status == 201, r
    after = api.status("node1")["peer_client"]
    assert after["channel_calls"] - before["channel_calls"] >= 160, (before, after)
    assert after["connections_created"] - before["connections_created"] <= 1, (before, after)


def test_a_small_curl_upload_asking_100_continue_takes_the_one_round_path(cluster, placed,
                                                                           tmp_path):
    """curl 7 asks ``Expect: 100-continue`` for any upload over 1 KiB. A small body is still
    taken while the lock round runs, and reaches the replica with its record over the kept
    channel: no HTTP copy after the round (the way such uploads went before, at 0.8x the
    rate of the same uploads without the header)."""
    layout = cluster.layout
    src = tmp_path / "four.bin"
    src.write_bytes(b"k" * 4096)
    copies_before = http_copies(cluster)
    for i in range(5):
        out = subprocess.run(
            ["curl", "-sS", "-v", "--fail-with-body", "--cacert", str(layout.ca_cert),
             "--cert", str(layout.user_cert("alice")), "--key", str(layout.user_key("alice")),
             "-T", str(src), cluster.url("node1") + f"/files/alice/peer-check/expect/{i}.bin"],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "Expect: 100-continue" in out.stderr  # curl asked, as it does by default
        assert json.loads(out.stdout)["version"] == 1
    assert http_copies(cluster) == copies_before


def http_copies(cluster):
    """PUTs to /peer/replicas answered by all the nodes (copies sent over HTTP)."""
    token = AdminApi(cluster).token
    total = 0
    for node in ("node1", "node2", "node3"):
        status, _ctype, body = scrape(cluster, node, token=token)
        assert status == 200, body
        total += sum(v for (name, labels), v in samples(body).items()
                     if name == "securifile_http_requests_total"
                     and dict(labels).get("route") == "/peer/replicas/(.+)"
                     and dict(labels).get("method") == "PUT")
    return total


def test_a_node_answers_a_peer_its_record_of_one_file_and_nobody_else(cluster, placed):
    """What a node that doubts its own record asks (``nodes/doubted_reads.py``): over the
    kept channel and over HTTP the same record a pull brings; a user's certificate gets
    nothing, a bad name a 400."""
    holders, outsider = placed
    target = holders[0]
    expected = record_on(cluster, target, outsider)
    owner, rel = FILE.split("/", 1)
    r = as_node(cluster, outsider).request(target, "POST", "/peer/record", raw_path=True,
                                           headers=JSON,
                                           body=json.dumps({"owner": owner, "path": rel}))
    assert r.status == 200 and r.json()["record"] == expected, r
    r = as_node(cluster, outsider).request(target, "POST", "/peer/record", raw_path=True,
                                           headers=JSON, body=json.dumps(
                                               {"owner": owner, "path": "no/such.txt"}))
    assert r.status == 200 and r.json() == {"record": None}, r
    r = as_node(cluster, outsider).request(target, "POST", "/peer/record", raw_path=True,
                                           headers=JSON, body=json.dumps(
                                               {"owner": owner, "path": "../bob/x"}))
    assert r.status == 400, r
    r = Api(cluster).request(target, "POST", "/peer/record", raw_path=True, headers=JSON,
                             body=json.dumps({"owner": owner, "path": rel}))
    assert r.status in (401, 403), r

    async def over_the_channel():
        client = peer_client_of(cluster, outsider)
        try:
            record = await client.record_of(cluster.url(target), FilePath(owner, rel))
            assert client.channel_calls == 1
            return record
        finally:
            await client.close()
    assert asyncio.run(over_the_channel()) == expected
