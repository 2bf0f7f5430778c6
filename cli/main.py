"""``securifile``: the command-line client and ``up``.

Files: put, get, rm, stat, ls, status. Login: login, logout, renew, whoami. Sharing and accounts:
share, unshare, grants, shared, users, and for administrators ``admin ...``.

Servers and credentials come from the launcher's ``cluster.json`` (``--cluster`` or
``SECURIFILE_CLUSTER``), else from what ``securifile login`` saved, overridden by
``--server``, ``--ca``, ``--cert``/``--key`` and ``--token-file``. With an admin server the
list of running servers comes from it. Exit status: 0 done, 1 the operation failed (the
server's message is printed), 2 bad usage.
"""
import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from securifile.client.admin import AdminClient
from securifile.client.errors import ClientError, FileNotFound, LocalFileError, ServerError
from securifile.client.files import parse_remote
from securifile.client.plans import MAX_PARALLEL, PARALLEL
from securifile.client.resumable import continue_download, resume_uploads
from securifile.client.settings import ClientSettings, LoginFolder, read_token_file
from securifile.client.storage import Client
from securifile.common.roles import ROLES
from securifile.common.sizes import size_argument
from . import control, login
from .output import UsageError, human_size, when
from .progress import TransferProgress

PROG = "securifile"
CLUSTER_ENV = "SECURIFILE_CLUSTER"
TOKEN_ENV = "SECURIFILE_TOKEN"
LOGIN_HINT = "run 'securifile login --admin URL --user NAME'"


