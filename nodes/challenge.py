"""Digest challenges: how a running node checks the copies a returning node holds.

The challenger lists the files it shares with the returning node (it holds a copy it can
compare against), with their versions, a fresh nonce and byte ranges per file drawn from
the kernel's generator: one 4 KiB range per MiB (2 to 256), the whole of a small file. The
returning node answers each with the version it holds, the digest of its copy (reusing a
digest computed earlier only when size, mtime, ctime and inode are unchanged) and an HMAC
keyed by the nonce over the requested ranges, which it can only compute from the bytes
themselves: stored digests replayed without the data do not pass.

The answering node reads only what a challenge may ask: ranges within bounds and inside the
file, and only of files whose record names the challenger as a holder; anything else it
answers as refused, which proves nothing either way. A claimed newer version, or a refusal,
is never a pass: the challenger catches up and asks again (``verification``). A file of
which it never recorded a copy it answers as not held: stale, brought up to date, where a
recorded copy gone from the disk is missing and fails the node.

A copy replaced while it is answered for (a write's copy lands between reading its version
and reading its bytes) would pair the old version with the new bytes: a copy that changed
under the answer, or one a change here is under way for, is answered as changing, which
the challenger judges again once the change is done. Another file at the name than the one
recorded (another inode) with other bytes than the recorded copy's is a commit that renamed
its bytes in and died before it recorded them (a crash, or a stop, between the two): those
bytes were never confirmed to anyone, and the copy is answered as not held, so that the
challenger brings it up to date. Bytes changed in place (the same inode) are answered as
they are, and a copy unlike the record fails the node.

No HTTP here: the transport sends the dicts these functions build and read.
"""
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field

from securifile.common.digests import ALGORITHMS, fd_digest
from securifile.common.paths import FilePath

RANGE_BYTES = 4096
BYTES_PER_RANGE = 1 << 20  # one range per MiB of file
MIN_RANGES, MAX_RANGES = 2, 256
MAX_RANGE_LENGTH = MIN_RANGES * RANGE_BYTES  # a small file asked whole
BATCH = 5000  # files per challenge request

OK, STALE, MISSING, CORRUPT, REPLAYED = "ok", "stale", "missing", "corrupt", "replayed"
NEWER = "newer"  # the challenger's map is behind: nothing to judge until it catches up
REFUSED = "refused"  # the peer would not answer for this file (its map does not name us)
CHANGING = "changing"  # written while it was being checked: judged again once settled
INCONCLUSIVE = (NEWER, REFUSED, CHANGING)


class ChallengeRefused(ValueError):
    """A challenge out of bounds as a whole (too many files, not the expected shape)."""


def stat_key(path):
    return stat_key_of(os.stat(path))


