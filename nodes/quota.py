"""Owners' quotas, enforced by the node before it accepts an upload's bytes.

The admin server is the authority: it has the catalogue, where each file counts once
whatever the number of replicas, and it grants reservations atomically (admin/quotas.py).
An upload reserves the file size it declares before its body is read; a body of unknown
length reserves a step ahead of what has arrived and asks again when it runs out. The
reservation is renewed while the body arrives, handed over to the report queue once the
file is stored (the admin server ends it when it applies the file's record, so the file is
never uncounted in between), and given back when the upload fails.

While the admin server is unreachable, an owner this node has seen with a quota cannot
write (503 ``quota_unchecked``: the usage cannot be checked); an owner seen without one, or
never seen, writes on. The owners with a quota are kept in ``state_path`` across restarts.
"""
import asyncio
import json
import logging
import os
import time
import uuid
from pathlib import Path

from tornado.ioloop import PeriodicCallback

from securifile.common.errors import ApiError, Unavailable

from .peerclient import PeerError

log = logging.getLogger("securifile.quota")
STEP = 16 << 20  # how far ahead of its bytes a body of unknown length reserves


class QuotaExceeded(ApiError):
    status, code = 507, "quota_exceeded"


class QuotaUnchecked(Unavailable):
    code = "quota_unchecked"


class QuotaKeeper:
    """Reservations from the admin server (``PUT /api/v1/quota/reservations/ID``), asked
    over the node's kept connections (``client``, a PeerClient): no TLS handshake per upload."""

    def __init__(self, admin, client, report_done=None, unlimited_ttl=3.0, timeout=3.0,
                 step=STEP, clock=time.monotonic, state_path=None):
        self.admin = admin  # AdminURLs (or one URL): its instances in turn
        self.client = client
        self.report_done = report_done or (lambda rid: None)
        self.unlimited_ttl = unlimited_ttl
        self.timeout = timeout
        self.step = step
        self.clock = clock
        self._unlimited = {}  # owner -> when the admin server last said: no quota
        self.state_path = Path(state_path) if state_path else None
        self.limited = self._load()  # owners seen with a quota

    async def reserve(self, fp, length, rid=None, received=0):
        """An UploadQuota for an upload of ``length`` bytes to ``fp`` (None: unknown, the body
        is chunked; ``received`` bytes are there already), or None when its owner has no
        quota. ``rid`` renews (or takes again) an earlier reservation: a resumable upload's.
        QuotaExceeded (507) when it does not fit; QuotaUnchecked (503) when the admin server
        cannot say and must."""
        seen = self._unlimited.get(fp.owner)
        if seen is not None and self.clock() - seen < self.unlimited_ttl:
            return None
        quota = UploadQuota(self, fp, rid or uuid.uuid4().hex)
        size = length if length is not None else received
        answer = await quota.ask(size, size if length is not None else size + self.step,
                                 offline_ok=True)
        if answer is None or answer.get("quota_bytes") is None:
            return None
        quota.start_renewal(float(answer.get("expires_in", 120)))
        return quota

    async def call(self, rid, request=None):
        return await self.client.quota_reservation(self.admin, rid, request, self.timeout)

    def give_back(self, rid, background):
        """Release reservation ``rid`` without waiting (it expires, should this be lost)."""
        task = asyncio.ensure_future(self._give_back(rid))
        background.add(task)
        task.add_done_callback(background.discard)

    async def _give_back(self, rid):
        try:
            await self.call(rid)
        except PeerError as e:
            log.info("quota reservation %s not given back (it expires): %s", rid, e)

    def learned(self, owner, limited):
        """What an answer said about ``owner``: remembered for when the admin server is down."""
        if limited:
            self._unlimited.pop(owner, None)
            if owner not in self.limited:
                self.limited.add(owner)
                self._save()
        else:
            self._unlimited[owner] = self.clock()
            if len(self._unlimited) > 10_000:
                self._unlimited.clear()
            if owner in self.limited:
                self.limited.discard(owner)
                self._save()

    def _load(self):
        if self.state_path is None or not self.state_path.exists():
            return set()
        try:
            return set(json.loads(self.state_path.read_text()).get("limited", []))
        except (OSError, ValueError, AttributeError) as e:
            log.error("cannot read %s (%s): no owner known to have a quota", self.state_path, e)
            return set()

    def _save(self):
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"limited": sorted(self.limited)}, f)
        os.replace(tmp, self.state_path)


