"""Unit tests of the client library and the CLI: no cluster.

Transfers and failover run against a scripted transport (canned HTTP responses, parsed by
``http.client``) and, for the socket-level mechanics of redirects, ``100 Continue`` and
failover, against tiny plain-HTTP servers on loopback. Chunks are a few bytes so the
streaming loops really loop.
"""
import base64
import hashlib
import http.client
import http.server
import io
import json
import socket
import sys
import threading
import types
from pathlib import Path

import pytest

from securifile.cli import main as cli
from securifile.client.errors import (
    BadRequest, DigestMismatch, FileLocked, FileNotFound, HolderUnreachable, NoHolderAvailable,
    NoServerAvailable, NoServerServing, PathConflict, ProtocolError, RedirectRefused,
    STATUS_ERRORS, ServerError, TooManyRedirects, TransferCancelled, Unreachable,
)
from securifile.client.files import (
    AtomicFile, file_url_path, folder_url_path, plan_download, plan_upload,
)
from securifile.client.plans import PARALLEL
from securifile.client.servers import ServerSelector, holder_named, server_origin, with_avoid
from securifile.client.settings import ClientSettings
from securifile.client.storage import Client
from securifile.client.transport import EXPECT_CONTINUE_MIN, Response
from securifile.common.digests import parse_digest_field, repr_digest

from .fakes import Clock

A, B, C = "https://a.test:8441", "https://b.test:8442", "https://c.test:8443"


def sha256_b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# --- URLs, digests, allowlist -------------------------------------------------------------

def test_file_paths_are_percent_encoded_segment_by_segment():
    assert file_url_path("alice/a b/ü?#%.txt") == "/files/alice/a%20b/%C3%BC%3F%23%25.txt"
    assert file_url_path("alice/docs/report.pdf") == "/files/alice/docs/report.pdf"


def test_folder_paths_always_end_with_a_slash():
    assert folder_url_path("alice") == "/files/alice/"
    assert folder_url_path("alice/") == "/files/alice/"
    assert folder_url_path("alice/my dir") == "/files/alice/my%20dir/"
    assert folder_url_path("alice/my dir/") == "/files/alice/my%20dir/"


@pytest.mark.parametrize("bad", ["alice/../x", "/alice/x", "alice//x", "alice/x/", "alice",
                                 "Alice/x", "alice/a\\b", "alice/tab\there"])
def test_bad_remote_names_are_refused_before_anything_is_sent(bad):
    with pytest.raises(BadRequest) as err:
        file_url_path(bad)
    assert err.value.status == 400
    assert err.value.code in ("invalid_path", "invalid_username")


def test_content_digest_is_rfc9530_base64_of_the_raw_digest():
    hexdigest = hashlib.sha256(b"hello").hexdigest()
    assert repr_digest("sha256", hexdigest) == "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:"
    assert repr_digest("sha512", hashlib.sha512(b"").hexdigest()).startswith("sha-512=:z4PhNX7v")


def test_digest_fields_parse_known_members_and_skip_the_rest():
    h256 = hashlib.sha256(b"x").hexdigest()
    h1 = hashlib.sha1(b"x").hexdigest()
    value = (f"unixsum=:AAA=:, sha=:{base64.b64encode(bytes.fromhex(h1)).decode()}:, "
             f"sha-256=:{base64.b64encode(bytes.fromhex(h256)).decode()}:;param=1, sha-512=:!!:")
    assert parse_digest_field(value) == {"sha1": h1, "sha256": h256}
    assert parse_digest_field(None) == {}
    assert parse_digest_field("sha-256=abc") == {}


def test_server_origin_fills_default_ports_and_lowercases():
    assert server_origin("HTTPS://Node1.Example:443/x") == ("https", "node1.example", 443)
    assert server_origin("http://127.0.0.1/files/a") == ("http", "127.0.0.1", 80)


@pytest.mark.parametrize("location, known", [
    ("https://a.test:8441/files/alice/x", True),
    ("https://B.TEST:8442/files/alice/x?y=1", True),
    ("https://a.test:8442/files/alice/x", False),      # host of one, port of another
    ("http://a.test:8441/files/alice/x", False),       # downgrade to plain HTTP
    ("https://evil.test:8441/files/alice/x", False),
    ("https://a.test:8441@evil.test/files/x", False),  # userinfo trick
    ("https://a.test/files/x", False),                 # default port 443 is not listed
])
def test_redirect_allowlist(location, known):
    assert ServerSelector([A, B]).is_known(location) is known


# --- server selection -------------------------------------------------------------------

class FixedRng:
    def __init__(self, value):
        self.value = value

    def randrange(self, n):
        return self.value % n


def test_selector_starts_at_a_random_server_and_stays_there():
    assert ServerSelector([A, B, C], rng=FixedRng(1)).current() == B
    sel = ServerSelector([A, B, C], rng=FixedRng(2))
    assert [sel.current() for _ in range(3)] == [C, C, C]


def test_selector_moves_to_the_next_server_and_wraps_around():
    sel = ServerSelector([A, B, C], rng=FixedRng(1))
    sel.failed(B)
    assert sel.current() == C
    sel.failed(C)
    assert sel.current() == A
    sel.failed(A)  # everyone failed: keep rotating rather than give up
    assert sel.current() in (A, B, C)


