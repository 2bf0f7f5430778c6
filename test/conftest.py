"""Fixtures: real node processes on free loopback ports, with TLS unless a test says not."""
import pytest

from securifile.scripts.cluster import Cluster

from .helpers import Api

# Fast failure detection in tests: 0.2 s beats, 3 misses -> down within about a second.
FAST = dict(heartbeat_interval=0.2, heartbeat_misses=3)


@pytest.fixture
def make_cluster(tmp_path_factory):
    """Start a cluster: ``make_cluster(servers=3, replicas=1, tls=True, **config)``."""
    started = []

    def make(servers=3, replicas=1, tls=True, **settings):
        root = tmp_path_factory.mktemp("cluster")
        cluster = Cluster.create(root, servers, replicas, tls, base_port=0,
                                 **{**FAST, **settings})
        started.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in started:
        cluster.stop()


@pytest.fixture
def cluster(make_cluster):
    return make_cluster(servers=3, replicas=1)


@pytest.fixture
def api(cluster):
    return Api(cluster)
