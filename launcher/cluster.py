"""``securifile up``: create certificates, start every server as its own process, wait, serve.

    securifile up --servers 3 --replicas 1 [--no-tls] [--data-dir var] [--base-port 8441]

Writes DATA_DIR/cluster.toml (what the nodes read) and DATA_DIR/cluster.json (what scripts
and clients read: servers with URLs and PIDs, the CA, the first user's credentials), prints a
curl example that works as printed, and stops everything on Ctrl-C. The Cluster class is also
what the test fixtures use to start, kill and restart nodes.
"""
import argparse
import asyncio
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit
from pathlib import Path

from securifile.common.certnames import ROLE_ADMIN, CertLayout
from securifile.common.certs import DEFAULT_SERVER_NAMES, ensure_ca, ensure_server_cert
from securifile.common.config import Config, ServerEntry, dump_config, load_config
from securifile.common.private_files import private_dir, private_file, restrict_umask
from securifile.common.tls import client_context

from .certs import ensure_peer_secret, issue_user, write_token

ADMIN_NAME = "admin"
# A node trusts only its cluster's CA, named in its configuration; aiohttp loads the system's
# CA store into two default contexts at import all the same (2.4-3.2 MiB of a node's peak
# memory, docs/PERFORMANCE.md "A node's memory without the system's CA store"). Pointing
# OpenSSL's default paths at nothing leaves them empty. The systemd unit sets the same.
NODE_ENV = {"SSL_CERT_FILE": os.devnull, "SSL_CERT_DIR": os.devnull}
SECOND_ADMIN = "admin2"  # the second admin server instance's process (admin_instances=2)


def port_in_use(host, port):
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def url_host(host):
    return f"[{host}]" if ":" in host else host


def server_names(host):
    """What a server certificate names: the loopback names, and the server's own address."""
    return tuple(dict.fromkeys((*DEFAULT_SERVER_NAMES, host)))


