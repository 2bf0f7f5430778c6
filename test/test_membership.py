"""Growing and shrinking a running cluster (real processes): a fourth server added under a
write load, learnt by every node without a restart, verified, given new copies and kept
across restarts; then a server drained (never fewer than r+1 copies of any file) and
removed, which is refused until its drain is over."""
import os
import subprocess
import sys
import threading

import pytest

from .clusters import start_cluster
from .helpers import AdminApi, Api, wait_for

REPLICAS = 1
WANTED = REPLICAS + 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "membership", servers=3, replicas=REPLICAS,
                      repair_interval=0.3, repair_batch=1, repair_after=600.0)
    try:
        yield c
    finally:
        c.stop()


def admin_cli(cluster, *args, lease_out=None):
    """``securifile-admin --config cluster.toml ARGS``: its output (it must succeed), or
    ``lease_out`` when it refused a change while a witness's tie-break lease is out."""
    run = subprocess.run([sys.executable, "-m", "securifile.admin.main", "--config",
                          str(cluster.config_path), *args], capture_output=True, text=True,
                         timeout=60)
    if run.returncode != 0 and "tie-break lease is out" in run.stderr:
        return lease_out
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


# A node starved of CPU for a few seconds on a loaded machine is cut off from the majority
# and verified again before it serves: it (or the node sending a reader to it) answers 503
# with one of these codes for that while. Asked again, bounded.
BEING_VERIFIED = ("server_not_running", "no_holder_running")


def served(api, node, method, path, **kw):
    def answer():
        _node, r = api.follow(node, method, path, **kw)
        if r.status == 503 and r.json()["error"]["code"] in BEING_VERIFIED:
            return None
        return r

    return wait_for(answer, timeout=30, interval=0.2, what=f"{method} {path} served")


def upload(api, node, path, data):
    return served(api, node, "PUT", path, body=data)


def read_back(api, node, path):
    return served(api, node, "GET", path)


def listing(api, node):
    """``{path: record}`` of alice's files as ``node``'s own location map has them."""
    r = api.request(node, "GET", "alice/")
    if r.status != 200:
        return None
    return {f["path"]: f for f in r.json()["files"]}


def current_holders(rec):
    holders = [rec["origin"], *[x["server"] for x in rec["replicas"]]]
    return [h for h in holders if h not in rec["stale"]]


def membership_of(cluster, name):
    st = cluster.status(name)
    return None if st is None else (st["epoch"], sorted(m["name"] for m in st["members"]))


class WriteLoad:
    """Uploads to the first three servers in turn until stopped; what was acknowledged."""

    def __init__(self, api, nodes):
        self.api, self.nodes = api, nodes
        self.acked, self.refused = {}, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        for i in range(10_000):  # bounded; stopped long before
            if self._stop.is_set():
                return
            data = os.urandom(2048)
            path = f"alice/load/f{i}.bin"
            try:
                r = upload(self.api, self.nodes[i % len(self.nodes)], path, data)
            except OSError as e:
                self.refused.append(str(e))
                continue
            if r.status == 201:
                self.acked[path] = data
            else:
                self.refused.append(r.status)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive()


def add_node4(cluster):
    """Add node4 to the three-server cluster (membership epoch 2) and wait until every node
    has the four-server list and the first three have verified node4 and see it running;
    the four names."""
    api, admin = Api(cluster), AdminApi(cluster)
    wait_for(lambda: all(membership_of(cluster, n) == (1, cluster.names) for n in cluster.names),
             timeout=30, what="every node on the admin server's first epoch")
    entry = cluster.new_server("node4")
    r = admin.call("POST", "/api/v1/servers", {"name": "node4", "url": entry.url})
    assert r.status == 201, r
    assert r.json()["epoch"] == 2
    cluster.start_node("node4")
    cluster.wait_ready(["node4"], timeout=60)
    everyone = [*cluster.names, "node4"]
    wait_for(lambda: all(membership_of(cluster, n) == (2, everyone) for n in everyone),
             timeout=30, what="every node on epoch 2")
    for n in cluster.names:  # verified like a returning server, then running everywhere
        wait_for(lambda n=n: api.sees(n, "node4", "running"), timeout=60,
                 what=f"{n} to see node4 running")
    return everyone


