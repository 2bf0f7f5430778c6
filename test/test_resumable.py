"""Probe tests of resumable uploads (draft-ietf-httpbis-resumable-upload) on real processes:
connections broken mid-body, a node restarted between parts, a second writer meanwhile,
another user, the sweep of expired uploads, whole-file digests; the bytes checked on disk
on every holder."""
import base64
import json
import hashlib
import os
import socket
from urllib.parse import quote, urlsplit

import pytest

from .helpers import AdminApi, Api, disk_copy, wait_for
from .test_faults import VERIFY, settled, view


def sha(data):
    return hashlib.sha256(data).hexdigest()


def digest_field(token, data, algorithm="sha256"):
    return f"{token}=:{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}:"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from .clusters import start_cluster
    from .test_faults import BEATS
    c = start_cluster(tmp_path_factory, "resumable", servers=3, replicas=1, **BEATS)
    try:
        wait_for(lambda: all(view(c, o, p) == "running" for o in c.names for p in c.names),
                 VERIFY, what="every node to see every node running")
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def api(cluster):
    return Api(cluster)


def create(api, node, path, length=None, headers=None, body=b"", complete=False):
    h = {"Upload-Complete": "?1" if complete else "?0", **(headers or {})}
    if length is not None:
        h["Upload-Length"] = str(length)
    return api.request(node, "POST", "/uploads/" + quote(path, safe="/"), body=body,
                       headers=h, raw_path=True)


def upload_path(r):
    assert r.status == 201, r
    return urlsplit(r.headers["Location"]).path


def append(api, node, where, offset, data, complete, headers=None):
    h = {"Upload-Offset": str(offset), "Upload-Complete": "?1" if complete else "?0",
         "Content-Type": "application/partial-upload", **(headers or {})}
    return api.request(node, "PATCH", where, body=data, headers=h, raw_path=True)


def offset_of(api, node, where):
    r = api.request(node, "HEAD", where, raw_path=True)
    assert r.status == 204, r
    assert r.headers["Cache-Control"] == "no-store"
    return int(r.headers["Upload-Offset"]), r.headers["Upload-Complete"] == "?1"


class HalfAppend:
    """A PATCH that sends ``sent`` of the ``length`` bytes it announced and then goes away
    (the client side closes the connection), as a broken link or a killed client does."""

    def __init__(self, api, node, where, offset, length, complete=True):
        u = urlsplit(api.cluster.url(node))
        raw = socket.create_connection((u.hostname, u.port), timeout=20)
        self.sock = api.ctx.wrap_socket(raw, server_hostname=u.hostname) if api.ctx else raw
        auth = f"Authorization: Bearer {api.token}\r\n" if api.token else ""
        self.sock.sendall((f"PATCH {where} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                           f"Content-Length: {length}\r\nUpload-Offset: {offset}\r\n"
                           f"Upload-Complete: {'?1' if complete else '?0'}\r\n"
                           f"Content-Type: application/partial-upload\r\n{auth}\r\n").encode())

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()


def holders_have(cluster, api, node, path, data):
    """The record names the holders; each has exactly ``data`` on disk."""
    r = api.follow(node, "GET", path)[1]
    assert r.status == 200 and r.body == data, r
    record = [f for f in api.get(node, path.rsplit("/", 1)[0] + "/").json()["files"]
              if f["path"] == path.split("/", 1)[1]][0]
    holders = [record["origin"]] + [rep["server"] for rep in record["replicas"]]
    assert len(holders) == 2, record
    for h in holders:
        assert disk_copy(cluster, h, *path.split("/", 1)).read_bytes() == data, h
    return record


def test_parts_make_one_file_invisible_until_complete_then_replicated(cluster, api):
    data = os.urandom(300_000)
    where = upload_path(create(api, "node1", "alice/res/parts.bin", len(data),
                               headers={"Repr-Digest": digest_field("sha-256", data)}))
    assert offset_of(api, "node1", where) == (0, False)
    r = append(api, "node1", where, 0, data[:100_000], False)
    assert r.status == 204 and r.headers["Upload-Offset"] == "100000", r
    # Readers see nothing of it: no file, not in the listing, on any node.
    for node in cluster.names:
        assert api.follow(node, "GET", "alice/res/parts.bin")[1].status == 404
        assert api.get(node, "alice/res/").status in (200, 404)
    # A wrong offset is refused with the right one.
    r = append(api, "node1", where, 5, b"x", False)
    assert r.status == 409 and r.headers["Upload-Offset"] == "100000", r
    assert r.json()["error"]["code"] == "mismatching_upload_offset"
    r = append(api, "node1", where, 100_000, data[100_000:], True)
    assert r.status == 201 and r.headers["Upload-Complete"] == "?1", r
    assert r.json()["digest"] == sha(data) and r.json()["size"] == len(data)
    holders_have(cluster, api, "node1", "alice/res/parts.bin", data)
    # The answer was lost? HEAD says it is done; another append is refused.
    assert offset_of(api, "node1", where) == (len(data), True)
    assert append(api, "node1", where, len(data), b"", True).status == 400