def free_ports(count, host="127.0.0.1"):
    """Ports the kernel says are free now (held open together so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Cluster:
    """A set of node processes described by one cluster.toml in ``data_dir``."""

    def __init__(self, data_dir, config_path, user=None):
        self.data_dir = Path(data_dir).resolve()
        self.config_path = Path(config_path)
        self.cfg = load_config(self.config_path)
        self.layout = CertLayout(self.cfg.certs_dir)
        self.procs = {}
        self.user = user or {}
        self.added = {}  # name -> (ServerEntry, its own configuration file): see new_server

    @classmethod
    def create(cls, data_dir, servers=3, replicas=1, tls=True, base_port=8441, host="127.0.0.1",
               certs_dir=None, username="alice", user_days=30, admin=True, hosts=None,
               admin_host=None, admin_instances=1, **settings):
        """Write certificates, configuration and first accounts for a new cluster.

        ``admin_instances=2``: a second admin server instance (process ``admin2``, its own
        port, syslog receiver and DATA_DIR/admin2/ folder) on the same database, which must
        then be PostgreSQL (``database_url``); nodes and clients get both URLs.

        Ports: nodes from ``base_port`` up, the admin server just below, its syslog receiver
        at ``base_port + 73`` (8514 by default); ``base_port=0`` takes free ports for all.
        Every server listens on ``host`` unless ``hosts`` (one per node) and ``admin_host``
        give each its own address (servers in network namespaces); each certificate names
        its server's address. Nothing is started.
        """
        data_dir = private_dir(Path(data_dir).resolve())
        certs_dir = Path(certs_dir).resolve() if certs_dir else data_dir / "certs"
        hosts = list(hosts or [host] * servers)
        admin_host = admin_host or host
        if len(hosts) != servers:
            raise ValueError(f"{servers} servers need {servers} hosts, not {len(hosts)}")
        if admin_instances not in (1, 2) or (admin_instances == 2 and not admin):
            raise ValueError("admin_instances is 1 or 2 (and 2 needs the admin server)")
        if admin_instances == 2 and not str(settings.get("database_url", "")).startswith(
                "postgresql"):
            raise ValueError("two admin server instances need one PostgreSQL database "
                             "(database_url); SQLite serves one instance only")
        if base_port:
            ports = list(range(base_port, base_port + servers))
            admin_ports, syslog_ports = [base_port - 1, base_port - 2], [base_port + 73,
                                                                         base_port + 74]
        else:
            *ports, a1, a2, s1, s2 = free_ports(servers + 4, host)
            admin_ports, syslog_ports = [a1, a2], [s1, s2]
        scheme = "https" if tls else "http"
        entries = [ServerEntry(f"node{i + 1}", f"{scheme}://{url_host(hosts[i])}:{port}")
                   for i, port in enumerate(ports)]
        admin_urls = [f"{scheme}://{url_host(admin_host)}:{p}" for p in admin_ports]
        if admin:
            settings.setdefault("admin_url", admin_urls[0])
            settings.setdefault("syslog_port", syslog_ports[0])
        if admin_instances == 2:
            settings["admin_urls"] = admin_urls
            settings["syslog_targets"] = [f"{url_host(admin_host)}:{p}" for p in syslog_ports]
        cfg = Config(servers=entries, replicas=replicas, tls=tls, certs_dir=certs_dir,
                     data_dir=data_dir, **settings).validate()
        layout = CertLayout(certs_dir)
        ca = ensure_ca(layout)
        ensure_peer_secret(layout)
        for s in entries:
            ensure_server_cert(layout, ca, s.name, hosts=server_names(s.host))
        config_path = data_dir / "cluster.toml"
        private_file(config_path).write_text(dump_config(cfg))
        if admin_instances == 2:  # the second instance: its own URL, receiver and folder
            second = dataclasses.replace(cfg, admin_url=admin_urls[1], syslog_port=syslog_ports[1],
                                         data_dir=data_dir / SECOND_ADMIN)
            private_file(data_dir / f"{SECOND_ADMIN}.toml").write_text(dump_config(second))
        user, uids = {}, {}
        if admin:
            ensure_server_cert(layout, ca, ADMIN_NAME, ROLE_ADMIN, server_names(admin_host))
            uids = first_accounts(cfg, data_dir / "credentials", username, user_days)
        if username:
            # Short-lived like every user certificate; `securifile login` gets fresh ones.
            cert_days = min(user_days, cfg.certificate_seconds / 86400)
            cert, key = issue_user(layout, ca, username, cert_days, uids.get(username))
            token = write_token(layout, username, user_days,
                                data_dir / "credentials" / f"{username}.token",
                                uid=uids.get(username))
            user = {"username": username, "cert": str(cert), "key": str(key),
                    "token_file": str(token)}
            if admin:
                user["credentials"] = str(data_dir / "credentials" / f"{username}.json")
        return cls(data_dir, config_path, user)

    @property
    def has_admin(self):
        return bool(self.cfg.admin_url)

    @property
    def admin_names(self):
        """The admin server processes: ``admin``, and ``admin2`` when there are two."""
        if not self.has_admin:
            return []
        return [ADMIN_NAME, SECOND_ADMIN][:len(self.cfg.admin_endpoints)]

    def url(self, name):
        if name in self.added:
            return self.added[name][0].url
        if name in self.admin_names:
            return self.cfg.admin_endpoints[self.admin_names.index(name)]
        return self.cfg.server(name).url

    def new_server(self, name, host="127.0.0.1", port=None):
        """One more node for the running cluster, not started: a free port, its certificate,
        and its own configuration file listing the cluster's servers and itself (the running
        nodes learn of it once the administrator adds it: ``securifile-admin server add``)."""
        port = port or free_ports(1, host)[0]
        entry = ServerEntry(name, f"{self.cfg.scheme}://{url_host(host)}:{port}")
        ensure_server_cert(self.layout, ensure_ca(self.layout), name, hosts=server_names(host))
        cfg = load_config(self.config_path)
        cfg.servers = [*cfg.servers, entry]
        path = self.data_dir / f"{name}.toml"
        private_file(path).write_text(dump_config(cfg.validate()))
        self.added[name] = (entry, path)
        return entry

    @property
    def names(self):
        return [s.name for s in self.cfg.servers]

    def _spawn(self, name, cmd, env=None):
        log_dir = private_dir(self.data_dir / "logs")
        with open(log_dir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log,
                                                stdin=subprocess.DEVNULL,
                                                env=None if env is None else {**os.environ, **env})
        return self.procs[name]

    def start_node(self, name):
        if name in self.admin_names:
            return self.start_admin(name)
        config = self.added[name][1] if name in self.added else self.config_path
        return self._spawn(name, [sys.executable, "-m", "securifile.nodes.main", "--config",
                                  str(config), "--name", name], NODE_ENV)

    def start_admin(self, name=ADMIN_NAME):
        config = self.config_path if name == ADMIN_NAME else self.data_dir / f"{name}.toml"
        return self._spawn(name, [sys.executable, "-m", "securifile.admin.main", "--config",
                                  str(config), "serve"])

    def start(self, timeout=60):
        if self.has_admin:
            for name in self.admin_names:
                self.start_admin(name)
            self.wait_ready(self.admin_names, timeout)
        for name in self.names:
            self.start_node(name)
        self.wait_ready(self.names, timeout)
        self.write_json()

    def client_ssl_context(self):
        if not self.cfg.tls:
            return None
        return client_context(self.layout.ca_cert)

    def status(self, name, timeout=2.0):
        """A node's /status as a dict, or None when it does not answer."""
        try:
            with urllib.request.urlopen(self.url(name) + "/status", timeout=timeout,
                                        context=self.client_ssl_context()) as r:
                return json.loads(r.read())
        except (OSError, ValueError, ssl.SSLError):
            return None

    def wait_ready(self, names, timeout=30):
        """Wait until each server answers and says it is running and hears a majority (a
        returning node answers first as verifying, until its peers have checked its copies;
        every node first catches up with a majority of its peers)."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            for name in list(pending):
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see "
                                       f"{self.data_dir / 'logs' / (name + '.log')}")
                status = self.status(name)
                if status is not None and status.get("status") == "running" \
                        and status.get("quorum", True):
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"servers not running after {timeout}s: "
                                   + ", ".join(f"{n} ({(self.status(n) or {}).get('status', 'no answer')})" for n in pending))
            if pending:
                time.sleep(0.1)

    def signal(self, name, sig):
        self.procs[name].send_signal(sig)

    def kill(self, name):
        """A crash: SIGKILL, and wait until the process is gone."""
        proc = self.procs[name]
        proc.kill()
        proc.wait(timeout=10)

    def restart(self, name, timeout=30):
        self.start_node(name)
        self.wait_ready([name], timeout)
        self.write_json()

    def stop(self, timeout=10):
        # Nodes first: they flush their last reports and audit lines to the admin server.
        admins = [self.procs[n] for n in self.admin_names if n in self.procs]
        self._terminate([p for p in self.procs.values() if p not in admins], timeout)
        self._terminate(admins, timeout)

    def _terminate(self, procs, timeout):
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def describe(self):
        admin = None
        if self.has_admin:
            proc = self.procs.get(ADMIN_NAME)
            admin = {"url": self.cfg.admin_url, "urls": self.cfg.admin_endpoints,
                     "pid": proc.pid if proc else None,
                     "credentials": str(self.data_dir / "credentials" / "admin.json"),
                     "database": self.cfg.effective_database_url.split("@")[-1]}
        return {
            "config": str(self.config_path),
            "admin": admin,
            "tls": self.cfg.tls,
            "ca_cert": str(self.layout.ca_cert) if self.cfg.tls else None,
            "replicas": self.cfg.replicas,
            "servers": [{"name": s.name, "url": s.url,
                         "pid": self.procs[s.name].pid if s.name in self.procs else None}
                        for s in self.cfg.servers],
            "user": self.user,
        }

    def write_json(self):
        path = self.data_dir / "cluster.json"
        tmp = private_file(path.with_suffix(".json.tmp"))
        tmp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        os.replace(tmp, path)
        return path


def first_accounts(cfg, folder, username, days):
    """The first administrator, and the first user, with their passwords in 0600 files;
    returns {name: account id} for the credentials the launcher writes.

    Run again on an existing data folder, it keeps the accounts and files it made before.
    """
    from securifile.admin.main import open_service
    from securifile.admin.passwords import generate_password
    private_dir(folder)
    service = open_service(cfg, with_node_client=False)
    for name, email, is_admin in (("admin", "admin@localhost", True),
                                  (username, f"{username}@localhost", False)):
        path = folder / f"{name}.json"
        if not name or path.exists():
            continue
        password = generate_password(name, email)
        asyncio.run(service.create_user(name, email, days if not is_admin else 3650, password,
                                        is_admin, by="securifile up"))
        path.touch(mode=0o600)
        path.write_text(json.dumps({"username": name, "password": password,
                                    "admin_url": cfg.admin_url}, indent=2) + "\n")
    uids = {}
    for name in ("admin", username):
        account = service.accounts.get(name) if name else None
        if account is not None:
            uids[name] = account.uid
    service.sessions.kw["bind"].dispose()
    return uids


def curl_examples(cluster):
    first = cluster.cfg.servers[0]
    second = cluster.cfg.servers[min(1, len(cluster.cfg.servers) - 1)]
    user = cluster.user["username"]
    if cluster.cfg.tls:
        cred = (f"--cacert {cluster.layout.ca_cert} --cert {cluster.user['cert']} "
                f"--key {cluster.user['key']}")
    else:
        cred = f"-H \"Authorization: Bearer $(cat {cluster.user['token_file']})\""
    return [
        f"curl {cred} -T README.md {first.url}/files/{user}/docs/README.md",
        f"curl {cred} -L {second.url}/files/{user}/docs/README.md",
        f"curl {cred} {first.url}/files/{user}/",
        f"curl {cred} -X DELETE {first.url}/files/{user}/docs/README.md",
    ]


def main(argv=None):
    restrict_umask()
    p = argparse.ArgumentParser(prog="securifile up", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", type=int, default=3, help="number of storage nodes (n)")
    p.add_argument("--replicas", type=int, default=1, help="replicas per file (0..n-1)")
    p.add_argument("--no-tls", dest="tls", action="store_false", help="plain HTTP (debug only)")
    p.add_argument("--data-dir", default="var", help="where node data and cluster.json live")
    p.add_argument("--certs-dir", default="certs", help="where the CA and certificates live")
    p.add_argument("--base-port", type=int, default=8441, help="first node port; 0 picks free ports")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--user", default="alice", help="the first user, given a certificate and token")
    p.add_argument("--digest", default="sha256", help="sha1, sha256, sha512 or sha3-256")
    p.add_argument("--repair-after", type=float, metavar="SECONDS",
                   default=float(os.environ.get("SECURIFILE_REPAIR_AFTER", 300)),
                   help="replace a holder down or failed this long by a copy elsewhere "
                        "(default 300, or SECURIFILE_REPAIR_AFTER)")
    args = p.parse_args(argv)
    try:
        cluster = Cluster.create(args.data_dir, args.servers, args.replicas, args.tls,
                                 args.base_port, args.host, args.certs_dir, args.user,
                                 digest=args.digest, repair_after=args.repair_after)
    except ValueError as e:
        p.error(str(e))
    busy = [s.url for s in cluster.cfg.servers if port_in_use(s.host, s.port)]
    if cluster.has_admin:
        admin = urlsplit(cluster.cfg.admin_url)
        busy += [f"{admin.hostname}:{p}" for p in (admin.port, cluster.cfg.syslog_port)
                 if port_in_use(admin.hostname, p)]
    if busy:
        print(f"securifile up: already in use: {', '.join(busy)} (another cluster running? "
              "stop it, or pick other ports with --base-port)", file=sys.stderr)
        return 1
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    # Ctrl-C (SIGINT) stops the cluster even when this was started with SIGINT ignored, as a
    # shell does for a background job and Python then leaves it: `kill -INT` must still work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        try:
            cluster.start()
        except (RuntimeError, TimeoutError) as e:
            print(f"securifile up: {e}", file=sys.stderr)
            return 1
        path = cluster.write_json()
        if not cluster.cfg.tls:
            print("WARNING: ENCRYPTION DISABLED (--no-tls): debugging only", flush=True)
        print(f"SecuriFile cluster: {len(cluster.names)} servers, {args.replicas} replicas")
        if cluster.has_admin:
            print(f"  admin  {cluster.cfg.admin_url}  pid {cluster.procs[ADMIN_NAME].pid}  "
                  f"(administrator's password: {cluster.data_dir / 'credentials' / 'admin.json'})")
        for s in cluster.cfg.servers:
            print(f"  {s.name}  {s.url}  pid {cluster.procs[s.name].pid}")
        print(f"cluster description: {path}")
        print(f"logs: {cluster.data_dir / 'logs'}")
        print("try:")
        for line in curl_examples(cluster):
            print("  " + line)
        print(f"  export SECURIFILE_CLUSTER={path}; securifile put README.md "
              f"{args.user}/docs/README.md")
        print("Ctrl-C stops the cluster.", flush=True)
        exited = set()
        while not stop:
            for name, proc in cluster.procs.items():
                if proc.poll() is not None and name not in exited:
                    exited.add(name)
                    print(f"{name} exited with {proc.returncode}; see its log", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        cluster.stop()
    return 0



if __name__ == "__main__":
    sys.exit(main())
