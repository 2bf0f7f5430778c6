"""Starting test clusters: real processes on free loopback ports, TLS unless told not to."""
from securifile.launcher.cluster import Cluster

# Fast tests: 0.5 s beats (4 misses -> down within about 2 s; shorter makes a node that a
# loaded CI machine stalls for a moment look dead), short decision cache, frequent reports.
FAST = dict(heartbeat_interval=0.5, heartbeat_misses=4, authz_cache_seconds=0.5,
            sample_interval=0.5, report_interval=0.2, bcrypt_rounds=4)


def start_cluster(tmp_path_factory, name="cluster", servers=3, replicas=1, tls=True,
                  attempts=3, before_start=None, **settings):
    """A started cluster (admin server and ``servers`` nodes) with FAST settings overridden
    by ``settings``; ``before_start(cluster)`` runs on each created cluster before it starts
    (to put old data directories in place, say).

    The free ports the launcher picks can be taken by someone else before the servers bind
    them (parallel test workers make that likely); then it starts over on other ports.
    """
    for attempt in range(attempts):
        cluster = Cluster.create(tmp_path_factory.mktemp(name), servers, replicas, tls,
                                 base_port=0, **{**FAST, **settings})
        try:
            if before_start is not None:
                before_start(cluster)
            cluster.start()
            return cluster
        except (RuntimeError, TimeoutError):
            cluster.stop()
            logs = "".join(p.read_text(errors="replace")
                           for p in (cluster.data_dir / "logs").glob("*.log"))
            if "Address already in use" not in logs or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