def test_a_server_added_under_load_is_learnt_verified_and_given_copies(cluster):
    api = Api(cluster)
    with WriteLoad(api, cluster.names) as load:
        wait_for(lambda: len(load.acked) >= 3, timeout=60, what="uploads before the change")
        everyone = add_node4(cluster)
        count = len(load.acked)
        wait_for(lambda: len(load.acked) >= count + 5, timeout=60, what="uploads after the change")
    # Nothing acknowledged during the change was lost.
    for path, data in load.acked.items():
        r = read_back(api, "node2", path)
        assert r.status == 200 and r.body == data, (path, r)
    # New files: placed on node4 too, as origin when sent to it (it takes them itself)...
    files, replicated_to = {}, {}

    def new_file(node):
        i = len(files)
        path, data = f"alice/after/{i}.bin", os.urandom(1024 + i)
        r = upload(api, node, path, data)
        assert r.status == 201, r
        files[path] = data
        replicated_to[path] = [x["server"] for x in r.json()["replicas"]]
        return r.json()

    for i in range(12):
        record = new_file(everyone[i % 4])
        if everyone[i % 4] == "node4":
            assert record["origin"] == "node4", record
    # ... and as a replica. Each upload's replica is picked at random among the servers its
    # node sees running, so it may take a few more: uploaded until one lands there (with
    # node4 as one of three peers, 20 uploads all missing it have a chance of 3 in 10,000).
    def replica_on_node4():
        if "node4" in sum(replicated_to.values(), []):
            return True
        assert len(files) < 60, ("no replica placed on node4", replicated_to)
        new_file(cluster.names[len(files) % 3])
        return False

    wait_for(replica_on_node4, timeout=60, interval=0.1, what="a replica placed on node4")
    # node1 learns every record (pushed by the file's node, or pulled at the next heartbeat
    # when node1 was not reachable from it for a moment).
    names = {path.split("/", 1)[1] for path in files}
    records = wait_for(lambda: (lambda got: got if got and names <= set(got) else None)(
        listing(api, "node1")), timeout=30, what="node1 to list every new file")
    on_node4 = [p for p in names if "node4" in current_holders(records[p])]
    as_replica = [p for p in on_node4 if records[p]["origin"] != "node4"]
    assert on_node4 and as_replica, records
    for node in everyone:
        for path, data in files.items():
            r = read_back(api, node, path)
            assert r.status == 200 and r.body == data, (node, path, r)
    # A restarted node keeps the four-server list, although its configuration names three.
    cluster.kill("node1")
    cluster.restart("node1", timeout=60)
    assert membership_of(cluster, "node1") == (2, everyone)
    assert "node4" in [p["name"] for p in cluster.status("node1")["peers"]]