def test_selector_skips_suspects_until_they_expire():
    clock = Clock()
    sel = ServerSelector([A, B, C], rng=FixedRng(0), clock=clock, suspect_seconds=30)
    sel.failed(B + "/files/alice/x")  # a redirect target, not the current server
    assert sel.current() == A
    sel.failed(A)
    assert sel.current() == C
    assert sel.current(exclude={C}) == A  # every other one is suspect: try them anyway
    clock.now += 31
    assert sel.current() == C
    assert sel.current(exclude={C}) == A
    assert sel.current(exclude={A, B, C}) is None


def test_selector_lanes_spread_threads_over_the_servers_and_skip_suspects():
    sel = ServerSelector([A, B, C], rng=FixedRng(1))
    seen = {}

    def in_lane(lane):
        sel.set_lane(lane)
        seen[lane] = sel.current()
        if lane == 2:
            sel.failed(A)  # this lane's server does not answer: it goes on to the next
            seen["after"] = sel.current()

    for lane in range(4):
        thread = threading.Thread(target=in_lane, args=(lane,))
        thread.start()
        thread.join()
    assert seen == {0: B, 1: C, 2: A, 3: B, "after": B}
    assert sel.current() == B  # a thread without a lane: the current server, as before


def test_selector_answered_clears_suspicion_and_set_servers_keeps_current():
    sel = ServerSelector([A, B], rng=FixedRng(1))
    sel.failed(B)
    assert sel.current() == A
    sel.answered(B)
    assert sel.current(exclude={A}) == B
    sel.set_servers([C, A])
    assert sel.current() == A
    with pytest.raises(ValueError):
        ServerSelector([])
    with pytest.raises(ValueError):
        ServerSelector(["ftp://x"])


# --- a scripted transport: canned responses through the real request logic -------------

def http_response(status, body=b"", headers=None, reason="X", length=None):
    head = {"Content-Length": str(len(body) if length is None else length)}
    head.update(headers or {})
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_error(status, code, message):
    return http_response(status, json.dumps({"error": {"code": code, "message": message}}).encode(),
                         {"Content-Type": "application/json"})


def redirect(location):
    return http_response(307, headers={"Location": location})


class _BytesSocket:
    def __init__(self, data):
        self.data = data

    def makefile(self, mode, *a, **k):
        return io.BufferedReader(io.BytesIO(self.data))


class _Sink:
    def __init__(self):
        self.buf = bytearray()

    def send(self, data):
        self.buf += data

    def close(self):
        pass


class Down(Exception):
    """Scripted: this server does not answer."""


class ScriptedClient(Client):
    """A Client whose wire is a script: ``responder(method, url, headers) -> bytes``."""

    def __init__(self, servers, responder, **kwargs):
        kwargs.setdefault("rng", FixedRng(0))
        kwargs.setdefault("sleep", self._record_sleep)
        kwargs.setdefault("chunk_size", 5)
        super().__init__(servers, **kwargs)
        self.responder = responder
        self.sent = []
        self.sleeps = []

    def _record_sleep(self, seconds):
        self.sleeps.append(seconds)

    def _exchange(self, method, url, headers, body):
        sink = _Sink()
        if body is not None:
            body.send(sink)
        self.sent.append((method, url, dict(headers), bytes(sink.buf)))
        answer = self.responder(method, url, headers)
        if isinstance(answer, BaseException):
            raise Unreachable(url, answer)
        raw = http.client.HTTPResponse(_BytesSocket(answer), method=method)
        raw.begin()
        return Response(self, server_origin(url), _Sink(), raw, url, reusable=False)


def serve(routes):
    """A responder from {url: [answers...]} (the last answer repeats)."""
    def respond(method, url, headers):
        answers = routes[url.split("?")[0]]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(method, url, headers) if callable(answer) else answer
    return respond


def file_answer(data, version=1, extra=None):
    headers = {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:", "ETag": '"e1"',
               "X-SecuriFile-Version": str(version)}
    headers.update(extra or {})
    return http_response(200, data, headers)


X = "/files/alice/x.bin"


def test_follows_307_to_a_known_server_with_the_credentials():
    data = b"0123456789abcdef"
    client = ScriptedClient([A, B], serve({A + X: [redirect(B + X)], B + X: [file_answer(data)]}),
                            token="T0K")
    assert client.get_bytes("alice/x.bin") == data
    (m1, u1, h1, _), (m2, u2, h2, _) = client.sent
    assert (u1, u2) == (A + X, B + X)
    assert h1["Authorization"] == h2["Authorization"] == "Bearer T0K"


def test_refuses_a_redirect_to_an_unknown_server():
    client = ScriptedClient([A, B], serve({A + X: [redirect("https://evil.test:8441" + X)]}),
                            token="T0K")
    with pytest.raises(RedirectRefused):
        client.get_bytes("alice/x.bin")
    assert [u for _, u, _, _ in client.sent] == [A + X]


def test_redirect_loops_are_bounded():
    client = ScriptedClient([A, B], serve({A + X: [redirect(B + X)], B + X: [redirect(A + X)]}),
                            max_redirects=3)
    with pytest.raises(TooManyRedirects):
        client.stat("alice/x.bin")
    assert len(client.sent) == 4


def test_a_server_that_does_not_answer_is_left_for_the_next():
    data = b"payload"
    client = ScriptedClient([A, B, C], serve({
        A + X: [Down(ConnectionRefusedError())], B + X: [file_answer(data)]}))
    assert client.get_bytes("alice/x.bin") == data
    assert client.current_server == B
    client.get_bytes("alice/x.bin")  # stays with B
    assert [u for _, u, _, _ in client.sent] == [A + X, B + X, B + X]


