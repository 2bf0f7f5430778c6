"""Partitions between real processes: every server in its own network namespace.

The servers talk to each other over a bridge that lives in a namespace of its own (the peer
network). Each server also has a point-to-point link to the admin server's namespace and one
to the client's namespace, with /32 routes, so cutting a server's bridge port separates it
from its peers only: the admin server and clients still reach it. Addresses are link-local
(169.254.x.y) and sit on each namespace's loopback device, so a server keeps its address
while its bridge port is down.

    169.254.1.i  server i        169.254.2.1  admin server        169.254.3.1  client

The test process stays in its own namespace; its client calls open their sockets in the
client namespace (``entered``: setns(2) on the calling thread only, just for the socket's
creation; the socket keeps its namespace). Everything is named after the test process's pid
and removed by the fixture's finalizer, also when a test fails.
"""
import contextlib
import ctypes
import errno
import http.client
import itertools
import json
import os
import re
import shutil
import ssl
import subprocess
from urllib.parse import urlsplit

import pytest

from securifile.launcher.cluster import ADMIN_NAME, Cluster

from .clusters import FAST

CLONE_NEWNET = 0x40000000
PEER_NET, ADMIN_ADDRESS, CLIENT_ADDRESS = "169.254.1.0/24", "169.254.2.1", "169.254.3.1"
_libc = ctypes.CDLL(None, use_errno=True)
_labs = itertools.count(1)


def server_address(i):
    return f"169.254.1.{i}"


class NetnsUnavailable(Exception):
    """Namespaces cannot be created here; the message says why."""


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


@contextlib.contextmanager
def entered(netns):
    """Run the block on this thread inside network namespace ``netns`` (then back)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # a thread left in the lab breaks the run
                err = ctypes.get_errno()
                raise SystemExit(f"cannot leave namespace {netns}: {os.strerror(err)}")
    finally:
        os.close(own)


class NetnsHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, netns, **kw):
        super().__init__(*args, **kw)
        self.netns = netns

    def connect(self):
        with entered(self.netns):
            super().connect()


class NetnsHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, netns, **kw):
        super().__init__(*args, **kw)
        self.netns = netns

    def connect(self):
        with entered(self.netns):
            super().connect()


def http_connection(url, context=None, timeout=30, netns=None):
    """An HTTP(S) connection to ``url``'s host, from ``netns`` when given."""
    u = urlsplit(url)
    if u.scheme == "https":
        if netns:
            return NetnsHTTPSConnection(u.hostname, u.port, context=context, timeout=timeout,
                                        netns=netns)
        return http.client.HTTPSConnection(u.hostname, u.port, context=context, timeout=timeout)
    if netns:
        return NetnsHTTPConnection(u.hostname, u.port, timeout=timeout, netns=netns)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


class Lab:
    """The namespaces, links and addresses for ``servers`` servers, an admin server and a
    client; ``cut(i)`` and ``heal(i)`` take server i off the peer network and back."""

    def __init__(self, servers, tag=None):
        self.servers = servers
        tag = tag or f"sf{os.getpid()}x{next(_labs)}"
        self.bridge = f"{tag}-br"
        self.admin = f"{tag}-adm"
        self.client = f"{tag}-cli"
        self.nodes = [f"{tag}-n{i}" for i in range(1, servers + 1)]
        self.created = []

    @property
    def namespaces(self):
        return [self.bridge, self.admin, self.client, *self.nodes]

    def netns_of(self, name):
        """The namespace of server ``nodeI`` or of the admin server."""
        if name == ADMIN_NAME:
            return self.admin
        return self.nodes[int(name.removeprefix("node")) - 1]

    def create(self):
        try:
            for ns in self.namespaces:
                ip("netns", "add", ns)
                self.created.append(ns)
                ip("-n", ns, "link", "set", "lo", "up")
            self._wire()
        except BaseException:
            self.remove()
            raise
        return self

    def _wire(self):
        br, adm, cli = self.bridge, self.admin, self.client
        ip("-n", br, "link", "add", "br0", "type", "bridge")
        ip("-n", br, "link", "set", "br0", "up")
        ip("-n", adm, "addr", "add", f"{ADMIN_ADDRESS}/32", "dev", "lo")
        ip("-n", cli, "addr", "add", f"{CLIENT_ADDRESS}/32", "dev", "lo")
        self._link(cli, "adm", CLIENT_ADDRESS, adm, "cli", ADMIN_ADDRESS)
        for i, ns in enumerate(self.nodes, 1):
            me = server_address(i)
            ip("-n", ns, "addr", "add", f"{me}/32", "dev", "lo")
            ip("-n", br, "link", "add", f"p{i}", "type", "veth", "peer", "name", "peer",
               "netns", ns)
            ip("-n", br, "link", "set", f"p{i}", "master", "br0", "up")
            ip("-n", ns, "link", "set", "peer", "up")
            ip("-n", ns, "route", "add", PEER_NET, "dev", "peer", "src", me)
            self._link(ns, "adm", me, adm, f"s{i}", ADMIN_ADDRESS)
            self._link(ns, "cli", me, cli, f"s{i}", CLIENT_ADDRESS)

    @staticmethod
    def _link(ns_a, dev_a, addr_a, ns_b, dev_b, addr_b):
        """A point-to-point veth link with a /32 route each way."""
        ip("-n", ns_a, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b)
        ip("-n", ns_a, "link", "set", dev_a, "up")
        ip("-n", ns_b, "link", "set", dev_b, "up")
        ip("-n", ns_a, "route", "add", f"{addr_b}/32", "dev", dev_a, "src", addr_a)
        ip("-n", ns_b, "route", "add", f"{addr_a}/32", "dev", dev_b, "src", addr_b)

    def cut(self, i):
        """Server i loses the peer network (admin server and clients still reach it)."""
        ip("-n", self.bridge, "link", "set", f"p{i}", "down")

    def heal(self, i):
        ip("-n", self.bridge, "link", "set", f"p{i}", "up")
        for ns in (self.bridge, *self.nodes):
            ip("-n", ns, "neigh", "flush", "all", check=False)

    def cut_between(self, i, j):
        """Servers i and j stop reaching each other; each still reaches every other host
        (a broken link, not a server cut off)."""
        ip("-n", self.nodes[i - 1], "route", "replace", "blackhole", f"{server_address(j)}/32")
        ip("-n", self.nodes[j - 1], "route", "replace", "blackhole", f"{server_address(i)}/32")

    def heal_between(self, i, j):
        ip("-n", self.nodes[i - 1], "route", "del", "blackhole", f"{server_address(j)}/32",
           check=False)
        ip("-n", self.nodes[j - 1], "route", "del", "blackhole", f"{server_address(i)}/32",
           check=False)

    def cut_off(self):
        """The servers whose bridge port is down now (from the bridge's own view)."""
        out = json.loads(ip("-j", "-n", self.bridge, "link", "show").stdout)
        return sorted(int(link["ifname"][1:]) for link in out
                      if link["ifname"].startswith("p") and "UP" not in link["flags"])

    def remove(self):
        for ns in reversed(self.created):
            ip("netns", "delete", ns, check=False)
        self.created = []


