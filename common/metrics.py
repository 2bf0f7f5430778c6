"""Prometheus metrics every SecuriFile server shares: requests by route and status, bytes
in and out, latencies, and the /metrics handler that exposes them.

Each server builds its own ``CollectorRegistry`` (never prometheus_client's global one), so
that several apps in one test process do not mix their series, and each role adds its own
gauges, read from its state at scrape time rather than kept up to date on every change.
"""
import asyncio

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado.routing import PathMatches

from . import heap
from .web import MONITOR, ApiHandler

# From a small JSON answer to a large file over a slow link.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 600.0)
UNMATCHED = "unmatched"
NO_BODY_STATUSES = (204, 304)


def new_registry():
    # The library's switch is process-wide: the ``_created`` series would double every
    # scrape with start times no dashboard reads.
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(HeapCollector())
    return registry


class HeapCollector:
    """The garbage collector's pauses and the objects frozen out of its reach (common/heap)."""

    def describe(self):
        return []

    def collect(self):
        count = CounterMetricFamily("securifile_gc_collections",
                                    "Garbage collections since the server started serving",
                                    labels=["generation"])
        seconds = CounterMetricFamily("securifile_gc_pause_seconds",
                                      "Seconds the process stood still in garbage collections",
                                      labels=["generation"])
        for generation in range(3):
            count.add_metric([str(generation)], heap.pauses.count[generation])
            seconds.add_metric([str(generation)], heap.pauses.seconds[generation])
        yield count
        yield seconds
        yield GaugeMetricFamily("securifile_gc_frozen_objects",
                                "Objects frozen out of the collector's reach when serving began",
                                heap.frozen())


def response_length(handler):
    """Bytes of the response body the handler declared (0 for HEAD, 204 and 304)."""
    if handler.request.method == "HEAD" or handler.get_status() in NO_BODY_STATUSES:
        return 0
    length = handler._headers.get("Content-Length", "")  # Tornado keeps no public getter
    return int(length) if length.isdigit() else 0


def request_length(handler):
    """Bytes of the request body: what was buffered, or for a streamed body that was taken
    (status below 400) what it declared; a refused stream may never have been read."""
    if handler.request.body:
        return len(handler.request.body)
    length = handler.request.headers.get("Content-Length", "")
    return int(length) if length.isdigit() and handler.get_status() < 400 else 0


class RequestMetrics:
    """Counts every answered request from Tornado's ``log_function`` hook.

    Requests are labelled by route pattern (``/files/(.+)``), never by raw path, so a
    scrape stays small however many files there are. ``transfer_route`` names the route
    whose stored PUTs and served GETs feed the upload and download latency histograms.
    """

    def __init__(self, registry, transfer_route=None):
        self.transfer_route = transfer_route
        self._routes = None
        self._series = {}  # (route, method, status) -> the four labelled series it counts in
        self.requests = Counter("securifile_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=registry)
        self.duration = Histogram("securifile_http_request_duration_seconds",
                                  "Time from the request's start to its answer",
                                  ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry)
        self.received = Counter("securifile_http_received_bytes", "Request body bytes received",
                                ["route"], registry=registry)
        self.sent = Counter("securifile_http_sent_bytes", "Response body bytes sent",
                            ["route"], registry=registry)
        self.uploads = Histogram("securifile_upload_duration_seconds",
                                 "Uploads stored (200/201), first byte to answer",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.downloads = Histogram("securifile_download_duration_seconds",
                                   "File bytes served (200/206), request to last byte",
                                   buckets=LATENCY_BUCKETS, registry=registry)

    def route(self, handler):
        """The pattern of the route that answered (each handler class serves one)."""
        if self._routes is None:
            routes = {}
            for rule in handler.application.wildcard_router.rules:
                if isinstance(rule.matcher, PathMatches):
                    routes.setdefault(rule.target, rule.matcher.regex.pattern.rstrip("$"))
            self._routes = routes
        return self._routes.get(type(handler), UNMATCHED)

    def observe(self, handler):
        request, status = handler.request, handler.get_status()
        route, seconds = self.route(handler), request.request_time()
        # Any token parses as a method: only the ones Tornado serves become label values.
        method = request.method if request.method in handler.SUPPORTED_METHODS else "other"
        series = self._series.get((route, method, status))
        if series is None:  # routes x methods x statuses: a bounded set, looked up once each
            series = self._series[(route, method, status)] = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route, method), self.received.labels(route),
                self.sent.labels(route))
        requests, duration, received, sent = series
        requests.inc()
        duration.observe(seconds)
        received.inc(request_length(handler))
        sent.inc(response_length(handler))
        if route != self.transfer_route:
            return
        if method == "PUT" and status in (200, 201):
            self.uploads.observe(seconds)
        elif (method == "GET" and status in (200, 206) and
              handler._headers.get("Content-Type") == "application/octet-stream"):
            self.downloads.observe(seconds)  # a file's bytes, not a folder listing

    def counting(self, log_function):
        """``log_function`` that also counts the request: pass as the app's log_function."""
        def count_and_log(handler):
            self.observe(handler)
            log_function(handler)
        return count_and_log


class MetricsHandler(ApiHandler):
    """GET /metrics in Prometheus' text format, for monitoring certificates and
    administrators' tokens only (the request counts tell who uses the system how much)."""

    auth = MONITOR
    scrape_in_thread = False  # True where collectors query a database

    async def get(self):
        if self.scrape_in_thread:
            body = await asyncio.to_thread(generate_latest, self.registry)
        else:
            body = generate_latest(self.registry)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)
