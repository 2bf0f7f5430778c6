"""``securifile-admin``: the admin server, its database, accounts and servers.

    securifile-admin --config cluster.toml serve
    securifile-admin --config cluster.toml db upgrade
    securifile-admin --config cluster.toml user add NAME --email E --valid-days D [--admin] [--quota SIZE] [--password-stdin]
    securifile-admin --config cluster.toml user set-quota NAME SIZE
    securifile-admin --config cluster.toml user enrol NAME
    securifile-admin --config cluster.toml user remove NAME
    securifile-admin --config cluster.toml user list
    securifile-admin --config cluster.toml server offline|online NAME
    securifile-admin --config cluster.toml server add NAME --url https://HOST:PORT
    securifile-admin --config cluster.toml server drain|remove NAME
    securifile-admin --config cluster.toml server list

Without a password, the account's owner gets a single-use enrolment code by e-mail and sets
the password with it; ``user enrol`` sends a new code (a forgotten password). Exit status: 0
done, 1 refused (the reason is printed), 2 bad usage. Nothing prompts when standard input is
not a terminal, so provisioning scripts can pipe passwords in.
"""
import argparse
import asyncio
import getpass
import json
import logging
import signal
import sys
from urllib.parse import urlsplit

from securifile.common import eventloop, heap
from securifile.common.auth import Authenticator
from securifile.common.certnames import CertLayout
from securifile.common.config import load_config
from securifile.common.errors import ApiError
from securifile.common.limits import LimitedHTTPServer, ServerLimits, node_callers
from securifile.common.logsetup import setup_logging
from securifile.common.private_files import private_dir, restrict_umask
from securifile.common.sizes import size_argument
from securifile.common.tls import client_context, server_context
from securifile.common.tokens import load_private_key, load_public_key
from securifile.common.web import MAX_HEADER_READ

from . import db
from .http import make_app
from .openapi import document as openapi_document
from .nodeclient import NodeStateClient
from .service import AdminService

log = logging.getLogger("securifile.admin")
ADMIN_NAME = "admin"


def check_shared_database(cfg):
    """Several instances (``admin_urls``) need one database they can all reach and that
    serialises their writes: PostgreSQL. SQLite is one file on one host."""
    if len(cfg.admin_endpoints) > 1 and cfg.effective_database_url.startswith("sqlite"):
        raise ApiError(
            f"{len(cfg.admin_endpoints)} admin server instances are configured (admin_urls) "
            "but the database is SQLite: several instances need one PostgreSQL database "
            "(database_url = \"postgresql+pg8000://...\"); run one instance with SQLite",
            code="sqlite_single_instance")


def open_service(cfg, with_node_client=True):
    check_shared_database(cfg)
    private_dir(cfg.admin_data_dir)
    engine = db.make_engine(cfg.effective_database_url)
    db.upgrade(engine)
    layout = CertLayout(cfg.certs_dir)
    node_client = None
    if with_node_client:
        if cfg.tls:
            ctx = client_context(layout.ca_cert, layout.server_cert(ADMIN_NAME),
                                 layout.server_key(ADMIN_NAME))
            node_client = NodeStateClient(ctx)
        else:
            node_client = NodeStateClient(None, load_private_key(layout.token_private_key))
    service = AdminService(cfg, db.session_factory(engine), node_client)
    # The configuration's list only starts the membership; the database holds it afterwards.
    service.membership.bootstrap(cfg.servers)
    service.refresh_node_names()
    return service


async def serve(cfg):
    service = open_service(cfg)
    layout = CertLayout(cfg.certs_dir)
    authenticator = Authenticator(load_public_key(layout.token_public_key), service.node_names,
                                  None if cfg.tls else (layout.root / "peer-secret").read_text().strip())
    ctx = server_context(layout.server_cert(ADMIN_NAME), layout.server_key(ADMIN_NAME),
                         layout.ca_cert) if cfg.tls else None
    receiver = start_syslog_receiver(cfg, service, ctx)
    service.syslog = open_syslog(cfg, layout)
    service.builtin_receiver = receiver is not None
    if service.syslog is not None:
        service.syslog.start()
    app = make_app(service, authenticator, openapi_document())
    # Small bodies for everybody; the nodes' reports may be long (common/limits.py).
    server = LimitedHTTPServer(app, ServerLimits.from_config(cfg),
                               node_callers(authenticator, ("/api/v1/reports",)),
                               ssl_options=ctx, max_header_size=MAX_HEADER_READ)
    u = urlsplit(cfg.admin_url)
    server.listen(u.port, address=u.hostname)
    log.info("admin server listening on %s (database %s)", cfg.admin_url,
             service.sessions.kw["bind"].url.render_as_string(hide_password=True))
    heap.settle()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    housekeeping = asyncio.ensure_future(_housekeeping(service, stop))
    await stop.wait()
    housekeeping.cancel()
    server.stop()
    if service.syslog is not None:
        await service.syslog.close()
    if receiver is not None:
        receiver.close()
        await service.recorder.flush()
    await server.close_all_connections()


