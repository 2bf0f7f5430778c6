"""``securifile-node``: one storage node process."""
import argparse
import asyncio
import logging
import os
import random
import signal
import sys
from dataclasses import dataclass

from tornado.ioloop import PeriodicCallback

from securifile.common import eventloop, heap
from securifile.common.admin_urls import AdminURLs
from securifile.common.auth import Authenticator
from securifile.common.certnames import CertLayout
from securifile.common.config import ServerEntry, load_config
from securifile.common.limits import LimitedHTTPServer, ServerLimits, node_callers
from securifile.common.logsetup import setup_logging
from securifile.common.syslog import status_event
from securifile.common.syslog_sender import SyslogSender
from securifile.common.tls import client_context, server_context
from securifile.common.tokens import load_public_key
from securifile.common.web import MAX_HEADER_READ

from .access import AdminAuthoriser, OwnerOnlyAuthoriser
from .channel_handler import close_channels
from .chunksums import CHUNK
from .diskfile import DiskStore
from .heartbeat import HeartbeatLoop
from .http import load_openapi, make_app
from .locationmap import LocationMap
from .membership import MembershipPoller, NodeMembership, follow
from .partial_uploads import PartialUploadStore
from .peerclient import PeerClient
from .peers import DOWN, RUNNING, VERIFYING, PeerTable
from .quota import QuotaKeeper
from .quorum import Quorum
from .repair import RepairLoop
from .verification import Verifier
from .purge import NamespacePurger
from .reporter import Reporter
from .resumable import ResumableUploads
from .scrubber import Scrubber
from .storage import StorageNode
from .upload_limits import UploadSlots

log = logging.getLogger("securifile.node")

# Under TLS a socket read returns at most 16 KiB; a bigger read buffer only costs allocation.
TLS_READ_CHUNK = 16 * 1024
# A streamed body reaches its handler in pieces of at most this much. 1 MiB pieces (fresh
# objects each, several alive at once on their way to disk and to the replicas) fragmented
# the heap at full speed; the disk writes are gathered to 1 MiB anyway (buffers.Gather).
BODY_CHUNK = 256 << 10
# Downloads are read and flushed 1 MiB at a time, the chunk of the read checksums (one check
# per chunk read). 2 MiB chunks (half the flushes) raised a node's peak RSS by 4-5 MiB, and
# with aiohttp loaded the node is near its 64 MiB budget.
DOWNLOAD_CHUNK = CHUNK
# A stop waits this long for writes being committed (nodes/finishing.py): within the
# launcher's 10 s before it kills, after the last reports' 3 s.
STOP_WAIT = 5.0


@dataclass
class NodeParts:
    """One node's process, wired together by ``build_node`` and started by ``serve``."""

    app: object  # the Tornado application (nodes/http.py)
    node: StorageNode
    heartbeat: HeartbeatLoop
    server_ctx: object  # the TLS context to serve with; None without TLS
    me: object  # this server's entry in the configuration (host, port, url)
    reporter: object  # Reporter to the admin server; None without one
    authenticator: Authenticator


