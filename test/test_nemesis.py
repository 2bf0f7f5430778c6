"""A randomized nemesis: writers, readers and a deleter on five paths while servers are
killed, stopped, restarted and (in network namespaces, where the harness can make them)
partitioned; then a checker reads the history (test/history.py): no read returned bytes
nobody wrote or a value already superseded, each path ends with a value nothing acknowledged
superseded, every live file has r+1 current holders on disk, and no server was ever judged
failed (nothing here corrupts a copy).

Seeded: a failure prints its seed. ``SECURIFILE_NEMESIS_SEED=N`` replays the same choices
(the timing of real processes differs from run to run); ``SECURIFILE_NEMESIS_SECONDS=S``
runs the faults longer than the 45 s of a CI run.
"""
import hashlib
import http.client
import json
import math
import os
import random
import signal
import ssl
import threading
import time
from collections import Counter
from urllib.parse import quote, urlsplit

import pytest

from .helpers import Api, wait_for
from .history import (ABSENT, DELETE, FAIL, OK, READ, UNKNOWN, WRITE, History, Op,
                      allowed, final_violation, read_violations)

SEED = int(os.environ.get("SECURIFILE_NEMESIS_SEED") or random.SystemRandom().randrange(1 << 32))
SECONDS = float(os.environ.get("SECURIFILE_NEMESIS_SECONDS") or 45)
PATHS = [f"alice/nemesis/{name}" for name in ("a", "b", "c", "d", "e")]
# A holder away for 3 s is replaced, so holders converge within the run's bound.
SETTINGS = dict(heartbeat_interval=0.5, lock_lease_seconds=5.0, peer_timeout=4.0,
                repair_after=3.0, repair_interval=1.0)
REQUEST_TIMEOUT = 12.0  # longer than a stop lasts: a request to a stopped server is answered
CONVERGE = 90.0
# Refusals before anything was done: the operation took no effect. Not no_quorum: a
# coordinator that lost its majority after publishing says so too ("may or may not last").
REFUSED_503 = {"server_not_running", "not_synced"}


# -- the checker, on histories made by hand ---------------------------------------------------

def made(*ops):
    history = History(clock=time.monotonic)
    for process, kind, path, value, start, end, outcome in ops:
        history.ops.append(Op(process, kind, path, value, start,
                              math.inf if end is None else end, outcome))
    return history


def test_the_checker_allows_concurrent_and_unknown_operations_and_nothing_superseded():
    h = made(("w1", WRITE, "p", b"v1", 1, 2, OK),
             ("w2", WRITE, "p", b"v2", 3, 4, OK),
             ("w3", WRITE, "p", b"v3", 3.5, None, UNKNOWN),  # may land any time
             ("w4", WRITE, "p", b"v4", 5, 6, FAIL),
             ("r", READ, "p", b"v1", 2.5, 3.2, OK),  # v2 started after the read began
             ("r", READ, "p", b"v2", 3.1, 3.2, OK),  # v2 in flight: may be seen
             ("r", READ, "p", b"v3", 9, 10, OK),
             ("r", READ, "p", ABSENT, 0, 1.5, OK))  # nothing acknowledged yet
    assert read_violations(h) == []
    assert final_violation(h, "p", b"v2") is None
    assert final_violation(h, "p", b"v3") is None


def test_the_checker_finds_stale_invented_refused_and_resurrected_values():
    h = made(("w1", WRITE, "p", b"v1", 1, 2, OK),
             ("w2", WRITE, "p", b"v2", 3, 4, OK),
             ("w3", WRITE, "p", b"v3", 5, 6, FAIL),
             ("d", DELETE, "q", ABSENT, 1, 2, OK),
             ("w5", WRITE, "q", b"q1", 0, 0.5, OK),
             ("r", READ, "p", b"v1", 5, 6, OK),  # v2 acknowledged before: stale
             ("r", READ, "p", b"xx", 5, 6, OK),  # never written
             ("r", READ, "p", b"v3", 7, 8, OK),  # refused write
             ("r", READ, "q", b"q1", 3, 4, OK),  # deleted before
             ("r", READ, "p", ABSENT, 5, 6, OK))  # never deleted
    assert len(read_violations(h)) == 5
    assert final_violation(h, "p", b"v1") is not None
    assert final_violation(h, "p", b"v3") is not None
    assert final_violation(h, "p", ABSENT) is not None
    assert final_violation(h, "q", b"q1") is not None
    assert final_violation(h, "q", ABSENT) is None
    assert allowed(b"v1", 2.5, 3.5, h.effects("p"))


# -- clients -----------------------------------------------------------------------------

