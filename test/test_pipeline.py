"""The replication pipeline under faults, on real processes: replicas receive an upload's
bytes while the client still sends them, and a replica killed, an origin killed, a client
that breaks off or a replica stopped for a moment mid-stream leave either every confirmed
holder with the whole file or nothing anywhere."""
import hashlib
import os
import signal
import threading
import time

from securifile.nodes.peer_requests import DIRECT_COPY

from .helpers import Api, wait_for
from .test_faults import (DETECT, SlowUpload, broken_off, copy_on_disk, holders_of, no_temp_files,
                          others, record_on, settled, sha, wait_seen)

PATH = "alice/pipe/data.bin"
# Big enough that the replicas write their copies with O_DIRECT (``diskfile._open_direct``),
# so each fault below also meets a direct write in flight.
SIZE = DIRECT_COPY + (8 << 20)


def temp_bytes(cluster, node):
    """Bytes in ``node``'s upload temp files (0 when it has none, or does not run)."""
    tmp = cluster.cfg.node_data_dir(node) / "tmp"
    total = 0
    for p in tmp.iterdir():
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def receiving(cluster, nodes):
    """The first of ``nodes`` with body bytes in a temp file, or None."""
    return next((n for n in nodes if temp_bytes(cluster, n) > 0), None)


def start_upload(api, node, first):
    """A PUT of SIZE bytes through ``node`` whose first ``first`` bytes are sent; its body."""
    body = os.urandom(SIZE)
    up = SlowUpload(api, node, PATH, SIZE)
    up.wait_continue()  # the lock is held and the replicas are chosen
    up.send(body[:first])
    return up, body


def nothing_anywhere(cluster, api, nodes):
    for node in nodes:
        wait_for(lambda: no_temp_files(cluster, node), DETECT,
                 what=f"{node} to throw its cut copy away")
        assert not copy_on_disk(cluster, node, PATH).exists()
        assert record_on(api, node, PATH) is None