def test_no_server_answering_names_every_server():
    client = ScriptedClient([A, B], lambda m, u, h: ConnectionRefusedError("refused"))
    with pytest.raises(NoServerAvailable) as err:
        client.list("alice")
    assert [url for url, _ in err.value.failures] == [A, B]
    assert "refused" in str(err.value)


def test_unreachable_holder_is_retried_until_the_cluster_names_the_next():
    data = b"replica bytes"
    client = ScriptedClient([A, B, C], serve({
        A + X: [redirect(B + X), redirect(B + X), redirect(C + X)],  # B is origin, C priority 1
        B + X: [Down(ConnectionRefusedError())],
        C + X: [file_answer(data)],
    }))
    assert client.get_bytes("alice/x.bin") == data
    assert client.sleeps == [0.25, 0.5]
    assert client.current_server == A  # the entry server was fine all along
    assert [u for _, u, _, _ in client.sent] == [A + X, B + X, A + X, B + X, A + X, C + X]


def test_holder_retries_are_bounded_by_count_and_deadline():
    routes = {A + X: [redirect(B + X)], B + X: [Down(ConnectionResetError())]}
    client = ScriptedClient([A, B], serve(routes), holder_retries=3)
    with pytest.raises(HolderUnreachable) as err:
        client.get_bytes("alice/x.bin")
    assert err.value.attempts == 4 and len(client.sleeps) == 3

    clock = Clock()

    def sleep(seconds):
        clock.now += seconds

    client = ScriptedClient([A, B], serve(routes), holder_retries=100, holder_deadline=2.0,
                            clock=clock, sleep=sleep)
    with pytest.raises(HolderUnreachable):
        client.get_bytes("alice/x.bin")
    assert clock.now - 1000.0 <= 2.0


# --- servers that do not serve now, holders to avoid ------------------------------------

def by_full_url(routes):
    """A responder from {url with query: [answers...]} (the last answer repeats)."""
    def respond(method, url, headers):
        answers = routes[url]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(method, url, headers) if callable(answer) else answer
    return respond


def not_serving(code):
    return json_error(503, code, f"this server does not serve now ({code})")


@pytest.mark.parametrize("code", ["server_not_running", "no_quorum", "not_synced"])
def test_a_server_that_says_it_does_not_serve_is_left_for_the_next(code):
    data = b"from B"
    client = ScriptedClient([A, B, C], serve({A + X: [not_serving(code)], B + X: [file_answer(data)]}),
                            token="T0K")
    assert client.get_bytes("alice/x.bin") == data
    assert client.current_server == B and client.sleeps == []
    client.stat("alice/x.bin")  # stays with B
    assert [u for _, u, _, _ in client.sent] == [A + X, B + X, B + X]


def test_a_head_answer_carries_the_code_in_a_header():
    gone = http_response(503, headers={"X-SecuriFile-Error": "server_not_running"}, length=0)
    client = ScriptedClient([A, B], serve({A + X: [gone], B + X: [file_answer(b"abc")]}))
    assert client.stat("alice/x.bin")["size"] == 3
    assert client.current_server == B


def test_no_holder_running_is_about_the_file_and_answers_at_once():
    client = ScriptedClient([A, B], serve({
        A + X: [json_error(503, "no_holder_running", "no server holding alice/x.bin is running")],
        B + X: [file_answer(b"never asked")]}))
    with pytest.raises(NoHolderAvailable) as err:
        client.get_bytes("alice/x.bin")
    assert err.value.code == "no_holder_running"
    assert [u for _, u, _, _ in client.sent] == [A + X] and client.sleeps == []


def test_an_unreachable_holder_is_named_in_avoid_and_the_next_one_serves_at_once():
    data = b"replica bytes"
    client = ScriptedClient([A, B, C], by_full_url({
        A + X: [redirect(B + X + "?holder=b")],  # B is the origin, C priority 1
        B + X + "?holder=b": [Down(ConnectionRefusedError())],
        A + X + "?avoid=b": [redirect(C + X + "?holder=c")],
        C + X + "?holder=c": [file_answer(data)],
    }), token="T0K")
    assert client.get_bytes("alice/x.bin") == data
    assert client.sleeps == [] and client.current_server == A
    assert [u for _, u, _, _ in client.sent] == [
        A + X, B + X + "?holder=b", A + X + "?avoid=b", C + X + "?holder=c"]
    assert all(h["Authorization"] == "Bearer T0K" for _, _, h, _ in client.sent)


def test_a_holder_that_does_not_serve_is_avoided_too_and_avoids_add_up():
    data = b"third holder"
    client = ScriptedClient([A, B, C], by_full_url({
        A + X: [redirect(B + X + "?holder=b")],
        B + X + "?holder=b": [not_serving("server_not_running")],
        A + X + "?avoid=b": [redirect(C + X + "?holder=c")],
        C + X + "?holder=c": [Down(ConnectionResetError())],
        A + X + "?avoid=b,c": [file_answer(data)],
    }))
    assert client.get_bytes("alice/x.bin") == data
    assert client.sleeps == [] and client.current_server == A


def test_a_redirect_without_avoid_support_falls_back_to_asking_again():
    """An older node names the dead holder again, avoid or not: wait for the cluster."""
    data = b"bytes"
    answers = [redirect(B + X + "?holder=b")] * 2 + [redirect(C + X + "?holder=c")]
    client = ScriptedClient([A, B, C], serve({
        A + X: [lambda m, u, h: answers.pop(0)],
        B + X: [Down(ConnectionRefusedError())],
        C + X: [file_answer(data)],
    }))
    assert client.get_bytes("alice/x.bin") == data
    assert client.sleeps == [0.25]
    assert [u for _, u, _, _ in client.sent] == [
        A + X, B + X + "?holder=b", A + X + "?avoid=b", B + X + "?holder=b", A + X + "?avoid=b",
        C + X + "?holder=c"]