def start_syslog_receiver(cfg, service, ctx):
    """The built-in receiver (the default) on the configured syslog port, when there is one."""
    if cfg.syslog_host or not cfg.syslog_port:
        return None
    from .event_recorder import EventRecorder
    from .syslog_receiver import SyslogReceiver

    service.recorder = EventRecorder(service.record_events)
    receiver = SyslogReceiver(cfg.admin_data_dir / "audit.log", service.recorder.add, ctx,
                              limits=ServerLimits.from_config(cfg),
                              allowed_roles={"node", "admin"} if ctx else None,
                              allowed_names=service.syslog_names if ctx else None)
    receiver.listen(cfg.syslog_port, address=urlsplit(cfg.admin_url).hostname)
    service.receiver_stats = lambda: dict(receiver.stats(), not_stored=service.recorder.failed)
    log.info("syslog receiver on port %d (%s)", cfg.syslog_port, "TLS" if ctx else "TCP")
    return receiver


def open_syslog(cfg, layout):
    """The admin server's own audit messages go where the nodes' go (its own receiver
    first, then the other instances')."""
    targets = cfg.syslog_endpoints()
    if not targets:
        return None
    from securifile.common.syslog_sender import SyslogSender
    ctx = client_context(layout.ca_cert, layout.server_cert(ADMIN_NAME),
                         layout.server_key(ADMIN_NAME)) if cfg.tls else None
    return SyslogSender(targets, None, ctx, app_name="securifile-admin", hostname="admin")


async def _housekeeping(service, stop):
    """Every few seconds: re-judge server statuses (a server that went silent changes no
    row by itself) and mark purged the removed accounts' namespaces the nodes emptied;
    every minute: forget old events, samples and deletions."""
    rounds = 0
    while not stop.is_set():
        try:
            await asyncio.to_thread(service.refresh_node_names)  # changed by the CLI, say
            await asyncio.to_thread(service.servers.recompute_now)
            await asyncio.to_thread(service.finish_purges)
            if rounds % 12 == 0:
                await asyncio.to_thread(service.prune_events)
                await asyncio.to_thread(service.prune_samples)
                await asyncio.to_thread(service.quotas.prune_expired)
        except Exception:
            log.exception("housekeeping failed")
        rounds += 1
        try:
            await asyncio.wait_for(stop.wait(), 5)
        except asyncio.TimeoutError:
            pass


def read_password(args):
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            raise ApiError("no password on standard input", code="missing_password")
        return line
    if not sys.stdin.isatty():
        return None  # the owner enrols with the e-mailed code
    first = getpass.getpass("Password (empty: the owner sets it with an e-mailed code): ")
    if first and getpass.getpass("Again: ") != first:
        raise ApiError("the passwords differ", code="password_mismatch")
    return first or None