class NotSent(OSError):
    """No server was reached: the request did nothing anywhere."""


def error_code(body):
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def outcome_of(status, code):
    if 200 <= status < 300:
        return OK
    if 400 <= status < 500 or (status == 503 and code in REFUSED_503):
        return FAIL
    return UNKNOWN


class Client:
    """One thread's calls: redirects followed; a holder that cannot be reached is named in
    ``avoid`` when it asks the first server again (only when nothing was sent to it)."""

    def __init__(self, api):
        self.api = api

    def call(self, first, method, path, body=None):
        """(the node that answered, status, body, error code); raises NotSent or OSError."""
        base = "/files/" + quote(path, safe="/")
        node, target, avoid = first, base, []
        for _hop in range(6):
            try:
                status, headers, data = self._request(node, method, target, body)
            except NotSent:
                if node == first or len(avoid) >= 2:
                    raise
                avoid.append(node)
                node, target = first, f"{base}?avoid={','.join(avoid)}"
                continue
            if status != 307:
                return node, status, data, error_code(data)
            loc = urlsplit(headers["Location"])
            node = self.api.node_for(f"{loc.scheme}://{loc.netloc}")
            target = loc.path + (f"?{loc.query}" if loc.query else "")
        return node, 508, b"", "too_many_redirects"

    def _request(self, node, method, target, body):
        conn = self.api.connection(node, timeout=REQUEST_TIMEOUT)
        try:
            try:
                conn.connect()
            except OSError as e:
                raise NotSent(f"{node}: {e}") from e
            headers = {"Authorization": f"Bearer {self.api.token}"} if self.api.token else {}
            conn.request(method, target, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        except (http.client.HTTPException, ssl.SSLError) as e:
            raise OSError(f"{node}: {e!r}") from e
        finally:
            conn.close()


class Workload:
    """Writer, reader and deleter threads on PATHS until ``stop`` is set; every write's bytes
    are unique (seed, thread, count, random bytes)."""

    def __init__(self, api, names, history, stop):
        self.api, self.names, self.history, self.stop = api, names, history, stop
        self.errors = []

    def threads(self):
        roles = [("writer1", self.write), ("writer2", self.write), ("reader1", self.read),
                 ("reader2", self.read), ("deleter", self.delete)]
        return [threading.Thread(target=self._loop, args=(name, step), name=name, daemon=True)
                for name, step in roles]

    def _loop(self, name, step):
        rng = random.Random(f"{SEED}-{name}")
        client = Client(self.api)
        count = 0
        try:
            while not self.stop.is_set() and count < 100_000:
                count += 1
                step(name, rng, client, count)
                self.stop.wait(rng.uniform(0.02, 0.25))
        except Exception as e:  # a bug in the test itself: fail the test, not the thread
            self.errors.append(f"{name}: {e!r}")
            raise

    def _run(self, op, client, method, body=None):
        try:
            node, status, data, code = client.call(op.node, method, op.path, body)
        except NotSent as e:
            self.history.finish(op, FAIL, detail=str(e))
            return None
        except OSError as e:
            self.history.finish(op, UNKNOWN, detail=str(e))
            return None
        return node, status, data, code

    def write(self, name, rng, client, count):
        value = f"{SEED}:{name}:{count}:".encode() + rng.randbytes(rng.randrange(64, 4096))
        op = self.history.begin(name, WRITE, rng.choice(PATHS), value, rng.choice(self.names))
        if answer := self._run(op, client, "PUT", value):
            node, status, _data, code = answer
            self.history.finish(op, outcome_of(status, code), detail=f"{status} {code or ''}",
                                node=node)

    def delete(self, name, rng, client, count):
        op = self.history.begin(name, DELETE, rng.choice(PATHS), ABSENT, rng.choice(self.names))
        if answer := self._run(op, client, "DELETE"):
            node, status, _data, code = answer
            self.history.finish(op, outcome_of(status, code), detail=f"{status} {code or ''}",
                                node=node)

    def read(self, name, rng, client, count):
        op = self.history.begin(name, READ, rng.choice(PATHS), node=rng.choice(self.names))
        if answer := self._run(op, client, "GET"):
            node, status, data, code = answer
            if status in (200, 404):
                self.history.finish(op, OK, data if status == 200 else ABSENT,
                                    detail=str(status), node=node)
            else:
                self.history.finish(op, FAIL, detail=f"{status} {code or ''}", node=node)


# -- the nemesis -----------------------------------------------------------------------------

class Nemesis:
    """Kills (SIGKILL), stops (SIGSTOP), restarts (SIGTERM, started again at once), cuts off
    one server at a time or breaks its link to one other ("link": both still reach the
    third), sometimes two or the admin server too; every fault is healed before the next
    round."""

    def __init__(self, cluster, rng, history, stop, partitions):
        self.cluster, self.rng, self.history, self.stop = cluster, rng, history, stop
        self.kinds = ["kill", "stop", "restart"] + (["cut", "link"] if partitions else [])
        self.faults = {}
        self.errors = []

    def run(self):
        try:
            for _round in range(10_000):
                if self.stop.is_set():
                    break
                victims = self.rng.sample(self.cluster.names, 2 if self.rng.random() < 0.2 else 1)
                for name in victims:
                    self.inject(name, self.rng.choice(self.kinds))
                if self.rng.random() < 0.1:
                    self.inject("admin", "kill")
                self.stop.wait(self.rng.uniform(1.0, 6.0))
                self.heal()
                self.stop.wait(self.rng.uniform(1.0, 4.0))
        except Exception as e:
            self.errors.append(repr(e))
            raise

    def inject(self, name, kind):
        self.history.event(f"{kind} {name}")
        if kind == "restart":  # over as soon as it is done
            proc = self.cluster.procs[name]
            proc.terminate()
            proc.wait(timeout=30)
            self.cluster.start_node(name)
            return
        if kind == "kill":
            self.cluster.kill(name)
        elif kind == "stop":
            self.cluster.signal(name, signal.SIGSTOP)
        elif kind == "link":
            other = self.rng.choice([n for n in self.cluster.names if n != name])
            self.history.event(f"link {name} - {other} broken")
            self.cluster.cut_between(name, other)
            kind = f"link {other}"
        else:
            self.cluster.cut(name)
        self.faults[name] = kind

    def heal(self):
        for name, kind in list(self.faults.items()):
            self.history.event(f"heal {name} ({kind})")
            if kind == "kill":
                self.cluster.start_node(name)
            elif kind == "stop":
                self.cluster.signal(name, signal.SIGCONT)
            elif kind.startswith("link "):
                self.cluster.heal_between(name, kind.removeprefix("link "))
            else:
                self.cluster.heal(name)
            del self.faults[name]


def failed_verdicts(cluster):
    """Log lines of servers judging one another failed: kills, stops, restarts and cuts
    corrupt nothing, and failed is for real corruption only."""
    return [f"{log.stem}: {line.strip()}"
            for log in sorted((cluster.data_dir / "logs").glob("node*.log"))
            for line in log.read_text(errors="replace").splitlines() if "-> failed" in line]


def status_changes(cluster, limit=80):
    """The servers' log lines about peers going down, failed, verifying or running: what a
    failure needs besides the history (pytest soon removes the logs of old runs)."""
    lines = []
    for log in sorted((cluster.data_dir / "logs").glob("*.log")):
        found = [line.rstrip() for line in log.read_text(errors="replace").splitlines()
                 if "tornado.access" not in line and any(
                     word in line for word in (" -> ", "FAILED", "quorum", "Traceback", "ERROR"))]
        lines += [f"{log.stem}: {line}" for line in found[-limit:]]
    return "server logs (status lines):\n" + "\n".join(lines)


# -- the test -----------------------------------------------------------------------------

def sha(data):
    return hashlib.sha256(data).hexdigest()


def records(client, node):
    """``node``'s location records under PATHS' folder, by path; None if it does not list."""
    try:
        _node, status, data, _code = client.call(node, "GET", "alice/nemesis/")
    except OSError:
        return None
    if status != 200:
        return None
    return {f"alice/{f['path']}": f for f in json.loads(data)["files"]}


def read_everywhere(client, names, path):
    """The one value every node serves for ``path``, or None while they differ or fail."""
    seen = set()
    for node in names:
        try:
            _node, status, data, _code = client.call(node, "GET", path)
        except OSError:
            return None
        if status not in (200, 404):
            return None
        seen.add(data if status == 200 else ABSENT)
    return seen if len(seen) == 1 else None


def holders_current(cluster, client, path, value, replicas):
    """Why ``path`` is not yet held as it should be, or '' once it is: no record and no copy
    of a deleted path; otherwise one record everywhere, nobody stale, and r+1 holders or more
    whose copies on disk are the bytes every node serves."""
    on_disk = {}
    for node in cluster.names:
        copy = cluster.cfg.node_data_dir(node) / "files" / path
        on_disk[node] = copy.read_bytes() if copy.exists() else None
    views = {node: records(client, node) for node in cluster.names}
    if any(v is None for v in views.values()):
        return f"not every node lists: {sorted(n for n, v in views.items() if v is None)}"
    found = {node: v.get(path) for node, v in views.items()}
    if value is ABSENT:
        if any(found.values()) or any(on_disk.values()):
            return (f"deleted but recorded on {[n for n, r in found.items() if r]}, "
                    f"copies on {[n for n, d in on_disk.items() if d is not None]}")
        return ""
    same = {(r["version"], r["digest"], r["origin"],
             tuple(sorted(x["server"] for x in r["replicas"])), tuple(r["stale"]))
            for r in found.values() if r}
    if len(same) != 1 or not all(found.values()):
        return f"records differ: {found}"
    version, digest, origin, reps, stale = same.pop()
    holders = [origin, *reps]
    if stale or digest != sha(value):
        return f"record at version {version} names stale {stale} or another digest"
    bad = [h for h in holders if on_disk.get(h) != value]
    if len(holders) < replicas + 1 or bad:
        return f"holders {holders}, of which not current on disk: {bad}"
    return ""


@pytest.mark.timeout(int(SECONDS + CONVERGE + 200))
def test_under_a_nemesis_no_acknowledged_operation_is_lost_and_holders_converge(
        make_netns_cluster, make_cluster):
    rng = random.Random(SEED)
    replicas = rng.choice([1, 2])
    try:
        cluster, partitions = make_netns_cluster(servers=3, replicas=replicas, **SETTINGS), True
    except pytest.skip.Exception as e:
        print(f"no partitions in this run: {e}")
        cluster, partitions = make_cluster(servers=3, replicas=replicas, **SETTINGS), False
    print(f"nemesis seed {SEED}: r={replicas}, {SECONDS:.0f} s, partitions={partitions}")
    history = History(clock=time.monotonic)
    stop = threading.Event()
    api = Api(cluster)
    workload = Workload(api, cluster.names, history, stop)
    nemesis = Nemesis(cluster, rng, history, stop, partitions)
    threads = workload.threads() + [threading.Thread(target=nemesis.run, name="nemesis",
                                                     daemon=True)]

    def failure(message):
        print(f"the whole history (start, acknowledgement, thread, operation, path, outcome, "
              f"server, value):\n{history.describe()}")  # pytest shows it with the failure
        print(status_changes(cluster))
        return (f"nemesis seed {SEED} (r={replicas}, partitions={partitions}; replay with "
                f"SECURIFILE_NEMESIS_SEED={SEED}): {message}\n"
                f"the end of the history (all of it in the captured output):\n"
                f"{history.describe(last=40)}")

    wait_for(lambda: all(Api(cluster).sees(o, p, "running") for o in cluster.names
                         for p in cluster.names if p != o), 30, what="every node running")
    for t in threads:
        t.start()
    try:
        stop.wait(SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=REQUEST_TIMEOUT * 7 + 10)
        nemesis.heal()
    assert not any(t.is_alive() for t in threads), failure("a thread did not stop")
    assert not workload.errors and not nemesis.errors, failure(
        f"errors: {workload.errors + nemesis.errors}")
    print("operations:", ", ".join(f"{kind} {outcome} {n}" for (kind, outcome), n in sorted(
        Counter((op.kind, op.outcome) for op in history.ops).items())),
        f"; faults: {len(history.events)} events")
    acknowledged = [op for op in history.ops if op.outcome == OK and op.kind != READ]
    assert acknowledged, failure("no write or delete was acknowledged at all")

    problems = read_violations(history)
    client = Client(api)
    deadline = time.monotonic() + CONVERGE  # one bound for all the waits below

    def left():
        return max(1.0, deadline - time.monotonic())
    try:
        cluster.wait_ready(["admin"] + cluster.names, left())
        finals = {}
        for path in PATHS:
            finals[path] = next(iter(wait_for(
                lambda: read_everywhere(client, cluster.names, path), left(), interval=0.5,
                what=f"every node to serve one value for {path}")))
        for path, value in finals.items():
            if why := final_violation(history, path, value):
                problems.append(why + "\n" + history.describe(path, last=30))
        for path, value in finals.items():
            why = {}

            def converged():
                why[path] = holders_current(cluster, client, path, value, replicas)
                return not why[path]
            try:
                wait_for(converged, left(), interval=0.5, what=f"the holders of {path}")
            except AssertionError as e:
                problems.append(f"{e}: {why[path]}")
    except (AssertionError, RuntimeError, TimeoutError) as e:
        problems.append(str(e))
    problems += [f"judged failed without corruption: {line}" for line in failed_verdicts(cluster)]
    assert not problems, failure("\n".join(problems))
