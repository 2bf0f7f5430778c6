"""Fixtures: real node processes on free loopback ports, with TLS unless a test says not."""
import errno

import pytest

from .clusters import start_cluster
from .databases import db_url, sessions  # noqa: F401  (fixtures)
from .helpers import AdminApi, Api, refuse_reads_without_waiting
from .netns import make_netns_cluster  # noqa: F401  (fixture)


@pytest.fixture
def make_cluster(tmp_path_factory):
    """Start a cluster: ``make_cluster(servers=3, replicas=1, tls=True, **config)``."""
    started = []

    def make(servers=3, replicas=1, tls=True, **settings):
        cluster = start_cluster(tmp_path_factory, "cluster", servers, replicas, tls, **settings)
        started.append(cluster)
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


@pytest.fixture
def from_disk(monkeypatch):
    """Reads as of a file the page cache does not hold: one that may not wait gets nothing
    (``EAGAIN``), as ``preadv`` with ``RWF_NOWAIT`` answers then."""
    refuse_reads_without_waiting(monkeypatch,
                                 BlockingIOError(errno.EAGAIN, "not in the page cache"))