def run_command(cfg, args):
    if args.command == "serve":
        eventloop.run(serve(cfg), cfg.event_loop)
        return 0
    if args.command == "db":
        service = open_service(cfg, with_node_client=False)
        print(f"database at the newest schema: {cfg.effective_database_url.split('@')[-1]}")
        del service
        return 0
    if args.command == "user":
        service = open_service(cfg, with_node_client=False)
        if args.user_command == "add":
            result = asyncio.run(service.create_user(
                args.name, args.email, args.valid_days, read_password(args), args.admin,
                by="securifile-admin", quota_bytes=args.quota))
            print(json.dumps(result, indent=2))
            return 0
        if args.user_command == "set-quota":
            result = asyncio.run(service.set_quota(args.name, args.size, by="securifile-admin"))
            print(json.dumps(result, indent=2))
            return 0
        if args.user_command == "enrol":
            result = asyncio.run(service.reset_enrolment(args.name, by="securifile-admin"))
            print(json.dumps(result, indent=2))
            return 0
        if args.user_command == "remove":
            asyncio.run(service.remove_user(args.name, by="securifile-admin"))
            print(f"removed {args.name}")
            return 0
        for u in service.catalog.users(limit=100000):
            print(f"{u['username']:<20} {u['email']:<32} until {u['valid_until'][:10]} "
                  f"{'admin ' if u['admin'] else ''}{'disabled' if u['disabled'] else ''}"
                  f" files={u['file_count']} bytes={u['total_bytes']}"
                  f" quota={'none' if u['quota_bytes'] is None else u['quota_bytes']} id={u['id']}")
        return 0
    if args.command == "server" and args.state in ("add", "drain", "remove"):
        service = open_service(cfg, with_node_client=False)
        result = service.change_membership(args.state, args.name, "securifile-admin",
                                           getattr(args, "url", None))
        print(f"{args.state} {args.name}: membership epoch {result['epoch']}: "
              + ", ".join(f"{x['name']} ({x['state']})" for x in result["servers"]))
        return 0
    if args.command == "server" and args.state == "list":
        print_servers(open_service(cfg, with_node_client=False))
        return 0
    if args.command == "server":
        async def change():
            service = open_service(cfg)
            await service.set_server_state(args.name, args.state, "securifile-admin")
        asyncio.run(change())
        print(f"{args.name} is {args.state}")
        return 0
    return 2


def build_parser():
    p = argparse.ArgumentParser(prog="securifile-admin", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="cluster TOML file")
    p.add_argument("--no-tls", dest="tls", action="store_const", const=False, default=None)
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the admin server")
    d = sub.add_parser("db", help="database schema")
    d.add_argument("db_command", choices=["upgrade"])
    u = sub.add_parser("user", help="accounts")
    us = u.add_subparsers(dest="user_command", required=True)
    add = us.add_parser("add", help="create an account and e-mail its owner (an enrolment code "
                        "unless a password is given)")
    add.add_argument("name")
    add.add_argument("--email", required=True)
    add.add_argument("--valid-days", type=float, default=365)
    add.add_argument("--admin", action="store_true")
    add.add_argument("--quota", type=size_argument, default=None, metavar="SIZE",
                     help="bytes, or 10G, 500M (binary units); none (default): no limit")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    sq = us.add_parser("set-quota", help="set or lift an account's quota (each file counted "
                       "once, whatever the replicas)")
    sq.add_argument("name")
    sq.add_argument("size", type=size_argument,
                    help="bytes, or 10G, 500M (binary units); none or unlimited: no limit")
    en = us.add_parser("enrol", help="e-mail a user a new enrolment code (older codes die)")
    en.add_argument("name")
    rm = us.add_parser("remove", help="remove an account")
    rm.add_argument("name")
    us.add_parser("list", help="list accounts")
    s = sub.add_parser("server", help="servers: list, add, drain, remove; offline or online")
    ss = s.add_subparsers(dest="state", required=True)
    for state, text in (("offline", "take a server offline"), ("online", "put it back online"),
                        ("drain", "copy every file a server holds to the others, place nothing "
                         "new on it"),
                        ("remove", "take a drained server out of the cluster")):
        ss.add_parser(state, help=text).add_argument("name")
    sa = ss.add_parser("add", help="add a server to the running cluster")
    sa.add_argument("name")
    sa.add_argument("--url", required=True, help="https://HOST:PORT the server listens on")
    ss.add_parser("list", help="the membership: each server's state, epoch and files left")
    return p


def print_servers(service):
    m = service.membership.status()
    print(f"membership epoch {m['epoch']} "
          f"({'known to a majority' if m['committed'] else 'not yet known to a majority'})")
    for x in m["servers"]:
        left = f" files_left={x['files_left']}" if x["files_left"] is not None else ""
        print(f"{x['name']:<16} {x['url']:<32} {x['state']:<9} epoch={x['known_epoch']}{left}")


def main(argv=None):
    restrict_umask()
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, overrides={"tls": args.tls})
    setup_logging(args.log_level if args.command == "serve" else "WARNING", "admin", cfg.tls)
    try:
        return run_command(cfg, args)
    except ApiError as e:
        print(f"securifile-admin: {e.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