def test_replicas_receive_the_body_while_the_client_sends_it_and_a_killed_one_is_replaced(
        make_cluster):
    cluster = settled(make_cluster, servers=4, replicas=2)
    api = Api(cluster)
    up, body = start_upload(api, "node1", SIZE // 2)
    try:
        # Half the body sent: replicas hold bytes of it already (no store-then-forward).
        victim = wait_for(lambda: receiving(cluster, others(cluster, "node1")), DETECT,
                          interval=0.01, what="a replica to receive bytes mid-body")
        cluster.kill(victim)
        up.send(body[SIZE // 2:])
        r = up.response()
    finally:
        up.close()
    assert r.status == 201, r
    record = r.json()
    holders = holders_of(record)
    assert holders[0] == "node1" and victim not in holders and len(holders) == 3
    assert not record["under_replicated"] and record["digest"] == sha(body)
    for node in holders:  # the spare got the committed copy from the origin's disk
        assert sha(copy_on_disk(cluster, node, PATH).read_bytes()) == sha(body)
    for node in holders:
        _by, got = api.follow(node, "GET", PATH)
        assert got.status == 200 and got.body == body


def test_an_origin_killed_mid_stream_leaves_nothing_anywhere(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=2)
    api = Api(cluster)
    up, _body = start_upload(api, "node1", SIZE // 2)
    try:
        wait_for(lambda: all(temp_bytes(cluster, n) > 0 for n in ("node2", "node3")), DETECT,
                 interval=0.01, what="both replicas to receive bytes mid-body")
        cluster.kill("node1")
        assert broken_off(lambda: (up.send(os.urandom(SIZE // 2)), up.response()))
    finally:
        up.close()
    wait_seen(cluster, ["node2", "node3"], "node1", "down")
    nothing_anywhere(cluster, api, ["node2", "node3"])
    # The dead origin's lock went when it was seen down: the name takes a new upload at once.
    data = os.urandom(100_000)
    r = api.put("node2", PATH, data)
    assert r.status == 201 and r.json()["digest"] == sha(data), r


def test_a_client_that_breaks_off_mid_stream_leaves_nothing_and_no_lock(make_cluster):
    cluster = settled(make_cluster, servers=3, replicas=2)
    api = Api(cluster)
    up, _body = start_upload(api, "node1", SIZE // 2)
    wait_for(lambda: all(temp_bytes(cluster, n) > 0 for n in cluster.names), DETECT,
             interval=0.01, what="the origin and both replicas to receive bytes")
    up.close()  # the client goes away, half its body sent
    nothing_anywhere(cluster, api, cluster.names)
    # The lock went with the upload (long before its lease): a new writer gets in at once.
    data = os.urandom(100_000)
    for node in cluster.names:
        r = api.put(node, PATH, data)
        if r.status == 307:
            continue
        assert r.status == 201 and r.json()["digest"] == sha(data), r
        break
    else:
        raise AssertionError("every node redirected the new upload")


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_stopped_replica_slows_the_client_down_and_keeps_its_place(make_cluster):
    # Beats every second, down after 4 misses: the replica stopped for about 2 s stays up.
    cluster = settled(make_cluster, servers=3, replicas=1, heartbeat_interval=1.0,
                      heartbeat_misses=4)
    api = Api(cluster)
    body = os.urandom(96 << 20)
    origin_pid = cluster.procs["node1"].pid
    rss_before = vm_rss_kib(origin_pid)
    result = {}

    def upload():
        try:
            result["r"] = api.put("node1", PATH, body)
        except Exception as e:  # surfaced below rather than lost in the thread
            result["error"] = e

    t = threading.Thread(target=upload)
    t.start()
    stopped = None
    try:
        replica = wait_for(lambda: receiving(cluster, ["node2", "node3"]), DETECT,
                           interval=0.005, what="the replica to receive bytes")
        cluster.signal(replica, signal.SIGSTOP)
        stopped = replica
        # Back-pressure: with the replica stopped, the origin soon stops taking the body.
        sizes = []

        def origin_stalled():
            assert not result, f"the upload ended while its replica was stopped: {result}"
            sizes.append(temp_bytes(cluster, "node1"))
            return len(sizes) > 4 and sizes[-1] == sizes[-5] > 0
        wait_for(origin_stalled, 3.0, interval=0.1, what="the origin to stop reading the body")
        assert sizes[-1] < len(body) // 2
        grown = vm_rss_kib(origin_pid) - rss_before
        assert grown < 32 * 1024, f"the origin buffered {grown} KiB while its replica was stopped"
    finally:
        if stopped:
            cluster.signal(stopped, signal.SIGCONT)
        t.join(120)
    assert not t.is_alive() and "error" not in result, result
    r = result["r"]
    assert r.status == 201, r
    record = r.json()
    assert holders_of(record) == ["node1", replica] and not record["under_replicated"]
    for node in ("node1", replica):
        with open(copy_on_disk(cluster, node, PATH), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha(body)


def test_a_hung_replica_is_dropped_when_seen_down_and_a_spare_takes_its_place(make_cluster):
    # A long stall timeout: the replica goes only because the origin sees it down.
    cluster = settled(make_cluster, servers=3, replicas=1, peer_timeout=30.0)
    api = Api(cluster)
    up, body = start_upload(api, "node1", SIZE // 2)
    hung = None
    try:
        hung = wait_for(lambda: receiving(cluster, ["node2", "node3"]), DETECT, interval=0.01,
                        what="the replica to receive bytes mid-body")
        cluster.signal(hung, signal.SIGSTOP)
        wait_seen(cluster, ["node1"], hung, "down")
        seen_down = time.monotonic()
        up.send(body[SIZE // 2:])
        r = up.response()
        assert time.monotonic() - seen_down < 15, "the upload waited for the hung replica"
    finally:
        up.close()
        if hung:
            cluster.signal(hung, signal.SIGCONT)
    assert r.status == 201, r
    record = r.json()
    spare = others(cluster, "node1", hung)[0]
    assert holders_of(record) == ["node1", spare] and not record["under_replicated"]
    assert sha(copy_on_disk(cluster, spare, PATH).read_bytes()) == sha(body)
    # Resumed, the hung replica finds its body cut: it keeps nothing.
    wait_for(lambda: no_temp_files(cluster, hung), DETECT, what=f"{hung} to drop its cut copy")
    assert not copy_on_disk(cluster, hung, PATH).exists()