def waiting_client(routes, **kwargs):
    clock = Clock()

    def sleep(seconds):
        clock.now += seconds

    client = ScriptedClient([A, B], routes, clock=clock, sleep=sleep, **kwargs)
    return client, clock


def test_when_no_server_serves_the_client_asks_again_with_growing_pauses():
    data = b"after the restart"
    rounds = {"n": 0}

    def entry(method, url, headers):
        rounds["n"] += 1
        return not_serving("not_synced") if rounds["n"] < 3 else file_answer(data)

    client, clock = waiting_client(serve({A + X: [entry], B + X: [not_serving("server_not_running")]}))
    assert client.get_bytes("alice/x.bin") == data
    assert clock.now - 1000.0 == pytest.approx(0.25 + 0.5)


def test_when_no_server_serves_for_long_the_client_gives_up_with_a_clear_error():
    client, clock = waiting_client(serve({A + X: [not_serving("no_quorum")],
                                          B + X: [Down(ConnectionRefusedError("refused"))]}),
                                   unavailable_wait=5.0)
    with pytest.raises(NoServerServing) as err:
        client.get_bytes("alice/x.bin")
    assert isinstance(err.value, NoServerAvailable)
    assert 3.0 < clock.now - 1000.0 <= 5.0
    assert "no server is serving now" in str(err.value) and "no_quorum" in str(err.value)
    assert {url for url, _ in err.value.failures} == {A, B}


def test_servers_that_do_not_answer_at_all_fail_at_once():
    client, clock = waiting_client(lambda m, u, h: ConnectionRefusedError("refused"))
    with pytest.raises(NoServerAvailable) as err:
        client.get_bytes("alice/x.bin")
    assert not isinstance(err.value, NoServerServing) and clock.now == 1000.0


def test_a_file_served_again_soon_is_asked_for_again():
    """No holder runs, but one is being verified: the node says ``Retry-After``."""
    soon = http_response(503, json.dumps({"error": {
        "code": "no_holder_running", "message": "no server holding alice/x.bin is running"}}).encode(),
        {"Retry-After": "1", "Content-Type": "application/json"})
    data = b"verified"
    client, clock = waiting_client(serve({A + X: [soon, soon, file_answer(data)]}))
    assert client.get_bytes("alice/x.bin") == data
    assert clock.now - 1000.0 == pytest.approx(0.25 + 0.5)

    client, clock = waiting_client(serve({A + X: [soon]}), unavailable_wait=3.0)
    with pytest.raises(NoHolderAvailable) as err:
        client.get_bytes("alice/x.bin")
    assert err.value.code == "no_holder_running" and clock.now - 1000.0 <= 3.0


def test_avoid_and_holder_helpers():
    assert with_avoid(X, []) == X
    assert with_avoid(X, ["node1", "node 2"]) == X + "?avoid=node1,node%202"
    assert with_avoid(X + "?a=1", ["n"]) == X + "?a=1&avoid=n"
    assert holder_named(B + X + "?holder=node2") == "node2"
    assert holder_named(B + X) is None


def test_server_errors_carry_the_json_error():
    client = ScriptedClient([A], serve({A + X: [json_error(423, "locked", "alice/x.bin is being modified")]}))
    with pytest.raises(FileLocked) as err:
        client.get_bytes("alice/x.bin")
    assert (err.value.status, err.value.code, err.value.message) == (
        423, "locked", "alice/x.bin is being modified")
    assert err.value.url == A + X

    client = ScriptedClient([A], serve({A + X: [json_error(503, "unavailable", "no holder of alice/x.bin")]}))
    with pytest.raises(NoHolderAvailable) as err:
        client.get_bytes("alice/x.bin")
    assert err.value.code == "unavailable" and "alice/x.bin" in err.value.message


def test_each_error_status_has_its_exception():
    client = ScriptedClient([A], serve({A + X: [json_error(409, "is_a_folder", "alice/x.bin is a folder")]}))
    with pytest.raises(PathConflict) as err:
        client.put_bytes(b"1", "alice/x.bin")
    assert err.value.code == "is_a_folder"
    for status, cls in STATUS_ERRORS.items():
        assert issubclass(cls, ServerError)
        client = ScriptedClient([A], serve({A + X: [json_error(status, "c", "m")]}))
        with pytest.raises(cls):
            client.get_bytes("alice/x.bin")


def test_errors_without_json_still_say_what_failed():
    client = ScriptedClient([A], serve({A + X: [http_response(404, reason="Not Found")]}))
    with pytest.raises(FileNotFound) as err:
        client.stat("alice/x.bin")
    assert err.value.code == "not_found" and "alice/x.bin" in err.value.message

    client = ScriptedClient([A], serve({A + X: [http_response(500, b"boom", reason="Oops")]}))
    with pytest.raises(ServerError) as err:
        client.get_bytes("alice/x.bin")
    assert err.value.status == 500 and err.value.message == "alice/x.bin: boom"