def build_node(cfg, name, deep=False):
    """Everything one node needs, wired together."""
    layout = CertLayout(cfg.certs_dir)
    data = cfg.node_data_dir(name)
    store = DiskStore(data, cfg.capacity_bytes, cfg.reserve_bytes)
    store.keep_spares()
    store.sweep_temp()
    # The saved membership, if any, wins over the configuration's list (only a bootstrap).
    membership = NodeMembership(data / "membership.json", cfg.servers)
    urls = membership.urls()
    if name not in urls:
        raise KeyError(f"no server named {name!r} in the membership")
    me = ServerEntry(name, urls[name])
    locations = LocationMap(data / "locations.sqlite3")
    peer_names = membership.names
    # A node that holds files must have them verified by its peers before it serves again.
    returning = len(peer_names) > 1 and locations.has_copies()
    peers = PeerTable(name, peer_names, cfg.heartbeat_misses,
                      self_status=VERIFYING if returning else RUNNING)
    secret = None
    if cfg.tls:
        server_ctx = server_context(layout.server_cert(name), layout.server_key(name), layout.ca_cert)
        peer_ctx = client_context(layout.ca_cert, layout.server_cert(name), layout.server_key(name))
    else:
        server_ctx = peer_ctx = None
        secret = (layout.root / "peer-secret").read_text().strip()
    client = PeerClient(name, peer_ctx, secret, cfg.peer_timeout)
    client.epoch = lambda: membership.epoch
    detection = cfg.heartbeat_interval * cfg.heartbeat_misses
    admin = AdminURLs(cfg.admin_endpoints) if cfg.admin_url else None

    async def ask_witness(side):
        return await client.ask_witness(admin, side, detection * 2, detection)

    # Only an even number of servers can tie (exactly half reachable): only they ask it.
    quorum = Quorum(peers, len(peer_names), detection, ask_witness if cfg.admin_url else None)
    node = StorageNode(name, urls, cfg.replicas, cfg.digest, store, locations, peers, client,
                       random.SystemRandom(), cfg.lock_lease_seconds, quorum,
                       call_timeout=min(cfg.peer_timeout, detection))
    quorum.on_change = node.quorum_changed
    # A peer that missed a beat may count this node down a detection time later, and go on
    # writing without it until one of its beats gets through again after a heal.
    node.doubt_window = 2 * detection
    # A promise to refuse a peer seen down is renewed by every heartbeat answer (one an
    # interval, answered within 0.8 of one). Two intervals outlast a beat and its pull but
    # for a slow pull (the peer is then doubted a moment); each interval more would hold a
    # returning peer's verdict back that much longer.
    node.refusals.lease = 2 * cfg.heartbeat_interval
    node.membership = membership
    node.upload_slots = UploadSlots(cfg.max_uploads_per_user)
    node.min_upload_rate = cfg.min_upload_rate
    node.partials = PartialUploadStore(data, cfg.partial_upload_hours * 3600,
                                       cfg.max_partial_uploads_per_user, trash=store.trash)
    node.partials.sweep()
    node.resumable = ResumableUploads(node, node.partials)
    verifier = Verifier(node, cfg.challenge_timeout, retry_delay=cfg.heartbeat_interval)
    authenticator = Authenticator(load_public_key(layout.token_public_key), set(peer_names), secret)
    follow(membership, node, peers, quorum, urls, authenticator.node_names)
    node.membership_poller = MembershipPoller(membership, client, admin,
                                              max(cfg.heartbeat_interval, cfg.report_interval)) \
        if cfg.admin_url else None
    reporter = None
    if cfg.admin_url:
        authoriser = AdminAuthoriser(cfg.admin_endpoints, client, cfg.authz_cache_seconds,
                                     state_path=data / "refused-accounts.json")
        reporter = Reporter(name, data / "reports.sqlite3", cfg.admin_endpoints, client)
        node.reporter = reporter  # its queue depth is a metric
        node.purger = NamespacePurger(node, cfg.admin_endpoints, client, cfg.purge_interval,
                                      cfg.purge_batch)
        node.on_file_change = reporter.file_changed
        node.quotas = QuotaKeeper(admin, client, reporter.quota_done,
                                  unlimited_ttl=cfg.authz_cache_seconds,
                                  state_path=data / "quota-owners.json")
        peers.on_change = reporter.status_changed
    else:
        authoriser = OwnerOnlyAuthoriser()
        node.purger = None
    app = make_app(node, authenticator, authoriser, cfg.tls, cfg.max_body_bytes,
                   DOWNLOAD_CHUNK, load_openapi(), deep, cfg.verify_reads)
    heartbeat = HeartbeatLoop(peers, client, urls, cfg.heartbeat_interval, node.apply_locations,
                              verifier.start, cursors=locations, quorum=quorum,
                              pushed=node.pushed,
                              membership=membership)
    node.verifier = verifier
    node.repair = RepairLoop(node, cfg.repair_after, cfg.repair_interval, cfg.repair_batch)
    reported = peers.on_change

    def on_change(subject, old, new, detail=""):
        reported(subject, old, new, detail)
        if subject != name:
            if new == DOWN:
                quorum.lost(subject)
            node.peer_changed(subject, old, new)

    peers.on_change = on_change
    node.on_pushed = heartbeat.note_pushed
    verifier.catch_up = heartbeat.catch_up  # a peer claims versions this node has not seen
    node.catch_up = heartbeat.catch_up  # a listing while a peer is doubted
    node.scrubber = None
    if cfg.scrub_files_per_second > 0:
        node.scrubber = Scrubber(node, cfg.scrub_bytes_per_second, cfg.scrub_files_per_second,
                                 cfg.scrub_interval,
                                 may_run=lambda: node.peers.self_status == RUNNING,
                                 orphan_grace=cfg.orphan_grace)
    return NodeParts(app, node, heartbeat, server_ctx, me, reporter, authenticator)


