"""Fixtures: real node processes on free loopback ports, with TLS unless a test says not."""
import pytest

from securifile.scripts.cluster import Cluster

from .databases import db_url, sessions  # noqa: F401  (fixtures)
from .helpers import AdminApi, Api

# Fast tests: 0.5 s beats (4 misses -> down within about 2 s; shorter makes a node that a
# loaded CI machine stalls for a moment look dead), short decision cache, frequent reports.
FAST = dict(heartbeat_interval=0.5, heartbeat_misses=4, authz_cache_seconds=0.5,
            sample_interval=0.5, report_interval=0.2, bcrypt_rounds=4)


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


@pytest.fixture
def admin(cluster):
    return AdminApi(cluster)