def stat_key_of(st):
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def range_count(size):
    """How many ranges a file of ``size`` bytes is asked for: the sample grows with the file."""
    return min(MAX_RANGES, max(MIN_RANGES, -(-size // BYTES_PER_RANGE)))


def choose_ranges(size, rng, length=RANGE_BYTES):
    """(offset, length) ranges inside a file of ``size`` bytes; the whole of a small file.

    ``rng`` must be unpredictable to the peer (``random.SystemRandom``): a peer that could
    guess the ranges could keep those bytes and lose the rest.
    """
    count = range_count(size)
    if size <= length * count:
        return [[0, size]]
    # One draw of 64 bits per range, in one call: a SystemRandom call reads the kernel's
    # generator each time, and randrange makes several. The modulo bias is below 2**-40
    # for any file under a terabyte.
    span = size - length + 1
    bits = rng.getrandbits(64 * count)
    return sorted([(bits >> (64 * i)) % span, length] for i in range(count))


def ranges_mac(path, nonce, ranges):
    """HMAC-SHA256 keyed by the nonce over the file's bytes in ``ranges``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _fd_mac(fd, nonce, ranges)
    finally:
        os.close(fd)


def _fd_mac(fd, nonce, ranges):
    # os.pread on a bare descriptor: half the cost of a buffered file object, and this runs
    # once per file on both sides of a challenge.
    mac = hmac.new(bytes.fromhex(nonce), digestmod=hashlib.sha256)
    for offset, length in ranges:
        data = os.pread(fd, length, offset)
        mac.update(f"{offset}:{len(data)}:".encode())
        mac.update(data)
    return mac.hexdigest()


class DiskPaths:
    """``store.path_for`` for the many files of a challenge, asked once per folder.

    ``path_for`` keeps a folder inside the data directory as it does a file; a name that is
    one plain segment (no '/', not '.' or '..') cannot lead out of its folder, so only the
    folder needs the check. Anything else goes through ``path_for`` whole.
    """

    def __init__(self, store):
        self.store = store
        self._folders = {}

    def __call__(self, fp):
        folder, _, name = fp.rel.rpartition("/")
        if not folder or name in ("", ".", ".."):
            return str(self.store.path_for(fp))
        base = self._folders.get((fp.owner, folder))
        if base is None:
            base = str(self.store.path_for(FilePath(fp.owner, folder)))
            self._folders[(fp.owner, folder)] = base
        return os.path.join(base, name)


def new_challenge(challenger, locations, rng):
    """The challenge body for a list of Locations, and the ranges chosen for each file."""
    nonce = secrets.token_hex(16)
    files = [{"owner": loc.owner, "path": loc.path, "version": loc.version,
              "algorithm": loc.algorithm, "ranges": choose_ranges(loc.size, rng)}
             for loc in locations]
    return {"challenger": challenger, "nonce": nonce, "files": files}


def answer_challenge(store, locations, challenge, deep=False, challenger=None,
                     on_checked=None, busy=None):
    """The returning node's answer, computed from its own disk.

    ``challenger`` is the authenticated caller (else the name the challenge gives): only
    files whose record here names it as a holder are answered, each range checked first.
    ``on_checked(challenger, n)`` hears, before the disk is read, that the challenge named
    ``n`` such files: what a verdict of that challenger may be about. ``busy(fp)``: a change
    of ``fp`` is under way here (its lock is held, or its copy is being renamed in or removed
    and its record not yet updated), so a copy that is not as its record says may be one
    moment of that change.
    """
    files = challenge.get("files")
    if not isinstance(files, list) or len(files) > BATCH:
        raise ChallengeRefused(f"a challenge lists at most {BATCH} files")
    nonce = challenge.get("nonce")
    try:
        bytes.fromhex(nonce)
    except (TypeError, ValueError):
        raise ChallengeRefused("the nonce must be hex") from None
    challenger = challenger or challenge.get("challenger")
    try:
        fps = [FilePath(item["owner"], item["path"]) for item in files]
    except (KeyError, TypeError):
        raise ChallengeRefused("each file needs an owner and a path") from None
    records = locations.copy_records(fps)  # one query per few hundred files, not one each
    allowed = locations.named_holder(fps, challenger)
    if on_checked is not None:
        on_checked(challenger, len(allowed))
    paths = DiskPaths(store)

    def unsettled(fp, record):
        return (busy is not None and busy(fp)) or locations.copy_record(fp) != record
    rehashed = []  # (fp, digest, stat key) to store, in one transaction at the end
    answers = []
    for fp, item in zip(fps, files):
        key = (fp.owner, fp.rel)
        record = records.get(key)
        if record is not None and key not in allowed:  # (no copy: "missing" reads nothing)
            answers.append({"owner": fp.owner, "path": fp.rel, "refused": "not a holder"})
            continue
        answers.append(_answer_one(paths, record, fp, item.get("algorithm"), nonce,
                                   item.get("ranges"), deep, rehashed, unsettled))
    if rehashed:
        locations.update_disk_digests(rehashed)
    return {"files": answers}


def ranges_refusal(ranges):
    """Why ``ranges`` is more than a challenge may ask of one file, or None."""
    if not isinstance(ranges, list) or not 0 < len(ranges) <= MAX_RANGES:
        return f"between 1 and {MAX_RANGES} ranges per file"
    for r in ranges:
        if (not isinstance(r, (list, tuple)) or len(r) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in r)):
            return "a range is [offset, length]"
        if r[0] < 0 or not 0 <= r[1] <= MAX_RANGE_LENGTH:
            return f"a range has an offset of 0 or more and at most {MAX_RANGE_LENGTH} bytes"
    return None


def _other_file(key, recorded_key):
    """Whether the stat key ``key`` is of another inode than the recorded one: a file renamed
    in at the name since, where bytes changed in place keep their inode."""
    return bool(recorded_key) and key.rsplit(":", 1)[-1] != recorded_key.rsplit(":", 1)[-1]


def _inside(ranges, size):
    return all(offset + length <= size for offset, length in ranges)


def _answer_one(paths, record, fp, algorithm, nonce, ranges, deep, rehashed, unsettled):
    changing = {"owner": fp.owner, "path": fp.rel, "changing": "a change of this file is under way"}
    out = {"owner": fp.owner, "path": fp.rel, "version": None, "digest": None, "mac": None}
    if record is None:  # no copy ever recorded here (or one forgotten, as a quarantined copy is)
        # ... unless one is being renamed in or dropped right now: a drop forgets the record
        # before it removes the file (StorageNode._drop_local).
        return changing if unsettled(fp, record) else dict(out, held=False)
    refusal = ("unknown digest algorithm" if algorithm not in ALGORITHMS
               else ranges_refusal(ranges))
    if refusal is not None:
        return {"owner": fp.owner, "path": fp.rel, "refused": refusal}
    path = paths(fp)
    try:
        # One open, then fstat and pread on it: one lookup of the name, not two. Non-blocking,
        # so that a FIFO where a file should be cannot stall the answer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError):  # gone (or not a valid name here): missing, unless dropped
        return changing if unsettled(fp, record) else out
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return out
        key = stat_key_of(st)
        digest = record.disk_digest
        if deep or key != record.stat_key or not digest:
            # From the descriptor the ranges are read from: the path may name a newer file.
            digest = fd_digest(fd, algorithm)
            if key != record.stat_key and unsettled(fp, record):
                return changing
            if digest != record.digest and _other_file(key, record.stat_key):
                return dict(out, held=False)  # a commit that died before its record
            rehashed.append((fp, digest, key))
        # Ranges past the end of this copy: it is not the challenger's (its digest will say
        # so); no bytes are read for them.
        mac = _fd_mac(fd, nonce, ranges) if _inside(ranges, st.st_size) else None
        out.update(version=record.version, digest=digest, mac=mac)
    finally:
        os.close(fd)
    return out


@dataclass
class ChallengeResult:
    """What one challenge found: per-file outcomes, and the verdict."""

    outcomes: dict = field(default_factory=dict)  # (owner, path) -> OK / STALE / ...

    @property
    def failed(self):
        return [k for k, v in self.outcomes.items() if v in (MISSING, CORRUPT, REPLAYED)]

    @property
    def stale(self):
        return [k for k, v in self.outcomes.items() if v == STALE]

    @property
    def inconclusive(self):
        """Files judged neither way yet: a claimed newer version, or a refusal."""
        return [k for k, v in self.outcomes.items() if v in INCONCLUSIVE]

    @property
    def passed(self):
        return not self.failed and not self.inconclusive

    def summary(self):
        counts = {}
        for v in self.outcomes.values():
            counts[v] = counts.get(v, 0) + 1
        return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no files"


def check_answer(store, locations_by_key, challenge, answer, result):
    """Compare an answer with the challenger's own copies; record each file's outcome."""
    got = {(a["owner"], a["path"]): a for a in answer.get("files", [])}
    nonce = challenge["nonce"]
    paths = DiskPaths(store)
    for item in challenge["files"]:
        key = (item["owner"], item["path"])
        loc = locations_by_key[key]
        a = got.get(key)
        if a is not None and a.get("refused"):
            result.outcomes[key] = REFUSED
        elif a is not None and a.get("changing"):
            result.outcomes[key] = CHANGING
        elif a is None or a.get("version") is None:
            # Nothing is claimed: the copy was never recorded there, or the record already
            # names it stale (its holder lost it, or missed this version), so it is brought
            # up to date, not failed. A small upload's record goes out with its copies, so
            # a coordinator that dies in that round leaves records naming holders that never
            # got theirs (``replication``). A copy recorded there and gone from the disk is
            # missing: something lost it behind the node's back.
            stale = getattr(loc, "other_stale", False) or (a is not None and a.get("held") is False)
            result.outcomes[key] = STALE if stale else MISSING
        elif a["version"] < loc.version:
            result.outcomes[key] = STALE
        elif a["version"] > loc.version:
            result.outcomes[key] = NEWER
        elif a["digest"] != loc.digest:
            # Other bytes under the same version number: corrupt, unless the record already
            # says this copy is not current (a write it missed, or lost, in a partition).
            result.outcomes[key] = STALE if getattr(loc, "other_stale", False) else CORRUPT
        else:
            try:
                expected = ranges_mac(paths(loc.file_path), nonce, item["ranges"])
            except OSError:  # this node's own copy went meanwhile (deleted or replaced)
                result.outcomes[key] = CHANGING
                continue
            result.outcomes[key] = OK if hmac.compare_digest(expected, a.get("mac") or "") else REPLAYED
    return result