def test_a_broken_connection_keeps_what_arrived_and_the_upload_resumes(cluster, api):
    data = os.urandom(3 << 20)
    where = upload_path(create(api, "node2", "alice/res/broken.bin"))
    half = HalfAppend(api, "node2", where, 0, len(data))
    half.send(data[:2 << 20])
    # Bytes on the node's disk (written a MiB at a time) before the client goes: bytes
    # still in flight when it goes may be lost with the connection, but not these.
    arrived = wait_for(lambda: offset_of(api, "node2", where)[0], 20, what="bytes on disk")
    # The lock is held while the connection is open: another writer is refused. (Asked
    # only now: a writer that came first would take the lock and refuse the upload. Its
    # digest is wrong, so that even then it could store nothing.)
    other = api.put("node3", "alice/res/broken.bin", b"other",
                    headers={"Content-Digest": digest_field("sha-256", b"something else")})
    assert other.status == 423, other
    half.close()
    offset = offset_of(api, "node2", where)[0]
    for _ in range(3):  # the node may take the rest of what arrived in after the HEAD: 409
        assert arrived <= offset <= 2 << 20
        r = append(api, "node2", where, offset, data[offset:], True)
        if r.status != 409:
            break
        offset = int(r.headers["Upload-Offset"])
    assert r.status == 201, r
    holders_have(cluster, api, "node2", "alice/res/broken.bin", data)


def test_an_upload_survives_a_restart_of_its_node(cluster, api):
    data = os.urandom(1 << 20)
    where = upload_path(create(api, "node3", "alice/res/restart.bin", len(data)))
    assert append(api, "node3", where, 0, data[:400_000], False).status == 204
    cluster.kill("node3")
    cluster.restart("node3")
    wait_for(lambda: all(view(cluster, o, "node3") == "running" for o in cluster.names),
             VERIFY, what="node3 back and verified")
    assert offset_of(api, "node3", where) == (400_000, False)
    r = append(api, "node3", where, 400_000, data[400_000:], True)
    assert r.status == 201, r
    holders_have(cluster, api, "node3", "alice/res/restart.bin", data)


def test_a_version_written_meanwhile_refuses_the_resume(cluster, api):
    where = upload_path(create(api, "node1", "alice/res/raced.bin"))
    assert append(api, "node1", where, 0, b"a" * 1000, False).status == 204
    # Between requests the file is not locked: another writer gets through.
    assert api.follow("node2", "PUT", "alice/res/raced.bin", body=b"theirs")[1].status == 201
    r = append(api, "node1", where, 1000, b"b" * 1000, True)
    assert r.status == 412 and r.json()["error"]["code"] == "upload_outdated", r
    assert api.request("node1", "HEAD", where, raw_path=True).status == 404
    assert api.follow("node1", "GET", "alice/res/raced.bin")[1].body == b"theirs"


def test_only_its_creator_sees_appends_to_or_cancels_an_upload(cluster, api):
    admin = AdminApi(cluster)
    admin.add_user("bob")
    bob = admin.as_user("bob").node_api()
    where = upload_path(create(api, "node1", "alice/res/private.bin"))
    assert append(api, "node1", where, 0, b"mine", False).status == 204
    assert bob.request("node1", "HEAD", where, raw_path=True).status == 404
    assert append(bob, "node1", where, 4, b"theirs", True).status == 404
    assert bob.request("node1", "DELETE", where, raw_path=True).status == 404
    assert offset_of(api, "node1", where) == (4, False)
    # Nor can bob start one in alice's namespace.
    assert create(bob, "node1", "alice/res/bobs.bin").status == 403
    assert api.request("node1", "DELETE", where, raw_path=True).status == 204
    assert api.request("node1", "HEAD", where, raw_path=True).status == 404


