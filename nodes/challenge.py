"""Digest challenges: how a running node checks the copies a returning node holds.

The challenger lists the files it shares with the returning node (it holds a copy it can
compare against), with their versions, a fresh nonce and a few byte ranges per file. The
returning node answers each with the version it holds, the digest of its copy (reusing a
digest computed earlier only when size, mtime, ctime and inode are unchanged) and an HMAC
keyed by the nonce over the requested ranges, which it can only compute from the bytes
themselves: stored digests replayed without the data do not pass.

No HTTP here: the transport sends the dicts these functions build and read.
"""
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field

from securifile.common.digests import file_digest
from securifile.common.paths import FilePath

RANGE_BYTES = 1024
RANGES_PER_FILE = 2
BATCH = 5000  # files per challenge request

OK, STALE, MISSING, CORRUPT, REPLAYED = "ok", "stale", "missing", "corrupt", "replayed"
NEWER = "newer"  # the challenger's map is behind: nothing to judge yet


def stat_key(path):
    return _key(os.stat(path))


def _key(st):
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def choose_ranges(size, rng, count=RANGES_PER_FILE, length=RANGE_BYTES):
    """A few (offset, length) ranges inside a file of ``size`` bytes; the whole of a small file."""
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


def answer_challenge(store, locations, challenge, deep=False):
    """The returning node's answer, computed from its own disk."""
    nonce = challenge["nonce"]
    fps = [FilePath(item["owner"], item["path"]) for item in challenge["files"]]
    records = locations.copy_records(fps)  # one query per few hundred files, not one each
    paths = DiskPaths(store)
    rehashed = []  # (fp, digest, stat key) to store, in one transaction at the end
    answers = [_answer_one(paths, records.get((fp.owner, fp.rel)), fp, item["algorithm"],
                           nonce, item["ranges"], deep, rehashed)
               for fp, item in zip(fps, challenge["files"])]
    if rehashed:
        locations.update_copy_digests(rehashed)
    return {"files": answers}


def _answer_one(paths, record, fp, algorithm, nonce, ranges, deep, rehashed):
    out = {"owner": fp.owner, "path": fp.rel, "version": None, "digest": None, "mac": None}
    if record is None:
        return out
    path = paths(fp)
    try:
        # One open, then fstat and pread on it: one lookup of the name, not two. Non-blocking,
        # so that a FIFO where a file should be cannot stall the answer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError):  # gone (or not a valid name here): missing
        return out
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return out
        version, digest, cached_key = record
        key = _key(st)
        if deep or key != cached_key or not digest:
            digest = file_digest(path, algorithm)
            rehashed.append((fp, digest, key))
        out.update(version=version, digest=digest, mac=_fd_mac(fd, nonce, ranges))
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
    def passed(self):
        return not self.failed

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
        if a is None or a.get("version") is None:
            result.outcomes[key] = MISSING
        elif a["version"] < loc.version:
            result.outcomes[key] = STALE
        elif a["version"] > loc.version:
            result.outcomes[key] = NEWER
        elif a["digest"] != loc.digest:
            result.outcomes[key] = CORRUPT
        else:
            own = paths(loc.file_path)
            expected = ranges_mac(own, nonce, item["ranges"])
            result.outcomes[key] = OK if hmac.compare_digest(expected, a.get("mac") or "") else REPLAYED
    return result
