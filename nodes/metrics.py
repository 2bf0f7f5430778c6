"""A storage node's metrics: what it sees of its peers, its disk, locks, quorum and report
queue, read from the node's state at scrape time; heartbeat misses, challenges and the
latencies of replication and record broadcasts counted by listening to the node's methods
marked ``@observed`` (nodes/observed.py), so that the storage and peer logic stay free of
metrics.
"""
from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from securifile.common.metrics import LATENCY_BUCKETS, RequestMetrics, new_registry

from .observed import listen
from .peers import DOWN, FAILED, OFFLINE, RUNNING, VERIFYING

STATUSES = (RUNNING, VERIFYING, DOWN, FAILED, OFFLINE)
PEER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class NodeMetrics:
    """The registry of one node: request metrics, event counters and scrape-time gauges."""

    def __init__(self, node):
        self.node = node
        self.registry = new_registry()
        self.requests = RequestMetrics(self.registry, transfer_route="/files/(.+)")
        r = self.registry
        self.heartbeat_misses = Counter("securifile_heartbeat_misses",
                                        "Heartbeats a peer did not answer", ["peer"], registry=r)
        self.challenges = Counter("securifile_challenges",
                                  "Challenges of a peer's copies this node made, by outcome",
                                  ["peer", "outcome"], registry=r)
        self.verdicts = Counter("securifile_verdicts_received",
                                "Peers' verdicts on this node's copies", ["outcome"], registry=r)
        self.replication = Histogram("securifile_replication_duration_seconds",
                                     "Copying a new version to its replicas, all in parallel",
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.replication_short = Counter("securifile_replications_short",
                                         "Versions that reached fewer replicas than wanted",
                                         registry=r)
        self.broadcast = Histogram("securifile_record_broadcast_duration_seconds",
                                   "Sending location records to every reachable peer",
                                   buckets=PEER_BUCKETS, registry=r)
        self.broadcasts = Counter("securifile_record_broadcasts",
                                  "Record broadcasts, by whether a majority stored them",
                                  ["confirmed"], registry=r)
        self.pulled = Counter("securifile_pulled_records",
                              "Records peers pulled from this node: sent whole, or as their "
                              "sequence number alone because the peer was pushed them",
                              ["sent"], registry=r)
        self.doubted_reads = Counter("securifile_doubted_reads",
                                     "Reads and listings that first asked the peers not seen "
                                     "down for the newest records, a peer being doubted",
                                     registry=r)
        self._instrument(node)
        r.register(NodeStateCollector(node))

    def _instrument(self, node):
        peers = node.peers
        # Every series at zero from the start, so that a query or alert on one finds it
        # before the first miss or challenge (peers added later appear with their first).
        for peer in peers.names:
            self.heartbeat_misses.labels(peer)
            for outcome in ("passed", "failed", "undecided", "abandoned"):
                self.challenges.labels(peer, outcome)
        for outcome in ("passed", "failed"):
            self.verdicts.labels(outcome)
        listen(peers, "record_miss",
               lambda _r, args, _s: self.heartbeat_misses.labels(args[0]).inc())
        listen(peers, "challenge_done", lambda _r, args, _s: self.challenges.labels(
            args[0], "passed" if args[1] else "failed").inc())
        listen(peers, "challenge_undecided",
               lambda _r, args, _s: self.challenges.labels(args[0], "undecided").inc())
        listen(peers, "challenge_abandoned",
               lambda _r, args, _s: self.challenges.labels(args[0], "abandoned").inc())
        listen(peers, "receive_verdict", lambda _r, args, _s: self.verdicts.labels(
            "passed" if args[1] else "failed").inc())

        def replicated(confirmed, args, seconds):
            self.replication.observe(seconds)
            if len(confirmed) < len(args[2]):  # (fp, loc, wanted, fresh)
                self.replication_short.inc()

        def published(confirmed, _args, seconds):
            self.broadcast.observe(seconds)
            self.broadcasts.labels("true" if confirmed else "false").inc()

        def copied_and_published(result, args, seconds):
            confirmed, majority = result  # a small upload's one round (fp, loc, wanted, ...)
            replicated(confirmed, args, seconds)
            published(majority, args, seconds)

        def pulled(page, _args, _seconds):
            whole = sum(1 for record in page["records"] if "owner" in record)
            self.pulled.labels("whole").inc(whole)
            self.pulled.labels("skipped").inc(len(page["records"]) - whole)

        for sent in ("whole", "skipped"):
            self.pulled.labels(sent)
        listen(node, "changes_since", pulled)
        for method in ("read_newest", "list_newest"):
            listen(node, method,
                   lambda asked, _args, _s: self.doubted_reads.inc() if asked else None)
        listen(node, "_replicate", replicated)
        listen(node, "publish", published)
        listen(node, "_copy_and_publish", copied_and_published)


class NodeStateCollector:
    """Gauges read from the node at each scrape: nothing to keep in step between scrapes."""

    def __init__(self, node):
        self.node = node

    def describe(self):
        return []  # the families depend on the node's peers; no need to check them up front

    def collect(self):
        node = self.node
        own = GaugeMetricFamily("securifile_node_status",
                                "This node's own status (1 on the current one)", labels=["status"])
        for status in STATUSES:
            own.add_metric([status], float(node.peers.self_status == status))
        yield own
        peers = GaugeMetricFamily("securifile_peer_status",
                                  "Each peer's status as this node sees it (1 on the current one)",
                                  labels=["peer", "status"])
        for peer in node.peers.snapshot():
            for status in STATUSES:
                peers.add_metric([peer["name"], status], float(peer["status"] == status))
        yield peers
        has = node.quorum.has() if node.quorum is not None else True
        yield GaugeMetricFamily("securifile_quorum",
                                "1 while this node reaches a majority of the servers", value=float(has))
        used, available = node.store.usage()
        yield GaugeMetricFamily("securifile_disk_used_bytes", "Bytes of file copies held",
                                value=used)
        yield GaugeMetricFamily("securifile_disk_available_bytes",
                                "Bytes free for copies (what is left of the capacity, if set)",
                                value=available)
        yield GaugeMetricFamily("securifile_locks_held",
                                "Write locks this node holds or granted, unexpired",
                                value=node.locks.held_count())
        yield CounterMetricFamily("securifile_quarantined_copies",
                                  "Bad copies moved aside since start", value=node.quarantined)
        reporter = getattr(node, "reporter", None)
        if reporter is not None:
            yield GaugeMetricFamily("securifile_report_queue_depth",
                                    "Events queued for the admin server", value=reporter.queued())
            yield CounterMetricFamily("securifile_report_events_sent",
                                      "Events the admin server took", value=reporter.sent)
            yield CounterMetricFamily("securifile_report_samples_dropped",
                                      "Storage samples dropped from a full queue",
                                      value=reporter.dropped)
        repair = getattr(node, "repair", None)
        if repair is not None:
            family = CounterMetricFamily("securifile_repairs",
                                         "Repair loop actions since start", labels=["action"])
            for action in ("repaired", "failures", "removed", "adopted"):
                family.add_metric([action], getattr(repair, action))
            yield family
        scrubber = getattr(node, "scrubber", None)
        if scrubber is not None:
            family = CounterMetricFamily("securifile_scrubbed_copies",
                                         "Copies the scrubber re-hashed, by result", labels=["result"])
            for result in ("checked", "bad", "errors"):
                family.add_metric([result], getattr(scrubber.totals, result))
            yield family
            yield CounterMetricFamily("securifile_orphan_files_removed",
                                      "Files no copy record named, removed after a scrub pass",
                                      value=scrubber.totals.orphans)
