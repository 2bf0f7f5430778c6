"""The admin server's metrics: its requests, and the cluster as its database sees it
(each server's status and usage, files lacking copies), read at scrape time."""
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from securifile.common.metrics import RequestMetrics, new_registry

from .models import File
from .servers import DOWN, FAILED, RUNNING, UNKNOWN, VERIFYING

SERVER_STATUSES = (RUNNING, VERIFYING, DOWN, FAILED, "offline", UNKNOWN)


class AdminMetrics:
    def __init__(self, service):
        self.registry = new_registry()
        self.requests = RequestMetrics(self.registry)
        self.registry.register(ClusterCollector(service))


class ClusterCollector:
    """Gauges from the admin database; collected in a worker thread (they query it)."""

    def __init__(self, service):
        self.service = service

    def describe(self):
        return []  # nothing to query when the registry is built

    def collect(self):
        servers = self.service.servers.listing()
        status = GaugeMetricFamily("securifile_server_status",
                                   "Each server's status in the admin database (1 on the current one)",
                                   labels=["server", "status"])
        under = GaugeMetricFamily("securifile_server_under_replicated_files",
                                  "Files a server holds (origin or replica) that lack copies",
                                  labels=["server"])
        used = GaugeMetricFamily("securifile_server_used_bytes",
                                 "A server's used bytes, from its last storage sample",
                                 labels=["server"])
        available = GaugeMetricFamily("securifile_server_available_bytes",
                                      "A server's available bytes, from its last storage sample",
                                      labels=["server"])
        for row in servers:
            for s in SERVER_STATUSES:
                status.add_metric([row["name"], s], float(row["status"] == s))
            under.add_metric([row["name"]], row["under_replicated"])
            used.add_metric([row["name"]], row["used_bytes"] or 0)
            available.add_metric([row["name"]], row["available_bytes"] or 0)
        yield from (status, under, used, available)
        with self.service.sessions() as s:
            files, lacking = s.execute(select(
                func.count(), func.count().filter(File.under_replicated))).one()
        yield GaugeMetricFamily("securifile_files", "Files in the catalogue", value=files)
        yield GaugeMetricFamily("securifile_under_replicated_files",
                                "Files with fewer copies than the replication factor wants",
                                value=lacking)