def test_a_drained_server_keeps_every_file_at_r_plus_1_copies_then_is_removed(cluster):
    api, admin = Api(cluster), AdminApi(cluster)
    if "node4" not in cluster.added:  # run on its own: the four-server cluster is made here
        add_node4(cluster)
    everyone = [*cluster.names, "node4"]
    wait_for(lambda: all(membership_of(cluster, n) == (2, everyone) for n in everyone),
             timeout=30, what="the four-server cluster on epoch 2")
    # Give node2 files to hand over: some it originates, some it replicates.
    for i in range(30):
        r = upload(api, "node2", f"alice/drain/{i}.bin", os.urandom(512 + i))
        assert r.status == 201, r
    wait_for(lambda: admin.get("/api/v1/servers").json()["committed"], timeout=30,
             what="epoch 2 known to a majority")
    def drain():
        r = admin.call("POST", "/api/v1/servers/node2/drain")
        # A node that missed a few beats on a loaded machine may hold the witness's tie-break
        # lease for seconds: changes are refused until it runs out, as the answer says.
        return None if r.status == 409 and r.json()["error"]["code"] == "witness_lease" else r

    r = wait_for(drain, timeout=60, interval=0.5, what="the drain accepted once no lease is out")
    assert r.status == 200, r
    assert r.json()["epoch"] == 3
    # Refused at once: epoch 3 is not yet known to a majority (or node2 still holds copies).
    refused = admin.call("DELETE", "/api/v1/servers/node2")
    assert refused.status == 409, refused
    assert refused.json()["error"]["code"] in ("membership_changing", "not_drained"), refused
    # Then, once it is, refused while node2 holds copies (the drain moves 1 file a round per node).
    wait_for(lambda: admin.get("/api/v1/servers").json()["committed"], timeout=30,
             what="epoch 3 known to a majority")
    refused = admin.call("DELETE", "/api/v1/servers/node2")
    assert refused.status == 409 and refused.json()["error"]["code"] == "not_drained", refused
    assert refused.json()["error"]["files_left"] > 0
    # The operator's view, from its own process on the database.
    listed = admin_cli(cluster, "server", "list")
    assert "node2" in listed and "draining" in listed and "files_left=" in listed, listed
    observer = "node1"
    lowest = {}

    def drained():
        records = listing(api, observer)
        if records is None:
            return False
        for path, rec in records.items():
            n = len(current_holders(rec))
            lowest[path] = min(lowest.get(path, n), n)
        return all("node2" not in current_holders(rec) and "node2" not in rec["stale"]
                   and len(current_holders(rec)) >= WANTED for rec in records.values())

    wait_for(drained, timeout=120, interval=0.05, what="node2's copies moved to the others")
    assert lowest and min(lowest.values()) >= WANTED, \
        {p: n for p, n in lowest.items() if n < WANTED}
    listed = admin.get("/api/v1/servers").json()
    node2 = [s for s in listed["servers"] if s["name"] == "node2"][0]
    assert node2["membership"] == "draining"

    def files_left():
        for s in admin.get("/api/v1/servers").json()["servers"]:
            if s["name"] == "node2":
                return s["files_left"] == 0
        return False

    wait_for(files_left, timeout=60, what="the catalogue to show node2 empty")
    wait_for(lambda: admin.get("/api/v1/servers").json()["committed"], timeout=30,
             what="epoch 3 known to a majority")
    out = wait_for(lambda: admin_cli(cluster, "server", "remove", "node2"), timeout=60,
                   interval=0.5, what="the removal accepted once no lease is out")
    assert "membership epoch 4" in out and "node2" not in out.split(":", 2)[2], out
    staying = ["node1", "node3", "node4"]
    wait_for(lambda: all(membership_of(cluster, n) == (4, staying) for n in staying),
             timeout=30, what="every remaining node on epoch 4")
    wait_for(lambda: (cluster.status("node2") or {}).get("status") == "offline", timeout=30,
             what="the removed server to stop serving")
    assert "node2" not in [s["name"] for s in admin.get("/api/v1/servers").json()["servers"]]
    # The three that stay serve reads and writes on their own.
    cluster.kill("node2")
    r = upload(api, "node3", "alice/after-removal.bin", b"three servers")
    assert r.status == 201, r
    for node in staying:
        assert read_back(api, node, "alice/after-removal.bin").body == b"three servers"
        for i in range(30):
            assert read_back(api, node, f"alice/drain/{i}.bin").status == 200


# -- a partition during a change (each server in its own network namespace) ---------------

