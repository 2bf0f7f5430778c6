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
from dataclasses import dataclass, field

from securifile.common.digests import file_digest
from securifile.common.paths import FilePath

RANGE_BYTES = 1024
RANGES_PER_FILE = 2
BATCH = 5000  # files per challenge request

OK, STALE, MISSING, CORRUPT, REPLAYED = "ok", "stale", "missing", "corrupt", "replayed"
NEWER = "newer"  # the challenger's map is behind: nothing to judge yet


def stat_key(path):
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def choose_ranges(size, rng, count=RANGES_PER_FILE, length=RANGE_BYTES):
    """A few (offset, length) ranges inside a file of ``size`` bytes; the whole of a small file."""
    if size <= length * count:
        return [[0, size]]
    return sorted([rng.randrange(0, size - length + 1), length] for _ in range(count))


def ranges_mac(path, nonce, ranges):
    """HMAC-SHA256 keyed by the nonce over the file's bytes in ``ranges``."""
    mac = hmac.new(bytes.fromhex(nonce), digestmod=hashlib.sha256)
    with open(path, "rb") as f:
        for offset, length in ranges:
            f.seek(offset)
            data = f.read(length)
            mac.update(f"{offset}:{len(data)}:".encode())
            mac.update(data)
    return mac.hexdigest()


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
    answers = []
    for item in challenge["files"]:
        fp = FilePath(item["owner"], item["path"])
        answers.append(_answer_one(store, locations, fp, item["algorithm"], nonce,
                                   item["ranges"], deep))
    return {"files": answers}


def _answer_one(store, locations, fp, algorithm, nonce, ranges, deep):
    out = {"owner": fp.owner, "path": fp.rel, "version": None, "digest": None, "mac": None}
    record = locations.copy_record(fp)
    path = store.path_for(fp)
    if record is None or not path.is_file():
        return out
    version, digest, cached_key = record
    key = stat_key(path)
    if deep or key != cached_key or not digest:
        digest = file_digest(path, algorithm)
        locations.update_copy_digest(fp, digest, key)
    out.update(version=version, digest=digest, mac=ranges_mac(path, nonce, ranges))
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
            own = store.path_for(loc.file_path)
            expected = ranges_mac(own, nonce, item["ranges"])
            result.outcomes[key] = OK if hmac.compare_digest(expected, a.get("mac") or "") else REPLAYED
    return result