def sweep_orphans():
    """Remove the namespaces of labs whose test process is gone (killed before its
    finalizers ran); those of running test processes stay."""
    listed = ip("netns", "list", check=False).stdout.split()
    for pid in {m.group(1) for name in listed if (m := re.match(r"sf(\d+)x\d+-", name))}:
        if not os.path.exists(f"/proc/{pid}"):
            for name in [n for n in listed if n.startswith(f"sf{pid}x")]:
                ip("netns", "delete", name, check=False)


def lab_or_skip(servers):
    """A created Lab, or pytest.skip saying why namespaces cannot be created here."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (the harness runs `ip netns add`)")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2) to create network namespaces")
    sweep_orphans()
    lab = Lab(servers)
    try:
        return lab.create()
    except RuntimeError as e:
        if "Operation not permitted" in str(e) or "Permission denied" in str(e):
            pytest.skip(f"cannot create network namespaces here: {e}")
        raise
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            pytest.skip(f"cannot create network namespaces here: {e}")
        raise


class NetnsCluster(Cluster):
    """A Cluster whose admin server and nodes each run in their own namespace of a Lab."""

    def __init__(self, data_dir, config_path, user=None, lab=None):
        super().__init__(data_dir, config_path, user)
        self.lab = lab

    @classmethod
    def create_in(cls, lab, data_dir, replicas=1, tls=True, servers=None, **settings):
        """Nodes in the lab's first ``servers`` namespaces (all by default; the others are
        for servers added later: ``new_server``)."""
        servers = servers or lab.servers
        plain = Cluster.create(data_dir, servers, replicas, tls, base_port=8441,
                               hosts=[server_address(i) for i in range(1, servers + 1)],
                               admin_host=ADMIN_ADDRESS, **settings)
        return cls(plain.data_dir, plain.config_path, plain.user, lab)

    @property
    def client_netns(self):
        return self.lab.client

    def _spawn(self, name, cmd, env=None):
        # `ip netns exec` executes the command itself: the process is the server, so
        # kill, SIGSTOP and SIGCONT reach it directly.
        return super()._spawn(name, ["ip", "netns", "exec", self.lab.netns_of(name), *cmd], env)

    def status(self, name, timeout=2.0):
        conn = http_connection(self.url(name), self.client_ssl_context(), timeout,
                               self.client_netns)
        try:
            conn.request("GET", "/status")
            r = conn.getresponse()
            return json.loads(r.read()) if r.status == 200 else None
        except (OSError, ValueError, ssl.SSLError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def cut(self, name):
        self.lab.cut(self._index(name))

    def heal(self, name):
        self.lab.heal(self._index(name))

    def cut_between(self, a, b):
        self.lab.cut_between(self._index(a), self._index(b))

    def heal_between(self, a, b):
        self.lab.heal_between(self._index(a), self._index(b))

    def _index(self, name):
        return self.lab.nodes.index(self.lab.netns_of(name)) + 1


@pytest.fixture
def make_netns_cluster(tmp_path_factory):
    """Start a cluster in fresh namespaces: ``make_netns_cluster(servers=3, replicas=1,
    spare=0, **config)`` (``spare`` namespaces more for servers added later); every process
    is stopped and every namespace removed afterwards."""
    labs, clusters = [], []

    def make(servers=3, replicas=1, tls=True, spare=0, **settings):
        labs.append(lab_or_skip(servers + spare))
        cluster = NetnsCluster.create_in(labs[-1], tmp_path_factory.mktemp("netns"), replicas,
                                         tls, servers, **{**FAST, **settings})
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield make
    try:
        for cluster in clusters:
            cluster.stop()
    finally:
        for lab in labs:
            lab.remove()
