"""Deleting what removed accounts left behind, once their grace period is over.

The admin server knows which accounts were removed and when their namespace falls due
(``removed_namespace_days``); it lists the due files (``GET /api/v1/purges``). Each node
deletes those it serves (the first running holder with a current copy, as for repairs)
through the normal delete: the file's lock from a majority, a tombstone published to every
peer, every copy dropped where the tombstone arrives, the catalogue told by the report
queue. A file already deleted here is reported again, so a catalogue that missed the
report learns it. Everything is idempotent: a node or the admin server that dies mid-way
leaves files that are simply listed again, and deleted, on a later round.

``batch`` files a round at most, from a cursor that goes round the due list, so files no
node can delete yet (their holders down) do not hold the others up.
"""
import logging
from urllib.parse import urlencode

from securifile.common.admin_urls import AdminURLs
from securifile.common.errors import ApiError
from securifile.common.paths import FilePath

from .peerclient import PeerError
from .peers import RUNNING
from .placement import serving_holder
from .rounds import PeriodicRounds

log = logging.getLogger("securifile.purge")
PURGER = "(purge)"  # the lock holder and audit user of a purge


class NamespacePurger(PeriodicRounds):
    round_name = "purge"

    def __init__(self, node, admin_url, client, interval=60.0, batch=100, timeout=10.0):
        self.node = node
        self.admin = AdminURLs(admin_url)
        self.client = client  # the node's PeerClient: its kept connections
        self.interval = interval
        self.batch = batch
        self.timeout = timeout
        self.after = None  # the last file of the previous page: owner/path
        self.purged = 0
        self.failures = 0

    async def due(self):
        """The next page of due files from the admin server: (FilePath, version) pairs."""
        query = {"limit": self.batch}
        if self.after:
            query["after"] = self.after
        files = (await self.client.call_admin(self.admin, f"/api/v1/purges?{urlencode(query)}",
                                              timeout=self.timeout))["files"]
        self.after = f"{files[-1]['owner']}/{files[-1]['path']}" if len(files) == self.batch \
            else None
        return [(FilePath(f["owner"], f["path"]), int(f["version"])) for f in files]

    def _mine(self, loc):
        node = self.node
        return serving_holder(loc, lambda n: node._can_serve(loc, n)) == node.name

    async def run_once(self):
        """One round: delete the due files this node serves; how many it deleted."""
        node = self.node
        if node.peers.self_status != RUNNING:
            return 0
        try:
            fps = await self.due()
        except (PeerError, ValueError, KeyError, TypeError) as e:
            log.info("no purge list from the admin server this round: %s", e)
            return 0
        deleted = 0
        for fp, version in fps:
            loc = node.locations.get(fp, include_deleted=True)
            if loc is None or loc.version > version + 1:
                continue  # unknown here, or written again since (by the name's new owner)
            if loc.deleted:
                node.on_file_change(loc, False)  # the catalogue may have missed it
                continue
            if not self._mine(loc):
                continue
            try:
                await node.delete(fp, PURGER, up_to_version=version)
            except ApiError as e:  # locked by a writer, no majority, gone meanwhile
                self.failures += 1
                log.warning("purge of %s put off: %s", fp, e)
                continue
            deleted += 1
            log.warning("purged %s: its account was removed and the grace period is over", fp)
            node.log_access(PURGER, "delete", fp.full, "purged")
        self.purged += deleted
        return deleted