def _connection_options():
    """Options accepted before or after the subcommand (defaults set on the main parser)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("cluster and credentials")
    S = argparse.SUPPRESS
    g.add_argument("--cluster", metavar="PATH", default=S,
                   help=f"cluster.json written by 'securifile up' (default: ${CLUSTER_ENV})")
    g.add_argument("--server", metavar="URL", action="append", default=S,
                   help="a storage node URL (repeat for each); replaces the cluster file's list")
    g.add_argument("--ca", metavar="PEM", default=S, help="CA certificate to trust")
    g.add_argument("--cert", metavar="PEM", default=S, help="client certificate (mutual TLS)")
    g.add_argument("--key", metavar="PEM", default=S, help="client certificate's private key")
    g.add_argument("--token-file", metavar="PATH", default=S,
                   help=f"file holding a bearer token (or set ${TOKEN_ENV})")
    g.add_argument("--timeout", metavar="SECONDS", type=float, default=S,
                   help="longest silence on a connection (default 60)")
    g.add_argument("--wait", metavar="SECONDS", type=float, default=S,
                   help="how long to keep asking while no server serves, as during a "
                        "restart (default 15)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=S,
                   help="show a progress bar (default: on a terminal or for large transfers)")
    g.add_argument("-q", "--quiet", action="store_true", default=S,
                   help="print nothing but errors")
    return p


CONNECTION_DEFAULTS = dict(cluster=None, server=None, ca=None, cert=None, key=None,
                           token_file=None, timeout=60.0, wait=15.0, progress=None, quiet=False)


def _parallel_option(parser, done):
    def count(text):
        try:
            n = int(text)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_PARALLEL:
            raise argparse.ArgumentTypeError(f"a number from 1 to {MAX_PARALLEL}")
        return n

    parser.add_argument("-P", "--parallel", type=count, default=PARALLEL, metavar="N",
                        help=f"files of a folder {done} at a time (default {PARALLEL}; 1: one "
                             "after another)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[_connection_options()],
        description="SecuriFile: store and fetch files on a SecuriFile cluster.",
        epilog="Remote names are owner/path; a trailing '/' names a folder. "
               "'securifile up --help' starts a local cluster.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, help_text):
        # a fresh copy each time: parsers built from one parent share its Action objects
        return sub.add_parser(name, parents=[_connection_options()], help=help_text,
                              description=help_text)

    p = command("put", "upload a file, or a folder recursively")
    p.add_argument("local", metavar="LOCAL", help="a local file or folder")
    p.add_argument("remote", metavar="REMOTE",
                   help="owner/path; for a folder LOCAL, its files go under REMOTE/")
    p.add_argument("--json", action="store_true", help="print the servers' records as JSON")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start an interrupted upload over instead of resuming it (files of "
                        "4 MiB or more resume by default, after a broken connection or when "
                        "the same command is run again)")
    _parallel_option(p, "uploaded")

    p = command("get", "download a file, or a folder (owner/dir/) recursively")
    p.add_argument("remote", metavar="REMOTE", help="owner/path, or owner/dir/ for a folder")
    p.add_argument("local", metavar="LOCAL", nargs="?", default=".",
                   help="target file or folder (default: current folder; '-' for stdout)")
    p.add_argument("-c", "--continue", dest="resume", action="store_true",
                   help="keep the bytes a partial LOCAL file holds and fetch only the rest "
                        "(Range); the whole file's digest is checked at the end")
    _parallel_option(p, "downloaded")

    p = command("rm", "delete a file (owner only)")
    p.add_argument("remote", metavar="REMOTE")
    p.add_argument("-r", "--recursive", action="store_true", help="delete everything under a folder")
    _parallel_option(p, "deleted")

    p = command("stat", "show a file's size, digest, version and where it is stored")
    p.add_argument("remote", metavar="REMOTE")

    p = command("ls", "list the files under a folder, recursively")
    p.add_argument("prefix", metavar="PREFIX", nargs="?",
                   help="owner or owner/dir (default: your own namespace)")
    p.add_argument("-l", "--long", action="store_true", help="also show origin and replicas")
    p.add_argument("--json", action="store_true", help="print the records as JSON")

    command("status", "show every server's status")

    p = command("login", "log in at the admin server and keep a certificate and token here")
    p.add_argument("--admin", metavar="URL", help="the admin server (default: the last login's)")
    p.add_argument("--user", metavar="NAME", help="user name or e-mail (default: the last login's)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input (the default when it is not a terminal)")
    p.add_argument("--json", action="store_true", help="print what was saved as JSON")
    command("logout", "revoke the saved token and certificate at the admin server and forget "
                      "them here")
    command("renew", "get a fresh short-lived client certificate for the saved login now "
                     "(other commands renew it when half its life is gone)")
    p = command("enrol", "set your first password with the enrolment code from the account e-mail")
    p.add_argument("--admin", metavar="URL", help="the admin server named in the e-mail")
    p.add_argument("--user", metavar="NAME", help="your user name")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the code and then the new password, one line each, from standard "
                        "input (the default when it is not a terminal)")

    def control_command(name, help_text):
        p = command(name, help_text)
        p.add_argument("--json", action="store_true", help="print the server's answer as JSON")
        return p

    control_command("whoami", "show your account and where your login is kept")
    p = control_command("users", "list the users with their number of files and volume "
                                 "(administrators: everyone; others: themselves and whom they "
                                 "share with)")
    p.add_argument("name", metavar="NAME", nargs="?", help="look up exactly this user name")
    p = control_command("passwd", "change your password")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the current and then the new password, one line each, from "
                        "standard input (the default when it is not a terminal)")
    p = control_command("share", "give a user a role on a file or a folder (owner or master)")
    p.add_argument("target", metavar="TARGET", help="owner/path for a file, owner/dir/ for a folder")
    p.add_argument("user", metavar="USER")
    p.add_argument("role", metavar="ROLE", choices=ROLES, help=", ".join(ROLES))
    p = control_command("unshare", "take a user's role on a file or folder away")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("user", metavar="USER")
    p = control_command("grants", "show who has which role on a file or folder")
    p.add_argument("target", metavar="TARGET")
    control_command("shared", "list what other users shared with you")

    p = command("admin", "administrators: accounts and servers")
    admin_sub = p.add_subparsers(dest="admin_command", metavar="ACTION", required=True)

    def admin_action(name, help_text):
        q = admin_sub.add_parser(name, parents=[_connection_options()], help=help_text,
                                 description=help_text)
        q.add_argument("--json", action="store_true", help="print the server's answer as JSON")
        return q

    q = admin_action("user-add", "create an account and e-mail its owner an enrolment code")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--email", required=True, metavar="ADDRESS")
    q.add_argument("--valid-days", type=float, default=365, metavar="DAYS",
                   help="how long the account is valid (default 365)")
    q.add_argument("--admin", action="store_true", help="make the account an administrator")
    q.add_argument("--quota", type=size_argument, default=None, metavar="SIZE",
                   help="what the account's files may take, each counted once whatever the "
                        "replicas: bytes, or 10G, 500M (binary units); none (the default): "
                        "no limit")
    q.add_argument("--password-stdin", action="store_true",
                   help="read the initial password from standard input (default: the owner "
                        "sets it with the e-mailed enrolment code)")
    q = admin_action("user-set-quota", "set or lift an account's quota")
    q.add_argument("name", metavar="NAME")
    q.add_argument("size", metavar="SIZE", type=size_argument,
                   help="bytes, or 10G, 500M (binary units); none or unlimited: no limit")
    q = admin_action("user-enrol", "e-mail a user a new enrolment code (a forgotten password)")
    q.add_argument("name", metavar="NAME")
    q = admin_action("user-remove", "remove an account (its grants go with it)")
    q.add_argument("name", metavar="NAME")
    q = admin_action("offline", "take a storage server offline for repair")
    q.add_argument("node", metavar="NODE")
    q = admin_action("online", "put a storage server back online (it is verified first)")
    q.add_argument("node", metavar="NODE")
    admin_action("servers", "list the storage servers with status, storage and membership "
                            "(member, or draining with the files left on it)")
    q = admin_action("server-add", "add a storage server to the running cluster")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--url", required=True, metavar="URL", help="https://HOST:PORT it listens on")
    q = admin_action("server-drain", "move every copy off a server; nothing new goes to it")
    q.add_argument("name", metavar="NAME")
    q = admin_action("server-remove", "take a drained server out of the cluster")
    q.add_argument("name", metavar="NAME")

    sub.add_parser("up", help="start a local cluster (see 'securifile up --help')", add_help=False)
    return parser


def parse_args(argv):
    """Parse ``argv``; connection options may come before or after the subcommand."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in CONNECTION_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return parser, args