def test_the_whole_file_digest_is_checked_in_any_algorithm(cluster, api):
    data = os.urandom(200_000)
    good = digest_field("sha-512", data, "sha512")
    where = upload_path(create(api, "node2", "alice/res/digest.bin",
                               headers={"Repr-Digest": good}))
    assert append(api, "node2", where, 0, data[:50_000], False).status == 204
    r = append(api, "node2", where, 50_000, data[50_000:], True)
    assert r.status == 201, r
    wrong = digest_field("sha-256", data + b"!")
    where = upload_path(create(api, "node2", "alice/res/digest2.bin",
                               headers={"Repr-Digest": wrong}))
    assert append(api, "node2", where, 0, data[:50_000], False).status == 204
    r = append(api, "node2", where, 50_000, data[50_000:], True)
    assert r.status == 400 and r.json()["error"]["code"] == "digest_mismatch", r
    assert api.follow("node2", "GET", "alice/res/digest2.bin")[1].status == 404
    assert api.request("node2", "HEAD", where, raw_path=True).status == 404
    # A part's own Content-Digest: a wrong one drops that part only.
    where = upload_path(create(api, "node2", "alice/res/digest3.bin"))
    r = append(api, "node2", where, 0, b"abc", False,
               headers={"Content-Digest": digest_field("sha-256", b"abd")})
    assert r.status == 400 and r.json()["error"]["code"] == "digest_mismatch", r
    assert offset_of(api, "node2", where) == (0, False)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One node, partial uploads expiring after 3.6 s, two per user."""
    from .clusters import start_cluster
    c = start_cluster(tmp_path_factory, "resumable1", servers=1, replicas=0,
                      partial_upload_hours=0.001, max_partial_uploads_per_user=2)
    try:
        yield c
    finally:
        c.stop()


def test_an_expired_upload_is_swept_and_a_user_has_few_open(single):
    api = Api(single)
    first = upload_path(create(api, "node1", "alice/sweep/a.bin"))
    assert append(api, "node1", first, 0, b"x" * 1000, False).status == 204
    upload_path(create(api, "node1", "alice/sweep/b.bin"))
    r = create(api, "node1", "alice/sweep/c.bin")
    assert r.status == 429 and r.json()["error"]["code"] == "too_many_partial_uploads", r
    partial = single.cfg.node_data_dir("node1") / "partial"
    assert len(list(partial.glob("*.data"))) == 2
    wait_for(lambda: not list(partial.iterdir()), 30, interval=0.2,
             what="the expired uploads to be swept")
    assert api.request("node1", "HEAD", first, raw_path=True).status == 404
    upload_path(create(api, "node1", "alice/sweep/c.bin"))


# -- the command-line client ------------------------------------------------------------------

import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

CLI = Path(sys.executable).parent / "securifile"


def cli_command(cluster, *args):
    return [str(CLI), "--cluster", str(cluster.data_dir / "cluster.json"), "--no-progress",
            *map(str, args)]


def cli_env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURIFILE_", "XDG_"))}
    return dict(env, HOME=str(home))


def partials(cluster, at_least=1):
    """The partial uploads' data files holding ``at_least`` bytes, on any node."""
    return [p for n in cluster.names
            for p in (cluster.cfg.node_data_dir(n) / "partial").glob("*.data")
            if p.stat().st_size >= at_least]