class UploadQuota:
    """One upload's reservation: the file size it covers, grown as the body needs."""

    def __init__(self, keeper, fp, rid):
        self.keeper = keeper
        self.fp = fp
        self.rid = rid
        self.covered = 0
        self.done = False
        self._renewal = None
        self._background = set()
        self._shrinking = None  # keep()'s call to the admin server, while it runs

    def needs(self, size):
        """Whether a body of ``size`` bytes goes beyond what is reserved."""
        return not self.done and size > self.covered

    async def cover(self, size):
        """Reserve up to ``size`` bytes and a step beyond; QuotaExceeded or QuotaUnchecked."""
        await self.ask(size, size + self.keeper.step)

    async def ask(self, size, wanted, offline_ok=False):
        """The admin server's answer (None: unreachable, and ``offline_ok`` for this owner)."""
        owner = self.fp.owner
        body = {"owner": owner, "path": self.fp.rel, "bytes": size, "wanted": wanted}
        try:
            answer = await self.keeper.call(self.rid, body)
        except PeerError as e:
            if e.status == 507:
                self.keeper.learned(owner, True)
                raise exceeded(e.body) from None
            if e.status is not None and e.status < 500:
                raise Unavailable(f"the admin server refused the quota reservation (HTTP "
                                  f"{e.status}); ask the operator", code="admin_refused") from None
            return self._offline(e, offline_ok)
        limited = answer.get("quota_bytes") is not None
        self.keeper.learned(owner, limited)
        if limited:
            self.covered = int(answer["covered_bytes"])
        return answer

    def _offline(self, error, offline_ok):
        owner = self.fp.owner
        if offline_ok and owner not in self.keeper.limited:
            log.warning("admin server unreachable (%s): %s has no quota known here, upload "
                        "goes ahead", error, owner)
            return None
        raise QuotaUnchecked(f"the admin server cannot be reached to check the quota of "
                             f"{owner}; try again later", headers={"Retry-After": "5"})

    def start_renewal(self, expires_in):
        self._renewal = PeriodicCallback(self._renew, max(0.1, expires_in / 3) * 1000)
        self._renewal.start()

    async def _renew(self):
        if self.done:
            return
        try:
            await self.ask(self.covered, self.covered)
        except ApiError as e:  # the bytes were granted; the next step asks again
            log.warning("quota reservation of %s not renewed: %s", self.fp, e.message)

    def committed(self):
        """The file is stored: its reservation ends when the admin server applies the
        file's report (queued just before this)."""
        if self._stop():
            self.keeper.report_done(self.rid)

    def release(self):
        """The upload failed: the reservation goes back (or expires, should this be lost)."""
        if self._stop():
            self.keeper.give_back(self.rid, self._background)

    def keep(self, size):
        """A resumable upload's request ends with ``size`` bytes held, the upload goes on:
        no more renewals, and the step reserved ahead goes back (the reservation covers
        ``size`` until it expires); the next request renews it, or takes it again. The
        admin server is told in the background: ``kept()`` waits for it."""
        if self._stop() and self.covered > size:
            task = self._shrinking = asyncio.ensure_future(self._shrink(size))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def kept(self):
        """Once the admin server has what ``keep()`` told it: a request's answer waits for
        this, so that the owner's usage read right after it shows what the upload holds."""
        if self._shrinking is not None:
            await asyncio.shield(self._shrinking)  # a request cut off leaves it running

    async def _shrink(self, size):
        try:
            await self.ask(size, size)
        except ApiError as e:  # it expires
            log.info("quota reservation %s not shrunk: %s", self.rid, e.message)

    def _stop(self):
        if self.done:
            return False
        self.done = True
        if self._renewal is not None:
            self._renewal.stop()
        return True


def exceeded(answer):
    """The admin server's 507, passed on to the client with its figures."""
    detail = answer.get("error") if isinstance(answer.get("error"), dict) else {}
    figures = {k: v for k, v in detail.items() if k.endswith("_bytes")}
    return QuotaExceeded(detail.get("message", "quota exceeded"), **figures)