def open_syslog(cfg, name):
    """The audit log: to the configured syslog server, else the admin server's receivers
    (one at a time, the next when it does not take the messages)."""
    targets = cfg.syslog_endpoints()
    if not targets:
        return None
    ctx = None
    if cfg.tls:
        layout = CertLayout(cfg.certs_dir)
        ctx = client_context(layout.ca_cert, layout.server_cert(name), layout.server_key(name))
    return SyslogSender(targets, None, ctx, app_name="securifile-node", hostname=name)


def make_server(app, server_ctx, limits, authenticator):
    """The node's HTTP server: small bodies only, until a file handler has authenticated
    the caller (common/limits.py); fellow nodes may send long JSON to /peer/ routes."""
    server = LimitedHTTPServer(app, limits, node_callers(authenticator, ("/peer/",)),
                               ssl_options=server_ctx, chunk_size=BODY_CHUNK,
                               max_header_size=MAX_HEADER_READ)
    if server_ctx is not None:
        server.read_chunk_size = TLS_READ_CHUNK
    return server


async def serve(cfg, name, deep=False):
    parts = build_node(cfg, name, deep)
    node, heartbeat, reporter, me = parts.node, parts.heartbeat, parts.reporter, parts.me
    audit = open_syslog(cfg, name)
    if audit is not None:
        audit.start()
        node.audit = audit
        node.verifier.log_challenge = lambda peer, what, detail: audit.log_event(
            status_event(name, peer, "challenge", what, detail))
        previous = node.peers.on_change

        def on_change(subject, old, new, detail=""):
            previous(subject, old, new, detail)
            audit.log_event(status_event(name, subject, old, new, detail))

        node.peers.on_change = on_change
    server = make_server(parts.app, parts.server_ctx, ServerLimits.from_config(cfg),
                         parts.authenticator)
    server.listen(me.port, address=me.host)
    heartbeat.start()
    if node.membership_poller is not None:
        node.membership_poller.start()
    node.repair.start()
    if node.purger is not None:
        node.purger.start()
    if node.scrubber is not None:
        node.scrubber.start()
    purge = PeriodicCallback(node.purge_tombstones, 60_000)
    purge.start()
    # Expired partial uploads go within a quarter of their lifetime (at most a minute).
    sweep = PeriodicCallback(node.partials.sweep, min(60.0, node.partials.ttl / 4) * 1000)
    sweep.start()
    if reporter is not None:
        # What this node sees at start: itself running, its peers as assumed until they answer.
        reporter.status_changed(name, "", node.peers.self_status, "started")
        for peer in node.peers.snapshot():
            reporter.status_changed(peer["name"], "", peer["status"], "start")
        reporter.start(cfg.report_interval, cfg.sample_interval, node.store.usage)
    log.info("node %s listening on %s (replicas=%d, digest=%s)", name, me.url, cfg.replicas, cfg.digest)
    heap.settle()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node %s stopping", name)
    heartbeat.stop()
    if node.membership_poller is not None:
        node.membership_poller.stop()
    node.repair.stop()
    if node.purger is not None:
        node.purger.stop()
    purge.stop()
    sweep.stop()
    if node.scrubber is not None:
        await node.scrubber.stop()
    if reporter is not None:
        reporter.stop()
        try:
            await asyncio.wait_for(reporter.run_once(), 3)
        except asyncio.TimeoutError:
            log.warning("admin server did not take the last reports; they stay queued on disk")
    server.stop()
    await server.close_all_connections()
    close_channels(node)
    if not await node.finishing.ended(STOP_WAIT):
        log.warning("stopping with %d writes still being committed", node.finishing.count)
    if audit is not None:
        await audit.close()
    await node.client.close()
    node.locations.close()


def main(argv=None):
    os.umask(0o077)  # data, location maps and WAL files readable by this account only
    p = argparse.ArgumentParser(prog="securifile-node", description=__doc__)
    p.add_argument("--config", required=True, help="cluster TOML file (as the launcher writes it)")
    p.add_argument("--name", required=True, help="this node's name in the configuration")
    p.add_argument("--no-tls", dest="tls", action="store_const", const=False, default=None,
                   help="plain HTTP, for debugging only")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--deep", action="store_true",
                   help="answer challenges from a full re-hash of every file, not cached digests")
    args = p.parse_args(argv)
    cfg = load_config(args.config, overrides={"tls": args.tls})
    setup_logging(args.log_level, f"node {args.name}", cfg.tls)
    try:
        eventloop.run(serve(cfg, args.name, args.deep), cfg.event_loop)
    except KeyError as e:
        print(f"securifile-node: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