def test_upload_sends_length_digest_and_the_bytes(tmp_path):
    data = bytes(range(256)) * 3
    local = tmp_path / "f.bin"
    local.write_bytes(data)
    record = {"owner": "alice", "path": "x.bin", "size": len(data), "algorithm": "sha256",
              "digest": hashlib.sha256(data).hexdigest(), "version": 1}
    client = ScriptedClient([A], serve({A + X: [http_response(201, json.dumps(record).encode())]}))
    seen = []
    assert client.put(local, "alice/x.bin", progress=lambda d, t: seen.append((d, t))) == record
    method, url, headers, body = client.sent[0]
    assert method == "PUT" and body == data
    assert headers["Content-Digest"] == f"sha-256=:{sha256_b64(data)}:"
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_upload_refuses_a_record_with_another_digest(tmp_path):
    record = {"algorithm": "sha256", "digest": "00" * 32}
    client = ScriptedClient([A], serve({A + X: [http_response(201, json.dumps(record).encode())]}))
    with pytest.raises(DigestMismatch):
        client.put_bytes(b"data", "alice/x.bin")


def test_upload_can_be_cancelled(tmp_path):
    local = tmp_path / "f.bin"
    local.write_bytes(b"x" * 100)
    calls = []
    client = ScriptedClient([A], serve({A + X: [http_response(201, b"{}")]}))
    with pytest.raises(TransferCancelled):
        client.put(local, "alice/x.bin", cancel=lambda: len(calls) > 3,
                   progress=lambda d, t: calls.append(d))