def load_settings(args, env=None):
    """ClientSettings from the cluster file (else the saved login), the environment, the flags."""
    env = os.environ if env is None else env
    cluster = args.cluster or env.get(CLUSTER_ENV)
    if cluster:
        settings = ClientSettings.from_cluster_file(cluster)
    else:
        folder = LoginFolder.default(env)
        settings = folder.settings() if folder is not None and folder.exists() else ClientSettings([])
    if args.server:
        settings.servers = list(args.server)
    if args.ca:
        settings.ca = args.ca
    if args.cert:
        settings.cert, settings.key = args.cert, args.key or args.cert
    elif args.key:
        raise UsageError("--key needs --cert")
    if env.get(TOKEN_ENV):
        settings.token = env[TOKEN_ENV].strip()
    if args.token_file:
        settings.token = read_token_file(args.token_file)
    if not settings.servers and not settings.admin_url:
        raise UsageError(
            f"no servers: {LOGIN_HINT}, pass --cluster PATH (the cluster.json 'securifile up' "
            f"writes), set {CLUSTER_ENV}, or give --server URL")
    return settings


def admin_client(settings, args):
    if not settings.admin_url:
        raise UsageError(f"no admin server known: {LOGIN_HINT}, or use a cluster.json that names one")
    return AdminClient.from_settings(settings, timeout=args.timeout)


def _replicas(record):
    reps = sorted(record.get("replicas") or [], key=lambda r: r.get("priority", 0))
    return ",".join(f"{r.get('server')}({r.get('priority')})" for r in reps) or "-"


