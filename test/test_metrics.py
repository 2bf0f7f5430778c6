"""/metrics on the nodes and the admin server, scraped from real processes: who may read
them, the series they carry after real traffic, and a real Prometheus server scraping a node
over TLS with a monitoring certificate."""
import json
import re
import shutil
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from securifile.common.tls import client_context
from securifile.launcher.certs import main as certs_main
from securifile.launcher.cluster import free_ports

from .clusters import start_cluster
from .helpers import AdminApi, Api, wait_for
from .netns import http_connection

PROMETHEUS = "/usr/bin/prometheus"
DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory, "metrics", servers=3, replicas=1)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def monitor(cluster):
    """A monitoring certificate issued the way an operator issues one."""
    assert certs_main(["--dir", str(cluster.layout.root), "monitor", "prometheus"]) == 0
    return (cluster.layout.monitor_cert("prometheus"), cluster.layout.monitor_key("prometheus"))


@pytest.fixture(scope="module")
def admin_token(cluster):
    return AdminApi(cluster).token


def scrape(cluster, server, cert=None, key=None, token=None):
    """(status, content type, body) of GET /metrics on ``server`` ('admin' or a node)."""
    ctx = client_context(cluster.layout.ca_cert, cert, key)
    conn = http_connection(cluster.url(server), ctx, 30)
    try:
        conn.request("GET", "/metrics",
                     headers={"Authorization": f"Bearer {token}"} if token else {})
        r = conn.getresponse()
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    finally:
        conn.close()