def test_put_killed_mid_transfer_resumes_on_a_rerun(cluster, api, tmp_path):
    data = os.urandom(64 << 20)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    env = cli_env(tmp_path)
    proc = subprocess.Popen(cli_command(cluster, "put", local, "alice/res/big.bin"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        partial = wait_for(lambda: partials(cluster, 4 << 20), 60, interval=0.01,
                           what="the upload to be under way")[0]
        proc.send_signal(signal.SIGSTOP)  # then killed: no goodbye to the node
        proc.kill()
    finally:
        proc.kill()
        proc.wait(10)
    got = [wait_for(lambda: partial.stat().st_size, 20, what="the node to keep what arrived")]
    assert 0 < got[0] < len(data), "the upload finished before the client was killed"
    r = subprocess.run(cli_command(cluster, "put", local, "alice/res/big.bin"), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    resumed = int(re.search(r"resuming the upload at .* \((\d+) bytes there\)", r.stderr)[1])
    assert resumed >= got[0] > 0, r.stderr
    record = holders_have(cluster, api, "node1", "alice/res/big.bin", data)
    # The node's own account of the last request: only the rest was sent.
    logs = (cluster.data_dir / "logs" / f"{record['origin']}.log").read_text()
    sent = int(re.findall(r"alice/res/big.bin complete: \d+ bytes \((\d+) in the last", logs)[-1])
    assert sent == len(data) - resumed < len(data)
    assert not partial.exists()


def test_get_continue_fetches_only_the_rest_and_checks_the_whole(cluster, api, tmp_path):
    data = os.urandom(3 << 20)
    assert api.follow("node2", "PUT", "alice/res/get.bin", body=data)[1].status == 201
    local = tmp_path / "get.bin"
    local.write_bytes(data[:1 << 20])
    r = subprocess.run(cli_command(cluster, "get", "--continue", "alice/res/get.bin", local),
                       env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"from byte {1 << 20}" in r.stderr and "verified" in r.stdout
    assert local.read_bytes() == data
    # A partial file of other bytes: the digest at the end says so, and it is fetched again.
    local.write_bytes(b"\0" * (1 << 20))
    r = subprocess.run(cli_command(cluster, "get", "-c", "alice/res/get.bin", local),
                       env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert local.read_bytes() == data


def test_put_resumes_by_itself_when_its_node_restarts_mid_transfer(cluster, api, tmp_path):
    data = os.urandom(64 << 20)
    local = tmp_path / "restart.bin"
    local.write_bytes(data)
    proc = subprocess.Popen(cli_command(cluster, "put", local, "alice/res/auto.bin"),
                            env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        node = wait_for(lambda: partials(cluster, 4 << 20), 60, interval=0.01,
                        what="the upload to be under way")[0].parent.parent.name
        cluster.kill(node)
        cluster.restart(node)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == 0, err
    assert "resuming the upload at" in err, err
    holders_have(cluster, api, node, "alice/res/auto.bin", data)


def test_the_readmes_curl_example_runs_as_printed(cluster, api, tmp_path):
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    script = re.search(r"<!-- resumable-curl.*?```sh\n(.*?)```", text, re.S).group(1)
    port = urlsplit(cluster.url("node1")).port
    script = script.replace("127.0.0.1:8441/", f"127.0.0.1:{port}/")
    script = script.replace("certs/users/alice", str(Path(cluster.user["cert"]).with_suffix("")))
    script = script.replace("certs/ca.crt", str(cluster.layout.ca_cert))
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    record = json.loads(r.stdout.strip().splitlines()[-1])
    data = (tmp_path / "big.bin").read_bytes()
    assert record["size"] == 5_000_000 and record["digest"] == sha(data)
    holders_have(cluster, api, "node1", "alice/big.bin", data)


# -- the terminal client -----------------------------------------------------------------------

def test_a_tui_upload_resumes_after_its_server_comes_back(cluster, api, tmp_path, monkeypatch):
    import asyncio
    from securifile.tui.session import Session
    from securifile.tui.widgets.transfers import DONE
    from .test_tui_files import SIZE, loaded, started_upload
    from .tui_fakes import FilesApp, until

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    data = os.urandom(64 << 20)
    (tmp_path / "tui.bin").write_bytes(data)
    session = Session.from_cluster_file(cluster.data_dir / "cluster.json")

    stopped = []

    def stop_the_holder():
        """Stop (SIGSTOP) the node the upload is created on as soon as it is: on a quiet
        machine the 64 MiB are through in half a second. Polled on a thread of its own, every
        few milliseconds, for at most a minute."""
        deadline = time.monotonic() + 60
        while not stopped and time.monotonic() < deadline:
            found = partials(cluster, 0)
            if found:
                node = found[0].parent.parent.name
                cluster.signal(node, signal.SIGSTOP)
                stopped.append(node)
            time.sleep(0.003)

    watcher = threading.Thread(target=stop_the_holder, daemon=True)
    watcher.start()

    def restart(node):
        cluster.kill(node)
        cluster.restart(node)

    async def scenario():
        app = FilesApp(session, local_dir=tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            screen = await loaded(pilot)
            transfer = await started_upload(pilot, screen, "tui.bin")
            node = await until(pilot, lambda: stopped and stopped[0], timeout=70,
                               what="the upload created (and its node stopped)")
            await asyncio.get_running_loop().run_in_executor(None, restart, node)
            await until(pilot, lambda: not transfer.running, timeout=120,
                        what="the upload to end")
            assert transfer.state == DONE, (transfer.detail,
                                            [n.message for n in app._notifications])
            return node

    node = asyncio.run(scenario())
    session.close()
    holders_have(cluster, api, node, "alice/tui.bin", data)