class Commands:
    """The subcommands, each given parsed arguments and a Client."""

    def __init__(self, client, args, settings, out=None, err=None):
        self.client, self.args, self.settings = client, args, settings
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def say(self, text):
        if not self.args.quiet:
            print(text, file=self.out, flush=True)

    def progress(self, desc):
        return TransferProgress(desc, mode=False if self.args.quiet else self.args.progress,
                                stream=self.err)

    def put(self):
        args = self.args
        if not Path(args.local).exists():
            raise LocalFileError(f"{args.local}: no such file or folder")
        records = []

        def done(local, remote, record):
            records.append(record)
            if not args.json:
                state = " (under-replicated)" if record.get("under_replicated") else ""
                self.say(f"{local} -> {remote}  {human_size(record.get('size'))}  "
                         f"v{record.get('version')}  origin {record.get('origin')}  "
                         f"replicas {_replicas(record)}{state}")

        resume_uploads(self.client, resume=args.resume, on_resume=lambda offset, size: print(
            f"{PROG}: resuming the upload at {human_size(offset)} of {human_size(size)} "
            f"({offset} bytes there)", file=self.err, flush=True))
        with self.progress(f"put {args.remote}") as bar:
            self.client.put_tree(args.local, args.remote, progress=bar, on_file=done,
                                 parallel=args.parallel)
        if args.json:
            print(json.dumps(records, indent=2), file=self.out)
        return 0

    def get(self):
        args = self.args
        remote = args.remote
        if remote.endswith("/") or "/" not in remote:
            return self._get_folder(remote)
        if args.local == "-":
            self.client.download(remote, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return 0
        target = Path(args.local)
        if target.is_dir():
            target = target / parse_remote(remote).segments[-1]
        try:
            with self.progress(f"get {remote}") as bar:
                if args.resume:
                    info = continue_download(self.client, remote, target, progress=bar)
                    if info["continued_from"]:
                        print(f"{PROG}: continued {target} from byte {info['continued_from']}",
                              file=self.err, flush=True)
                else:
                    info = self.client.get(remote, target, progress=bar)
        except FileNotFound:
            # owner/dir without the slash: fetch the folder if there is one
            if self.client.list(remote):
                return self._get_folder(remote + "/")
            raise
        self.say(f"{remote} -> {target}  {human_size(info['size'])}  v{info.get('version')}"
                 f"  {info.get('algorithm')} {'verified' if info.get('verified') else 'NOT VERIFIED'}")
        return 0

    def _get_folder(self, remote):
        if self.args.local == "-":
            raise UsageError("a folder cannot be written to stdout")
        root = Path(self.args.local)

        def done(remote_name, local, info):
            self.say(f"{remote_name} -> {local}  {human_size(info['size'])}")

        with self.progress(f"get {remote}") as bar:
            results = self.client.get_tree(remote, root, progress=bar, on_file=done,
                                           parallel=self.args.parallel)
        if not results:
            self.say(f"{remote}: no files")
        return 0

    def rm(self):
        args = self.args
        remote = args.remote
        if remote.endswith("/") or "/" not in remote:
            if not args.recursive:
                raise UsageError(f"{remote} is a folder: use rm -r to delete what is under it")
            files = self.client.list(remote)
            self.client.delete_all([f"{r['owner']}/{r['path']}" for r in files],
                                   on_file=lambda name, *_: self.say(f"deleted {name}"),
                                   parallel=args.parallel)
            if not files:
                self.say(f"{remote}: no files")
            return 0
        self.client.delete(remote)
        self.say(f"deleted {remote}")
        return 0

    def stat(self):
        remote = self.args.remote
        fp = parse_remote(remote)
        info = self.client.stat(remote)
        # HEAD says what the bytes are; the parent's listing says where they live.
        parent = fp.owner + "/" + fp.rel.rpartition("/")[0]
        try:
            for record in self.client.list(parent):
                if record.get("owner") == fp.owner and record.get("path") == fp.rel:
                    info.update({k: record[k] for k in ("origin", "replicas", "modified") if k in record})
                    break
        except ServerError:
            pass
        print(json.dumps(info, indent=2), file=self.out)
        return 0

    def ls(self):
        args = self.args
        prefix = args.prefix or self.settings.username
        if not prefix:
            raise UsageError("ls needs a PREFIX (owner or owner/dir)")
        files = sorted(self.client.list(prefix), key=lambda r: (r.get("owner", ""), r.get("path", "")))
        if args.json:
            print(json.dumps(files, indent=2), file=self.out)
            return 0
        for r in files:
            line = (f"{human_size(r.get('size')):>10}  v{r.get('version', '?'):<4} "
                    f"{when(r.get('modified')):<19}  {r.get('owner')}/{r.get('path')}")
            if args.long:
                line += f"  origin {r.get('origin')}  replicas {_replicas(r)}"
            print(line, file=self.out)
        return 0

    def status(self):
        worst = 0
        for url, st in self.client.cluster_status().items():
            if isinstance(st, Exception):
                worst = 1
                print(f"{url}  unreachable: {st}", file=self.out)
                continue
            peers = " ".join(f"{p.get('name')}:{p.get('status')}" for p in st.get("peers", []))
            tls = "" if st.get("tls", True) else "  TLS OFF"
            print(f"{url}  {st.get('name')}  {st.get('status')}  used {human_size(st.get('used_bytes'))}"
                  f"  available {human_size(st.get('available_bytes'))}  peers {peers or '-'}{tls}",
                  file=self.out)
        return worst


def run_launcher(argv):
    """``securifile up ...``: hand over to the cluster launcher."""
    try:
        from securifile.launcher import cluster
    except ImportError as e:
        print(f"{PROG}: the cluster launcher is not installed ({e})", file=sys.stderr)
        return 1
    return cluster.main(argv) or 0


def run(args, env=None):
    """Run the parsed command; returns the exit status (errors raise)."""
    env = os.environ if env is None else env
    if args.command == "login":
        return login.login(args, env, sys.stdout)
    if args.command == "logout":
        return login.logout(args, env, sys.stdout)
    if args.command == "enrol":
        return login.enrol(args, env, sys.stdout)
    if args.command == "renew":
        return login.renew_command(args, env, sys.stdout)
    if not (args.cluster or env.get(CLUSTER_ENV) or args.cert):
        login.renew_if_due(env, args.timeout, sys.stderr)
    settings = load_settings(args, env)
    plain = [u for u in [settings.admin_url, *settings.servers] if u and u.startswith("http:")]
    if plain:
        login.warn_plain_text(plain[0])
    if args.command in control.COMMANDS:
        with admin_client(settings, args) as admin:
            return control.ControlCommands(admin, args, settings, env=env).run()
    if args.server:  # servers named on the command line are used as given
        settings = dataclasses.replace(settings, admin_url=None)
    with Client.from_settings(settings, timeout=args.timeout, unavailable_wait=args.wait) as client:
        return getattr(Commands(client, args, settings), args.command)()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "up":
        return run_launcher(argv[1:])
    parser, args = parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except ServerError as e:
        hint = f"; {LOGIN_HINT} to sign in again" if e.status == 401 else ""
        print(f"{PROG}: {e.message} ({e.code}, HTTP {e.status}){hint}", file=sys.stderr)
        return 1
    except ClientError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