def samples(text):
    """{(sample name, frozenset of labels): value} of an exposition."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())))


def node_metrics(cluster, node, token):
    status, ctype, body = scrape(cluster, node, token=token)
    assert status == 200, body
    assert ctype.startswith("text/plain")
    return samples(body)


def test_a_node_counts_uploads_downloads_replication_and_sees_its_peers(cluster, admin_token):
    api = Api(cluster)
    data = b"metrics " * 4096
    node, r = api.follow("node1", "PUT", "alice/metrics/one.bin", body=data)
    assert r.status == 201, r
    assert api.get(node, "alice/metrics/one.bin").body == data
    assert api.get(node, "alice/no-such-file").status == 404
    # Neither a scanner's paths nor made-up methods become label values.
    assert api.request(node, "GET", "/wp-admin/x.php", raw_path=True).status == 404
    assert api.request(node, "BREW", "/coffee", raw_path=True).status == 405

    found = node_metrics(cluster, node, admin_token)
    route = "/files/(.+)"
    assert value(found, "securifile_http_requests_total", route=route, method="PUT",
                 status="201") >= 1
    assert value(found, "securifile_http_requests_total", route=route, method="GET",
                 status="404") >= 1
    assert value(found, "securifile_http_requests_total", route="unmatched", method="GET",
                 status="404") >= 1
    assert value(found, "securifile_http_requests_total", route="unmatched", method="other",
                 status="405") >= 1
    assert not [labels for name, labels in found if ("route", "/wp-admin/x.php") in labels]
    assert value(found, "securifile_upload_duration_seconds_count") >= 1
    assert value(found, "securifile_download_duration_seconds_count") >= 1
    assert value(found, "securifile_http_received_bytes_total", route=route) >= len(data)
    assert value(found, "securifile_http_sent_bytes_total", route=route) >= len(data)
    # replicas=1: the upload copied to one peer and broadcast its record to both.
    assert value(found, "securifile_replication_duration_seconds_count") >= 1
    assert value(found, "securifile_record_broadcast_duration_seconds_count") >= 1
    assert value(found, "securifile_record_broadcasts_total", confirmed="true") >= 1
    assert value(found, "securifile_disk_used_bytes") >= len(data)
    assert value(found, "securifile_disk_available_bytes") > 0
    assert value(found, "securifile_quorum") == 1
    assert value(found, "securifile_node_status", status="running") == 1
    assert value(found, "securifile_locks_held") == 0
    assert value(found, "securifile_report_queue_depth") is not None
    for peer in set(cluster.names) - {node, "admin"}:
        assert value(found, "securifile_peer_status", peer=peer, status="running") == 1
        assert value(found, "securifile_peer_status", peer=peer, status="down") == 0


def test_pulls_skip_the_records_a_node_was_pushed_while_uploads_run_through_every_node(
        cluster, admin_token):
    """Every node applies the others' records between its own, so each heartbeat's pull of
    a peer's changes covers records that their coordinators pushed here already: those are
    answered as sequence numbers alone (nodes/pushed.py), not sent a second time."""
    nodes = [n for n in cluster.names if n != "admin"]

    def pulled(sent):
        return sum(value(node_metrics(cluster, n, admin_token), "securifile_pulled_records_total",
                         sent=sent) or 0 for n in nodes)

    before = pulled("whole"), pulled("skipped")
    api = Api(cluster)

    def upload_through(node):
        for i in range(40):
            r = api.request(node, "PUT", f"alice/pulls/{node}/{i:02d}.txt", body=b"x" * 64)
            assert r.status == 201, r

    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(upload_through, nodes))
    # Each record is applied on every node; the pulls that follow move past all of them.
    wait_for(lambda: pulled("skipped") - before[1] >= 60, timeout=20,
             what="heartbeat pulls that skip pushed records")
    whole, skipped = pulled("whole") - before[0], pulled("skipped") - before[1]
    assert whole < skipped / 2, (whole, skipped)  # whole: pushes still on their way
    for node in nodes:  # and nothing was missed for it
        assert len(api.get(node, "alice/pulls/").json()["files"]) == 40 * len(nodes)


def test_each_server_froze_its_start_out_of_the_collectors_reach_and_counts_its_pauses(
        cluster, admin_token):
    """common/heap.py: a full collection walks only what the requests left, not the tens of
    thousands of objects the server made to start (the stall of every client at once)."""
    for server in ["admin", "node1"]:
        status, _ctype, body = scrape(cluster, server, token=admin_token)
        assert status == 200, body
        found = samples(body)
        assert value(found, "securifile_gc_frozen_objects") > 10_000, server
        for generation in "012":
            assert value(found, "securifile_gc_collections_total", generation=generation) >= 0
            assert value(found, "securifile_gc_pause_seconds_total", generation=generation) >= 0
        assert value(found, "securifile_gc_collections_total", generation="0") > 0, server


def test_the_admin_server_reports_server_status_and_under_replicated_files(cluster, admin_token):
    def running_everywhere():
        found = samples(scrape(cluster, "admin", token=admin_token)[2])
        nodes = [n for n in cluster.names if n != "admin"]
        if all(value(found, "securifile_server_status", server=n, status="running") == 1
               for n in nodes):
            return found
        return None

    found = wait_for(running_everywhere, timeout=30, what="every node running in the admin's view")
    assert value(found, "securifile_under_replicated_files") is not None
    assert value(found, "securifile_files") is not None
    assert value(found, "securifile_server_available_bytes", server="node1") is not None
    # The administrator's own login is counted by its route.
    assert value(found, "securifile_http_requests_total", route="/api/v1/login", method="POST",
                 status="200") >= 1


def test_a_monitoring_certificate_reads_metrics_and_nothing_else(cluster, monitor):
    cert, key = monitor
    for server in ("node1", "admin"):
        status, _ctype, body = scrape(cluster, server, cert, key)
        assert status == 200, body
        assert "securifile_http_requests_total" in body
    as_monitor = Api(cluster).with_identity(cert, key)
    r = as_monitor.get("node1", "alice/metrics/one.bin")
    assert r.status == 403 and r.json()["error"]["code"] == "not_a_user", r


def test_users_are_refused_and_strangers_asked_to_authenticate(cluster):
    user = cluster.user
    status, _ctype, body = scrape(cluster, "node1", user["cert"], user["key"])
    assert status == 403 and json.loads(body)["error"]["code"] == "not_a_monitor", body
    alice = AdminApi(cluster, user["username"]).token
    status, _ctype, body = scrape(cluster, "node1", token=alice)
    assert status == 403 and json.loads(body)["error"]["code"] == "not_a_monitor", body
    status, _ctype, body = scrape(cluster, "admin", token=alice)
    assert status == 403, body
    status, _ctype, body = scrape(cluster, "node1")
    assert status == 401, body


def test_heartbeat_misses_and_challenges_are_counted(cluster, admin_token):
    cluster.kill("node3")
    found = wait_for(lambda: (lambda f: f if value(f, "securifile_peer_status", peer="node3",
                                                   status="down") == 1 else None)(
        node_metrics(cluster, "node1", admin_token)), timeout=30, what="node1 to see node3 down")
    assert value(found, "securifile_heartbeat_misses_total", peer="node3") >= \
        cluster.cfg.heartbeat_misses
    cluster.restart("node3")

    def challenged():
        f = node_metrics(cluster, "node1", admin_token)
        return f if value(f, "securifile_challenges_total", peer="node3", outcome="passed") else None

    found = wait_for(challenged, timeout=60, what="node1's challenge of node3 to pass")
    assert value(found, "securifile_peer_status", peer="node3", status="running") == 1
    assert value(found, "securifile_challenges_total", peer="node3", outcome="failed") in (None, 0)


def dashboard_queries():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", ())]


def test_the_dashboard_queries_only_series_the_servers_expose(cluster, admin_token):
    exposed = set()
    for server in ("node1", "admin"):
        exposed |= {name for name, _labels in
                    samples(scrape(cluster, server, token=admin_token)[2])}
    wanted = {name for expr in dashboard_queries()
              for name in re.findall(r"securifile_[a-z_]+", expr)}
    assert wanted and wanted <= exposed, wanted - exposed


def prometheus_query(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]["result"]


@pytest.mark.skipif(not shutil.which(PROMETHEUS),
                    reason=f"{PROMETHEUS} is absent (Debian package 'prometheus'; scripts/test "
                           "installs it)")
def test_a_real_prometheus_scrapes_a_node_over_tls_with_a_monitoring_certificate(
        cluster, monitor, tmp_path):
    cert, key = monitor
    target = urllib.parse.urlsplit(cluster.url("node1")).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "securifile", "scheme": "https",
            "tls_config": {"ca_file": str(cluster.layout.ca_cert), "cert_file": str(cert),
                           "key_file": str(key)},
            "static_configs": [{"targets": [target]}],
        }],
    }))
    port = free_ports(1)[0]
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def scraped_up():
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}")
            try:
                result = prometheus_query(port, 'up{job="securifile"}')
            except OSError:
                return None
            return result and result[0]["value"][1] == "1"

        wait_for(scraped_up, timeout=60, interval=0.5, what="prometheus to scrape node1 (up == 1)")
        peers = wait_for(lambda: prometheus_query(
            port, 'securifile_peer_status{job="securifile",status="running"}'),
            timeout=30, interval=0.5, what="a node series in prometheus")
        assert {p["metric"]["peer"] for p in peers} == {"node2", "node3"}
        for expr in dashboard_queries():  # each panel's query is valid PromQL (else HTTP 400)
            prometheus_query(port, expr.replace("$__rate_interval", "1m"))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
