"""Storage nodes in one process, for the middle test tier: real StorageNodes on real temp
directories, whose peer calls go straight to the other nodes' methods (what the ``/peer``
handlers in nodes/peer_http.py call) instead of over HTTPS. The majority lock, the record
broadcast and the replica copies all run for real; only the transport is left out.
"""
import random

from securifile.common.errors import ApiError
from securifile.common.paths import FilePath
from securifile.common.tokens import mint_token
from securifile.nodes import peer_ops
from securifile.nodes.diskfile import DiskStore
from securifile.nodes.locationmap import Location, LocationMap, Replica
from securifile.nodes.peerclient import PeerError
from securifile.nodes.peers import PeerTable
from securifile.nodes.storage import StorageNode


class InMemoryPeerClient:
    """The part of nodes/peerclient.py's PeerClient that StorageNode calls, answered by the
    peer nodes of the same process. A name in ``cluster.unreachable`` answers nothing, nor
    does a node across a link in ``cluster.cut``."""

    timeout = 3.0

    def __init__(self, cluster, me):
        self.cluster = cluster
        self.me = me
        self.calls = 0
        self.log = []  # (what, peer) of every call made: the rounds a change costs
        self.dropped = []  # peers whose kept channel the node dropped (drop_channel)

    def _node(self, base, what="call"):
        name = base.removeprefix("mem://")
        self.calls += 1
        self.log.append((what, name))
        if name in self.cluster.unreachable or frozenset((self.me, name)) in self.cluster.cut:
            raise PeerError(f"{name} is unreachable", unreachable=True)
        return self.cluster.nodes[name]

    def stats(self):
        return {"calls": self.calls}

    async def lock(self, base, fp, holder, lease, token, known=0, stamp=None, timeout=None):
        node = self._node(base, "lock")
        try:
            return node.grant_lock(fp, holder, self.me, token, lease, known, stamp)
        except ApiError as e:  # as PeerClient raises a refusal: its status and JSON body
            raise PeerError(e.message, e.status, {"error": {"code": e.code, "message": e.message,
                                                            **e.details}}) from None

    async def unlock(self, base, fp, token, timeout=None):
        self._node(base, "unlock").locks.release(fp, token)
        return {"ok": True}

    async def push_locations(self, base, records, release=None, timeout=None, seq=None,
                             numbered=None):
        # The numbers are not taken: with no spans, nothing a pull brings is ever skipped.
        self._node(base, "records").apply_locations(records, release or ())
        return {"applied": len(records)}

    def drop_channel(self, base):
        self.dropped.append(base.removeprefix("mem://"))

    async def record_of(self, base, fp, timeout=None):
        node = self._node(base, "record")
        return peer_ops.record(node, self.me, {"owner": fp.owner, "path": fp.rel})["record"]

    async def send_copy(self, base, fp, disk_path, loc):
        with open(disk_path, "rb") as f:
            return self._store(self._node(base, "copy"), fp, loc, [f.read()], None)

    async def send_copy_bytes(self, base, fp, body, loc, publish):
        node = self._node(base, "copy and record")
        if node.name in self.cluster.refuse_copies:
            raise PeerError(f"{node.name} refused the copy", 507, {})
        answer = self._store(node, fp, loc, [body], len(body))
        # As the /peer/replicas handler does once the copy is stored.
        node.receive_copy_record(self.me, fp, loc.version, answer["digest"], publish)
        return answer

    async def stream_copy(self, base, fp, loc, size, chunks):
        node = self._node(base, "copy")
        return self._store(node, fp, loc, [chunk async for chunk in chunks], size)

    def _store(self, node, fp, loc, chunks, size):
        writer = node.store.writer(fp, loc.algorithm)
        try:
            for chunk in chunks:
                writer.write(chunk)
            digest = writer.commit(loc.digest, size)
        finally:
            writer.abort()
        node.accept_copy(fp, loc.version, digest, writer.size)
        return {"server": node.name, "digest": digest, "size": writer.size}


class MemoryCluster:
    """``size`` StorageNodes named n1, n2, ... under ``root``, each a peer of the others."""

    def __init__(self, root, size=3, replicas=1, capacity_bytes=0, seed=7):
        names = [f"n{i}" for i in range(1, size + 1)]
        self.urls = {n: f"mem://{n}" for n in names}
        self.unreachable = set()
        self.cut = set()  # frozensets of two names that do not reach each other
        self.refuse_copies = set()  # names that answer lock and records but refuse copies
        self.nodes = {}
        for n in names:
            data = root / n
            self.nodes[n] = StorageNode(
                n, self.urls, replicas, "sha256", DiskStore(data, capacity_bytes),
                LocationMap(data / "locations.sqlite3"), PeerTable(n, names),
                InMemoryPeerClient(self, n), random.Random(seed), lock_lease=30.0)

    def place(self, owner, rel, holders, data=b"held elsewhere"):
        """A file already stored on ``holders`` (the first its origin), known to every node:
        what a finished upload leaves behind, without running one."""
        fp = FilePath(owner, rel)
        for name in holders:
            node = self.nodes[name]
            writer = node.store.writer(fp, "sha256")
            writer.write(data)
            digest = writer.commit()
            node.record_copy(fp, 1, digest, len(data))
        loc = Location(owner, rel, holders[0], digest, "sha256", len(data), 1,
                       [Replica(h, i) for i, h in enumerate(holders[1:], start=1)], 1.0,
                       stamp=1, coordinator=holders[0])
        for node in self.nodes.values():
            node.locations.apply(loc)
        return fp

    def close(self):
        for node in self.nodes.values():
            node.locations.close()


def token_keys():
    """(private, public) PEM of a fresh Ed25519 pair, as the admin server signs tokens with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def bearer(private_key, user):
    return {"Authorization": "Bearer " + mint_token(private_key, user)[0]}