def test_download_writes_atomically_and_verifies(tmp_path):
    data = b"the quick brown fox" * 7
    client = ScriptedClient([A], serve({A + X: [file_answer(data, version=3)]}))
    target = tmp_path / "out.bin"
    seen = []
    info = client.get("alice/x.bin", target, progress=lambda d, t: seen.append((d, t)))
    assert target.read_bytes() == data
    assert info["verified"] and info["version"] == 3 and info["size"] == len(data)
    assert info["digest"] == hashlib.sha256(data).hexdigest()
    assert seen[-1] == (len(data), len(data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_download_with_the_wrong_digest_leaves_nothing(tmp_path):
    data = b"good bytes"
    bad = http_response(200, b"evil bytes", {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:"})
    client = ScriptedClient([A], serve({A + X: [bad]}))
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")
    with pytest.raises(DigestMismatch):
        client.get("alice/x.bin", target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_cancelled_download_leaves_nothing(tmp_path):
    client = ScriptedClient([A], serve({A + X: [file_answer(b"z" * 200)]}))
    flag = threading.Event()

    def progress(done, total):
        if done > 50:
            flag.set()

    with pytest.raises(TransferCancelled):
        client.get("alice/x.bin", tmp_path / "out.bin", progress=progress, cancel=flag)
    assert list(tmp_path.iterdir()) == []


def test_a_holder_dying_mid_download_is_resumed_with_range_from_the_next():
    data = bytes(range(200))
    head = {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:", "ETag": '"v1"'}
    truncated = http_response(200, data[:80], head, length=len(data))

    def resumed(method, url, headers):
        assert headers["Range"] == "bytes=80-" and headers["If-Range"] == '"v1"'
        return http_response(206, data[80:], {**head, "Content-Range": f"bytes 80-199/{len(data)}"})

    client = ScriptedClient([A, B], serve({
        A + X: [redirect(B + X), redirect(A + "/peer-holder" + X)],
        B + X: [truncated],
        A + "/peer-holder" + X: [resumed],
    }))
    assert client.get_bytes("alice/x.bin") == data


def test_a_broken_read_of_a_rotten_copy_is_read_again_whole_from_the_start():
    # The first holder's copy is rotten: it sends all but the last chunk and breaks off (the
    # node's check of the digest); the resumed rest comes from a good copy, but the prefix is
    # bad, so the client reads the whole file again once.
    data = bytes(range(200))
    rotten = bytes([data[0] ^ 1]) + data[1:80]
    head = {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:", "ETag": '"v1"'}
    client = ScriptedClient([A], serve({A + X: [
        http_response(200, rotten, head, length=len(data)),
        http_response(206, data[80:], {**head, "Content-Range": f"bytes 80-199/{len(data)}"}),
        http_response(200, data, head)]}))
    assert client.get_bytes("alice/x.bin") == data
    assert [h.get("Range") for _m, _u, h, _b in client.sent] == [None, "bytes=80-", None]


def test_a_restart_without_range_support_starts_over():
    data = b"abcdefghij" * 10
    head = {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:"}
    client = ScriptedClient([A], serve({A + X: [http_response(200, data[:30], head, length=100),
                                                http_response(200, data, head)]}))
    assert client.get_bytes("alice/x.bin") == data


def test_a_resume_at_the_wrong_offset_is_refused():
    data = b"abcdefghij" * 10
    head = {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:"}
    client = ScriptedClient([A], serve({A + X: [
        http_response(200, data[:30], head, length=100),
        http_response(206, data[10:], {**head, "Content-Range": "bytes 10-99/100"})]}))
    with pytest.raises(ProtocolError):
        client.get_bytes("alice/x.bin")


def test_stat_and_list_decode_the_servers_answers():
    data = b"12345"
    listing = {"files": [{"owner": "alice", "path": "d/x", "size": 5}]}
    client = ScriptedClient([A], serve({
        A + X: [file_answer(data, version=4)],
        A + "/files/alice/d/": [http_response(200, json.dumps(listing).encode())],
    }))
    st = client.stat("alice/x.bin")
    assert (st["size"], st["version"], st["algorithm"], st["server"]) == (5, 4, "sha256", A)
    assert st["digest"] == hashlib.sha256(data).hexdigest()
    assert client.list("alice/d") == listing["files"]
    assert client.sent[0][0] == "HEAD"


# --- local planning and atomic files ----------------------------------------------------

def test_plan_upload_of_a_file(tmp_path):
    f = tmp_path / "report.pdf"
    f.write_bytes(b"123")
    assert plan_upload(f, "alice/docs/r.pdf") == [(f, "alice/docs/r.pdf", 3)]
    assert plan_upload(f, "alice/docs/") == [(f, "alice/docs/report.pdf", 3)]
    assert plan_upload(f, "alice") == [(f, "alice/report.pdf", 3)]


def test_plan_upload_of_a_folder_keeps_the_layout(tmp_path):
    (tmp_path / "d" / "sub dir" / "ü").mkdir(parents=True)
    (tmp_path / "d" / "empty").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"a")
    (tmp_path / "d" / "sub dir" / "ü" / "c.txt").write_bytes(b"cc")
    plan = plan_upload(tmp_path / "d", "alice/up/")
    assert [(r, s) for _, r, s in plan] == [("alice/up/a.txt", 1), ("alice/up/sub dir/ü/c.txt", 2)]
    assert plan_upload(tmp_path / "d", "alice/up")[0][1] == "alice/up/a.txt"


def test_plan_upload_checks_every_name_before_sending(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ok.txt").write_bytes(b"")
    (tmp_path / "d" / "bad\\name").write_bytes(b"")
    with pytest.raises(BadRequest):
        plan_upload(tmp_path / "d", "alice/up")


def test_plan_download_maps_the_listing_and_refuses_escapes(tmp_path):
    files = [{"owner": "alice", "path": "d/b/c.txt", "size": 2},
             {"owner": "alice", "path": "d/a.txt", "size": 1}]
    assert plan_download(files, "alice/d/", tmp_path) == [
        ("alice/d/a.txt", tmp_path / "a.txt", 1), ("alice/d/b/c.txt", tmp_path / "b" / "c.txt", 2)]
    with pytest.raises(BadRequest):
        plan_download([{"owner": "alice", "path": "d/../../etc/passwd"}], "alice/d", tmp_path)
    with pytest.raises(ProtocolError):
        plan_download([{"owner": "alice", "path": "other/x"}], "alice/d", tmp_path)


def test_atomic_file_replaces_on_commit_and_vanishes_otherwise(tmp_path):
    target = tmp_path / "t"
    target.write_bytes(b"old")
    with AtomicFile(target) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"
        f.commit()
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError):
        with AtomicFile(target) as f:
            f.write(b"half")
            raise RuntimeError
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_cluster_file_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "alice.token").write_text("tok123\n")
    (tmp_path / "cluster.json").write_text(json.dumps({
        "tls": True, "ca_cert": "certs/ca.crt", "replicas": 1,
        "admin": {"url": "https://127.0.0.1:8440", "pid": 2},
        "servers": [{"name": "node1", "url": "https://127.0.0.1:8441", "pid": 1}],
        "user": {"username": "alice", "cert": "/abs/alice.crt", "key": "k.pem",
                 "token_file": "credentials/alice.token"}}))
    s = ClientSettings.from_cluster_file(tmp_path / "cluster.json")
    assert s.servers == ["https://127.0.0.1:8441"]
    assert s.ca == str(tmp_path / "certs" / "ca.crt")
    assert (s.cert, s.key) == ("/abs/alice.crt", str(tmp_path / "k.pem"))
    assert (s.token, s.username, s.admin_url) == ("tok123", "alice", "https://127.0.0.1:8440")


# --- the command line -------------------------------------------------------------------

def test_connection_options_go_before_or_after_the_command():
    _, args = cli.parse_args(["--server", "https://a:1", "put", "f", "alice/f", "--server", "https://b:2"])
    assert args.command == "put" and args.server == ["https://b:2"]
    _, args = cli.parse_args(["--cluster", "c.json", "-q", "ls"])
    assert (args.cluster, args.quiet, args.prefix, args.timeout) == ("c.json", True, None, 60.0)
    _, args = cli.parse_args(["get", "alice/d/", "--no-progress", "--server", "https://a:1",
                              "--server", "https://b:2"])
    assert args.server == ["https://a:1", "https://b:2"] and args.progress is False
    assert args.local == "."
    _, args = cli.parse_args(["rm", "-r", "alice/d/"])
    assert args.recursive and args.server is None and args.wait == 15.0
    _, args = cli.parse_args(["ls", "--wait", "2.5"])
    assert args.wait == 2.5


def test_usage_errors_exit_2(capsys, monkeypatch):
    with pytest.raises(SystemExit) as err:
        cli.main(["put", "only-one"])
    assert err.value.code == 2
    monkeypatch.delenv("SECURIFILE_CLUSTER", raising=False)
    assert cli.main(["ls", "alice"]) == 2
    assert "no servers" in capsys.readouterr().err


def test_settings_come_from_the_cluster_file_then_env_then_flags(tmp_path):
    (tmp_path / "tok").write_text("from-file")
    (tmp_path / "cluster.json").write_text(json.dumps({
        "tls": True, "ca_cert": "ca.crt", "servers": [{"name": "n1", "url": "https://h:1"}],
        "user": {"username": "alice", "cert": "u.crt", "key": "u.key", "token_file": "tok"}}))
    _, args = cli.parse_args(["ls"])
    s = cli.load_settings(args, env={"SECURIFILE_CLUSTER": str(tmp_path / "cluster.json")})
    assert (s.servers, s.token, s.username) == (["https://h:1"], "from-file", "alice")
    (tmp_path / "tok2").write_text(" flag-token \n")
    _, args = cli.parse_args(["ls", "--cluster", str(tmp_path / "cluster.json"), "--server", "https://x:9",
                              "--token-file", str(tmp_path / "tok2"), "--cert", "c.pem"])
    s = cli.load_settings(args, env={"SECURIFILE_TOKEN": "env-token"})
    assert (s.servers, s.token, s.cert, s.key) == (["https://x:9"], "flag-token", "c.pem", "c.pem")
    _, args = cli.parse_args(["ls"])
    with pytest.raises(cli.UsageError):
        cli.load_settings(args, env={})


def test_up_hands_over_to_the_launcher(monkeypatch):
    seen = []
    fake = types.ModuleType("securifile.launcher.cluster")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "securifile.launcher.cluster", fake)
    import securifile.launcher
    monkeypatch.setattr(securifile.launcher, "cluster", fake, raising=False)
    assert cli.main(["up", "--servers", "3", "--replicas", "1"]) == 0
    assert seen == [["--servers", "3", "--replicas", "1"]]


class StubClient:
    """Records what the commands ask of the client."""

    def __init__(self, files=()):
        self.files = list(files)
        self.calls = []

    def list(self, prefix):
        self.calls.append(("list", prefix))
        return self.files

    def delete(self, remote):
        self.calls.append(("delete", remote))

    def delete_all(self, names, *, progress=None, cancel=None, on_file=None, parallel=1):
        self.calls.append(("delete_all", tuple(names), parallel))
        for name in names:
            on_file(name, None, None)

    def get_tree(self, remote, root, progress=None, on_file=None, cancel=None, parallel=1):
        self.calls.append(("get_tree", remote, Path(root), parallel))
        return []

    def get(self, remote, local, progress=None, cancel=None):
        self.calls.append(("get", remote, Path(local)))
        if remote.endswith("dir"):
            raise FileNotFound(404, "not_found", "no file")
        return {"size": 1, "version": 1, "algorithm": "sha256", "verified": True}


def run_command(argv, stub, settings=None):
    _, args = cli.parse_args(argv)
    out = io.StringIO()
    code = getattr(cli.Commands(stub, args, settings or ClientSettings(["https://h:1"]), out=out,
                                err=io.StringIO()), args.command)()
    return code, out.getvalue()


def test_rm_of_a_folder_needs_r():
    stub = StubClient([{"owner": "alice", "path": "d/a"}, {"owner": "alice", "path": "d/b"}])
    with pytest.raises(cli.UsageError):
        run_command(["rm", "alice/d/"], stub)
    code, out = run_command(["rm", "-r", "alice/d/", "-P", "2"], stub)
    assert code == 0 and out.splitlines() == ["deleted alice/d/a", "deleted alice/d/b"]
    assert stub.calls == [("list", "alice/d/"), ("delete_all", ("alice/d/a", "alice/d/b"), 2)]


def test_get_picks_file_or_folder(tmp_path):
    stub = StubClient([{"owner": "alice", "path": "dir/a"}])
    run_command(["get", "alice/docs/a.txt", str(tmp_path)], stub)
    assert stub.calls[-1] == ("get", "alice/docs/a.txt", tmp_path / "a.txt")
    run_command(["get", "alice/docs/", str(tmp_path / "d")], stub)
    assert stub.calls[-1] == ("get_tree", "alice/docs/", tmp_path / "d", PARALLEL)
    run_command(["get", "alice/dir", str(tmp_path / "new"), "--parallel", "1"], stub)  # a folder
    assert stub.calls[-1] == ("get_tree", "alice/dir/", tmp_path / "new", 1)


def test_ls_defaults_to_the_users_namespace():
    stub = StubClient([{"owner": "alice", "path": "a", "size": 2048, "version": 2,
                        "modified": 0, "origin": "node1", "replicas": [{"server": "node2", "priority": 1}]}])
    code, out = run_command(["ls", "-l"], stub, ClientSettings(["https://h:1"], username="alice"))
    assert code == 0 and stub.calls == [("list", "alice")]
    assert "2.0 KiB" in out and "alice/a" in out and "node2(1)" in out


def test_server_errors_exit_1_with_the_servers_message(capsys):
    assert cli.main(["--server", "http://127.0.0.1:9", "stat", "alice/x", "--timeout", "2"]) == 1
    assert "no server answered" in capsys.readouterr().err


# --- real sockets: plain HTTP on loopback, only for redirect and failover mechanics -----

class Node(http.server.ThreadingHTTPServer):
    """A tiny protocol peer: ``routes[(method, path)] = handler(request) -> (status, headers, body)``."""

    daemon_threads = True
    block_on_close = False  # clients keep connections alive; do not wait for them

    def __init__(self):
        super().__init__(("127.0.0.1", 0), NodeHandler)
        self.routes, self.seen, self.connections = {}, [], 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True).start()


class NodeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.connections += 1

    def handle_expect_100(self):
        route = self.server.routes.get((self.command, self.path))
        if route is not None and getattr(route, "before_body", False):
            self.server.seen.append((self.command, self.path, dict(self.headers), None))
            self._answer(*route(self))
            self.close_connection = True
            return False
        return super().handle_expect_100()

    def _dispatch(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        route = self.server.routes.get((self.command, self.path))
        if route is None:
            return self._answer(404, {}, b"")
        self._answer(*route(self, body) if getattr(route, "wants_body", False) else route(self))

    def _answer(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _dispatch


@pytest.fixture
def nodes():
    started = [Node() for _ in range(3)]
    yield started
    for n in started:
        n.shutdown()
        n.server_close()


def dead_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}"


def make_client(servers, start=0, **kwargs):
    return Client(servers, rng=FixedRng(start), chunk_size=4096, sleep=lambda s: None,
                  connect_timeout=2, timeout=5, **kwargs)


def serves(data):
    def route(req):
        return 200, {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:", "ETag": '"1"'}, data
    return route


def redirects_to(url):
    def route(req, *body):
        return 307, {"Location": url + req.path}, b""
    return route


def test_http_redirect_is_followed_with_the_token_and_connections_are_reused(nodes):
    a, b, _ = nodes
    data = b"hello over loopback" * 1000
    a.routes[("GET", X)] = redirects_to(b.url)
    b.routes[("GET", X)] = serves(data)
    client = make_client([a.url, b.url], token="secret")
    assert client.get_bytes("alice/x.bin") == data
    assert client.get_bytes("alice/x.bin") == data
    assert b.seen[0][2]["Authorization"] == "Bearer secret"
    assert (a.connections, b.connections) == (1, 1)  # keep-alive per server


def test_http_redirect_outside_the_list_is_not_followed(nodes):
    a, b, c = nodes
    a.routes[("GET", X)] = redirects_to(c.url)
    client = make_client([a.url, b.url], token="secret")
    with pytest.raises(RedirectRefused):
        client.get_bytes("alice/x.bin")
    assert c.seen == []


def test_http_failover_from_a_dead_server(nodes):
    a = nodes[0]
    a.routes[("GET", X)] = serves(b"data")
    client = make_client([dead_url(), a.url])
    assert client.get_bytes("alice/x.bin") == b"data"
    assert client.current_server == a.url


def test_http_dead_holder_then_next_holder(nodes):
    a, b, _ = nodes
    dead = dead_url()
    answers = [dead, dead, b.url]

    def entry(req):
        return 307, {"Location": answers.pop(0) + req.path}, b""

    a.routes[("GET", X)] = entry
    b.routes[("GET", X)] = serves(b"replica")
    client = make_client([a.url, b.url, dead])
    assert client.get_bytes("alice/x.bin") == b"replica"
    assert answers == [] and client.current_server == a.url


def test_http_dead_holder_is_avoided_without_waiting(nodes):
    a, b, _ = nodes
    dead = dead_url()
    a.routes[("GET", X)] = lambda req: (307, {"Location": f"{dead}{X}?holder=origin"}, b"")
    a.routes[("GET", X + "?avoid=origin")] = lambda req: (
        307, {"Location": f"{b.url}{X}?holder=replica"}, b"")
    b.routes[("GET", X + "?holder=replica")] = serves(b"replica")
    pauses = []
    client = Client([a.url, b.url, dead], rng=FixedRng(0), sleep=pauses.append, connect_timeout=2)
    assert client.get_bytes("alice/x.bin") == b"replica"
    assert pauses == [] and client.current_server == a.url


def test_http_server_not_running_is_left_for_the_next(nodes):
    a, b, _ = nodes
    a.routes[("GET", X)] = lambda req: (503, {"Content-Type": "application/json"}, json.dumps(
        {"error": {"code": "server_not_running", "message": "server node1 is verifying"}}).encode())
    b.routes[("GET", X)] = serves(b"from b")
    client = make_client([a.url, b.url])
    assert client.get_bytes("alice/x.bin") == b"from b"
    assert client.current_server == b.url


def test_http_large_put_is_redirected_before_the_body_is_sent(nodes, tmp_path):
    a, b, _ = nodes
    data = b"z" * (EXPECT_CONTINUE_MIN * 4)
    local = tmp_path / "big"
    local.write_bytes(data)
    early = redirects_to(b.url)
    early.before_body = True
    a.routes[("PUT", X)] = early

    def store(req, body):
        ok = req.headers["Content-Digest"] == f"sha-256=:{sha256_b64(body)}:"
        return (201 if ok else 400), {"Content-Type": "application/json"}, json.dumps(
            {"owner": "alice", "path": "x.bin", "size": len(body)}).encode()

    store.wants_body = True
    b.routes[("PUT", X)] = store
    client = make_client([a.url, b.url], token="t")
    assert client.put(local, "alice/x.bin")["size"] == len(data)
    assert a.seen[0][3] is None  # A never received the body
    assert b.seen[0][3] == data and b.seen[0][2]["Expect"] == "100-continue"


def test_http_503_is_a_typed_error(nodes):
    a = nodes[0]

    def gone(req):
        return 503, {"Content-Type": "application/json"}, json.dumps(
            {"error": {"code": "unavailable", "message": "no running server holds alice/x.bin"}}).encode()

    a.routes[("GET", X)] = gone
    with pytest.raises(NoHolderAvailable) as err:
        make_client([a.url]).get_bytes("alice/x.bin")
    assert err.value.status == 503 and "alice/x.bin" in err.value.message


def test_one_client_serves_many_threads(nodes):
    a = nodes[0]
    a.routes[("GET", X)] = serves(b"shared" * 100)
    client = make_client([a.url])
    results, errors = [], []

    def worker():
        try:
            for _ in range(5):
                results.append(client.get_bytes("alice/x.bin"))
        except Exception as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [b"shared" * 100] * 30
