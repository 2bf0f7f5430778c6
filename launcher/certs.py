"""``securifile-certs``: the system's CA, server and user certificates, and user tokens.

    securifile-certs --dir certs init
    securifile-certs --dir certs server node4 [--host 10.0.0.4] [--role admin]
    securifile-certs --dir certs user alice --days 365
    securifile-certs --dir certs monitor prometheus --days 825
    securifile-certs --dir certs token alice --days 1 > alice.token
"""
import argparse
import datetime
import secrets
import sys
from pathlib import Path

from securifile.common.certnames import ROLE_ADMIN, ROLE_NODE, CertLayout, server_identity
from securifile.common.certs import (
    DEFAULT_SERVER_NAMES, ensure_ca, ensure_monitor_cert, ensure_server_cert, ensure_user_cert)
from securifile.common.paths import check_username
from securifile.common.tokens import load_private_key, mint_token


def ensure_peer_secret(layout):
    """The shared secret nodes present to each other when TLS is off (debug mode only)."""
    path = layout.root / "peer-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path


def issue_user(layout, ca, username, days, uid=None):
    """The user's certificate for ``days``; ``uid``: the account's id on the admin server
    (without it only a cluster without an admin server accepts the certificate)."""
    not_after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)
    return ensure_user_cert(layout, ca, check_username(username), not_after, uid)


def write_token(layout, username, days, path=None, admin=False, uid=None):
    token, _exp = mint_token(load_private_key(layout.token_private_key), username,
                             int(days * 86400), admin=admin, uid=uid)
    if path is None:
        return token
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(token + "\n")
    return path


def rsyslog_permitted_peers(node_names, admin_name="admin"):
    """The rsyslog array (scripts/rsyslog.conf @PERMITTED_PEERS@) of the servers allowed to
    write the audit log: the admin server and the configured nodes, by identity name."""
    names = [server_identity(admin_name, ROLE_ADMIN)]
    names += [server_identity(n, ROLE_NODE) for n in node_names]
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


def main(argv=None):
    p = argparse.ArgumentParser(prog="securifile-certs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="certs", help="certificate folder (default: certs)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create the CA and the token signing key if missing")
    s = sub.add_parser("server", help="issue a server certificate")
    s.add_argument("name")
    s.add_argument("--host", action="append", default=[], help="extra host name or IP for the SAN")
    s.add_argument("--role", choices=[ROLE_NODE, ROLE_ADMIN], default=ROLE_NODE)
    u = sub.add_parser("user", help="issue a user's client certificate")
    u.add_argument("name")
    u.add_argument("--days", type=float, default=7)
    u.add_argument("--uid", help="the account's id on the admin server (securifile-admin "
                                 "user list shows it)")
    m = sub.add_parser("monitor", help="issue a client certificate that may only read /metrics")
    m.add_argument("name")
    m.add_argument("--days", type=float, default=825)
    t = sub.add_parser("token", help="print a signed bearer token for a user")
    t.add_argument("name")
    t.add_argument("--days", type=float, default=1)
    t.add_argument("--admin", action="store_true")
    t.add_argument("--uid", help="the account's id on the admin server")
    r = sub.add_parser("rsyslog-peers", help="print rsyslog's permittedPeer array for these nodes")
    r.add_argument("nodes", nargs="+", metavar="NODE")
    args = p.parse_args(argv)
    if args.command == "rsyslog-peers":
        print(rsyslog_permitted_peers(args.nodes))
        return 0

    layout = CertLayout(Path(args.dir))
    ca = ensure_ca(layout)
    if args.command == "init":
        ensure_peer_secret(layout)
        print(layout.ca_cert)
    elif args.command == "server":
        cert, _key = ensure_server_cert(layout, ca, args.name, args.role,
                                        (*DEFAULT_SERVER_NAMES, *args.host))
        print(cert)
    elif args.command == "user":
        cert, _key = issue_user(layout, ca, args.name, args.days, args.uid)
        print(cert)
    elif args.command == "monitor":
        cert, _key = ensure_monitor_cert(layout, ca, check_username(args.name), args.days)
        print(cert)
    elif args.command == "token":
        print(write_token(layout, check_username(args.name), args.days, admin=args.admin,
                          uid=args.uid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