def test_a_server_added_while_one_is_cut_off_leaves_one_side_writing(make_netns_cluster):
    from .netns import server_address
    from .test_partition import (BEATS, DETECT, VERIFY, error_code, quorum, refused_no_quorum,
                                 wait_seen)

    def verifying(r, node):
        return r.status == 503 and error_code(r) == "server_not_running" \
            and f"{node} is verifying" in r.json()["error"]["message"]

    cluster = make_netns_cluster(servers=3, replicas=1, spare=1, **BEATS)
    api, admin = Api(cluster), AdminApi(cluster)
    wait_for(lambda: all(membership_of(cluster, n) == (1, cluster.names) for n in cluster.names),
             timeout=VERIFY, what="every node on epoch 1")
    # node3 is cut off from its peers (it still reaches the admin server) during the change.
    cluster.cut("node3")
    wait_for(lambda: quorum(cluster, "node3") is False, DETECT, what="node3 without quorum")
    entry = cluster.new_server("node4", host=server_address(4), port=8444)
    r = admin.call("POST", "/api/v1/servers", {"name": "node4", "url": entry.url})
    assert r.status == 201, r
    cluster.start_node("node4")
    cluster.wait_ready(["node4"], timeout=60)
    everyone = [*cluster.names, "node4"]
    wait_for(lambda: all(membership_of(cluster, n) == (2, everyone) for n in everyone),
             timeout=VERIFY, what="every node (node3 through the admin server) on epoch 2")

    def writes(node, i):
        return api.request(node, "PUT", f"alice/split/{node}-{i}.bin", body=b"x" * 100)

    def stored(node, i):
        """A majority side's write: 201, or a 503 while a peer was too slow to grant the lock
        in time on a loaded machine (the refusal names it), tried again until DETECT. Also
        a 503 while the node is verifying: with node3 cut off, the change to four servers
        leaves it two of four until node4 answers, cut off for that moment, and it serves
        again once its peers have passed it (a CI run caught a write in between)."""
        tried = []
        try:
            wait_for(lambda: tried.append(writes(node, i)) or tried[-1].status == 201, DETECT,
                     interval=0.2, what=f"{node}'s write {i}")
        except AssertionError:
            raise AssertionError(f"{node}'s write {i}: {tried[-1]}") from None
        assert all(refused_no_quorum(r) or verifying(r, node) for r in tried[:-1]), tried
        return True

    # Three of four write; node3, one of four, refuses.
    for i in range(3):
        assert stored("node1", i)
        assert refused_no_quorum(writes("node3", i))
    # node4 cut off too: node1 and node2 are exactly half of the new list and go on only
    # with the witness's lease; node3 and node4, alone each, refuse writes.
    cluster.cut("node4")
    wait_for(lambda: quorum(cluster, "node4") is False, DETECT, what="node4 without quorum")
    wait_seen(cluster, ["node1", "node2"], "node4", "down")
    wait_for(lambda: quorum(cluster, "node1") and quorum(cluster, "node2"), DETECT,
             what="node1 and node2 going on with the witness")
    for i in range(3, 6):
        assert stored("node2", i)
        for alone in ("node3", "node4"):
            assert refused_no_quorum(writes(alone, i)), alone
    # No change of the membership while that lease is out.
    r = admin.call("POST", "/api/v1/servers/node3/drain")
    assert r.status == 409 and r.json()["error"]["code"] == "witness_lease", r
    cluster.heal("node3")
    cluster.heal("node4")
    cluster.wait_ready(everyone, timeout=60)
    written = [f"alice/split/node1-{i}.bin" for i in range(3)] + \
              [f"alice/split/node2-{i}.bin" for i in range(3, 6)]
    for node in everyone:
        for path in written:
            _n, got = api.follow(node, "GET", path)
            assert got.status == 200 and got.body == b"x" * 100, (node, path, got)
    records = wait_for(lambda: listing(api, "node1"), what="node1's listing")
    assert not [p for p in records if p.startswith("split/node3") or p.startswith("split/node4")]
