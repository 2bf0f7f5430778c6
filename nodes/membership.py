"""The servers this node counts its majority over, and how it learns a new list.

The admin server numbers each list (its epoch) and changes it one server at a time
(admin/membership.py). A node starts from the list saved in its data folder, or from its
configuration the first time (epoch 0), polls the admin server for a newer one, and takes
one from any peer whose heartbeat answer carries a higher epoch, so a node cut off from the
admin server still converges. It never goes back to a lower epoch, and saves each list it
adopts before it counts with it, so a restart keeps it.

A lock asked by a coordinator at a lower epoch than this node's is refused: that
coordinator counts its majority over an outdated list (see docs/DESIGN.md "Changing the
membership").
"""
import asyncio
import json
import logging
import os

from tornado.ioloop import PeriodicCallback

from securifile.common.durable import fsync_dir
from securifile.common.errors import Conflict

from .peerclient import PeerError

log = logging.getLogger("securifile.membership")
MEMBER, DRAINING = "member", "draining"


class NodeMembership:
    def __init__(self, path, bootstrap):
        self.path = path
        self.listeners = []  # called with (old servers, new servers) after each adoption
        self.epoch, self.servers = 0, [{"name": e.name, "url": e.url, "state": MEMBER}
                                       for e in bootstrap]
        try:
            saved = json.loads(path.read_text())
            self.epoch, self.servers = int(saved["epoch"]), list(saved["servers"])
        except FileNotFoundError:
            pass

    @property
    def names(self):
        return [s["name"] for s in self.servers]

    @property
    def draining(self):
        return {s["name"] for s in self.servers if s.get("state") == DRAINING}

    def urls(self):
        return {s["name"]: s["url"].rstrip("/") for s in self.servers}

    def as_json(self):
        return {"epoch": self.epoch, "servers": self.servers}

    def adopt(self, epoch, servers, source=""):
        """Take ``servers`` as the list if ``epoch`` is newer than ours; True if taken."""
        try:
            epoch = int(epoch)
            servers = [{"name": str(s["name"]), "url": str(s["url"]),
                        "state": str(s.get("state", MEMBER))} for s in servers]
        except (TypeError, ValueError, KeyError):
            log.warning("membership from %s ignored: malformed", source or "?")
            return False
        if epoch <= self.epoch:
            return False
        self._save(epoch, servers)
        old, self.epoch, self.servers = self.servers, epoch, servers
        log.warning("membership epoch %d from %s: %s", epoch, source or "?",
                    ", ".join(f"{s['name']} ({s['state']})" for s in servers))
        for listener in self.listeners:
            listener(old, servers)
        return True

    def gossip(self, answer, source):
        """A peer's view, from its heartbeat answer (``{"epoch", "servers"}``) or nothing."""
        if isinstance(answer, dict) and int(answer.get("epoch", 0) or 0) > self.epoch:
            self.adopt(answer["epoch"], answer.get("servers", []), source)

    def check_coordinator(self, epoch):
        """Conflict (409) when a coordinator counts over an older list than this node's."""
        if epoch is not None and int(epoch) < self.epoch:
            raise Conflict(f"membership epoch {epoch} is older than this server's "
                           f"({self.epoch})", code="stale_membership", epoch=self.epoch)

    def _save(self, epoch, servers):
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"epoch": epoch, "servers": servers}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)


class MembershipPoller:
    """Asks the admin server for the current list, saying which epoch this node holds
    (the admin server lets the next change through once a majority holds the last)."""

    def __init__(self, membership, client, admin, interval):
        self.membership = membership
        self.client = client
        self.admin = admin  # AdminURLs: its instances in turn
        self.interval = interval
        self._periodic = None
        self._running = None

    async def run_once(self):
        try:
            answer = await self.client.membership(self.admin, self.membership.epoch,
                                                  timeout=max(1.0, self.interval))
        except PeerError as e:
            log.debug("membership poll failed: %s", e)
            return False
        changed = self.membership.adopt(answer.get("epoch", 0), answer.get("servers", []),
                                        "the admin server")
        if changed:  # say at once that this node holds it
            await self.run_once()
        return changed

    def start(self):
        self._periodic = PeriodicCallback(self._tick, self.interval * 1000)
        self._periodic.start()
        self._tick()

    def _tick(self):
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self.run_once())

    def stop(self):
        if self._periodic is not None:
            self._periodic.stop()


def follow(membership, node, peers, quorum, urls, authenticator_names):
    """Keep the node's parts in step with ``membership``: who its peers are (a new one
    starts down, so it is challenged like a returning server when it answers), their
    addresses, the majority's size, which certificates are fellow nodes', and which
    servers take no new copies."""
    def apply(_old, servers):
        names = [s["name"] for s in servers]
        new_urls = membership.urls()
        for name in list(urls):
            if name not in new_urls:
                del urls[name]
        urls.update(new_urls)
        for name in names:
            if name != peers.self_name and name not in peers.names:
                peers.add_peer(name)
        for name in peers.names:
            if name not in names:
                peers.remove_peer(name)
                quorum.lost(name)
        quorum.size = len(names)
        authenticator_names.intersection_update(names)
        authenticator_names.update(names)
        node.draining = membership.draining
        if peers.self_name not in names:
            node.set_removed()

    membership.listeners.append(apply)
    apply(None, membership.servers)
