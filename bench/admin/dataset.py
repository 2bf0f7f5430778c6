"""The generated installation: named accounts, skewed file counts, folders, grants and samples,
loaded into PostgreSQL with COPY."""
import hashlib
import random
import sys
import time
from collections import Counter
from datetime import datetime, timezone

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool


# The accounts the measurements use; everything else is the generated long tail.
BIG = "big"                # 200,000 files
BIG_FOLDER = "inbox"       # big's folder with 30,000 direct files, the biggest
BIG_FOLDER2 = "camera/2024"  # and one with 12,000
READER = "reader"          # reader on big/inbox/, editor on big/camera/: sees whole folders
SHAREE = "sharee"          # 200 single-file grants in big/inbox and one deep folder grant
NOBODY = "nobody"          # no files, no grants
ADMIN = "admin"
LARGE = {"large1": (60_000, [("logs", 12_000)]), "large2": (30_000, []),
         "large3": (15_000, []), "large4": (5_000, [])}
FULL_SCALE = 1_000_000  # --files at which the named accounts have the sizes above
SERVERS = [f"node{i}" for i in range(1, 6)]

VOCAB = ["docs", "photos", "src", "backup", "music", "reports", "archive", "projects", "data",
         "misc", "mail", "scans", "video", "notes", "build", "tmp", "invoices", "shared"]
EXTS = ["txt", "pdf", "jpg", "png", "docx", "xlsx", "mp3", "mp4", "tar.gz", "py", "json", "csv"]


def log(message):
    print(f"[bench_admin {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- data generation ---------------------------------------------------------------------------

class Dataset:
    """What was generated, kept small: per-owner aggregates, folders, the special paths."""

    def __init__(self):
        self.file_count = 0
        self.usage = {}            # owner -> (files, bytes)
        self.folders = []          # (owner, path, parent)
        self.origins = bytearray()  # file id - 1 -> index into SERVERS
        self.samples = {}          # owner -> a few of its (folders, files), for random grants
        self.big_folder_files = []  # paths in big/inbox, for sharee's single-file grants
        self.deep_folder = None    # one of big's deepest folders, for sharee's folder grant


def account_uid(username):
    """The account id (``users.uid``) of a generated account: derived from its name, so that
    the tokens the HTTP measurements mint carry the id the server compares."""
    return hashlib.sha256(username.encode()).hexdigest()[:32]


def named_sizes(total_files):
    """{owner: (files, [(folder, direct files)])} of the named large accounts, in proportion
    to ``--files`` (a small run, e.g. 20,000 files, keeps the same shape at 2%)."""
    k = total_files / FULL_SCALE

    def n(x):
        return max(1, round(x * k))
    sizes = {BIG: (n(200_000), [(BIG_FOLDER, n(30_000)), (BIG_FOLDER2, n(12_000))])}
    sizes.update({o: (n(c), [(f, n(fc)) for f, fc in special])
                  for o, (c, special) in LARGE.items()})
    return sizes


def file_counts(total_users, total_files, seed):
    """Every account's file count, sorted by name (the order COPY gets them in)."""
    fixed = {**{o: c for o, (c, _) in named_sizes(total_files).items()}, READER: 0, SHAREE: 40,
             NOBODY: 0, ADMIN: 12}
    generic = total_users - len(fixed)
    rng = random.Random(seed)
    left = total_files - sum(fixed.values())
    if generic < 1 or left < 0:
        raise SystemExit("too few users or files for the fixed accounts (need >= 10 users, "
                         f">= {sum(fixed.values())} files)")
    names = [f"u{i:05d}" for i in range(1, generic + 1)]
    # Pareto-distributed sizes, 10% of accounts empty, nobody outgrowing the named large users.
    weights = [0.0 if rng.random() < 0.10 else min(rng.paretovariate(1.1), 1000.0) for _ in names]
    scale = left / sum(weights)
    counts = {n: int(w * scale) for n, w in zip(names, weights)}
    short = left - sum(counts.values())
    nonempty = [n for n, w in zip(names, weights) if w > 0]
    for n in rng.sample(nonempty, min(short, len(nonempty))):
        counts[n] += 1
    short = left - sum(counts.values())
    counts[nonempty[0]] += short
    counts.update(fixed)
    return dict(sorted(counts.items()))


def owner_layout(rng, owner, n_files, special=()):
    """Folder tree and file paths (sorted byte-wise) for one owner; ``special``: named
    folders with their number of direct files."""
    special = [(f, min(c, n_files)) for f, c in special]
    rest = n_files - sum(c for _, c in special)
    folders, depth = [""], {"": 0}
    for k in range(1, max(0, rest // 40) + 1):
        # Parents drawn towards the first folders: a bushy top, a few long chains.
        parent = folders[int(len(folders) * rng.random() ** 2)]
        if depth[parent] >= 8:
            parent = ""
        path = f"{parent}/{rng.choice(VOCAB)}{k}" if parent else f"{rng.choice(VOCAB)}{k}"
        folders.append(path)
        depth[path] = depth[parent] + 1
    per_folder = Counter()
    if rest > 0:
        weights = [rng.paretovariate(1.0) for _ in folders]
        per_folder.update(rng.choices(folders, weights=weights, k=rest))
    for f, c in special:
        per_folder[f] += c
    paths, counter = [], 0
    for folder, count in per_folder.items():
        for _ in range(count):
            counter += 1
            name = f"f{counter:07d}.{EXTS[counter % len(EXTS)]}"
            paths.append(f"{folder}/{name}" if folder else name)
    paths.sort()
    return paths


def ancestors(path):
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def iso_utc(epoch_seconds):
    return datetime.fromtimestamp(epoch_seconds, timezone.utc).isoformat()


def file_lines(counts, data, seed, now, chunk=5000):
    """COPY text for ``files``, owner by owner in (owner, path) order, ids from 1."""
    specials = {o: special for o, (_, special) in named_sizes(sum(counts.values())).items()}
    rng = random.Random(seed + 1)
    two_years = 2 * 365 * 86400
    buf, fid = [], 0
    for owner, n in counts.items():
        if n == 0:
            continue
        paths = owner_layout(rng, owner, n, specials.get(owner, ()))
        total, folders = 0, set()
        for path in paths:
            fid += 1
            size = min(int(rng.lognormvariate(11.5, 2.3)), 50 << 30)
            total += size
            origin = rng.randrange(len(SERVERS))
            data.origins.append(origin)
            created = now - rng.random() * two_years
            modified = created + rng.random() * (now - created)
            folder = path.rpartition("/")[0]
            if folder:
                folders.update(ancestors(path))
            buf.append(f"{fid}\t{owner}\t{path}\t{folder}\t{size}\tsha256\t"
                       f"{rng.getrandbits(256):064x}\t{1 + int(rng.random() ** 4 * 5)}\t"
                       f"{SERVERS[origin]}\t{'t' if rng.random() < 0.001 else 'f'}\t"
                       f"{iso_utc(created)}\t{iso_utc(modified)}\n")
            if len(buf) >= chunk:
                yield "".join(buf)
                buf.clear()
        data.usage[owner] = (n, total)
        for f in sorted(folders):
            data.folders.append((owner, f, f.rpartition("/")[0]))
        some = rng.sample(paths, min(8, len(paths)))
        data.samples[owner] = (rng.sample(sorted(folders), min(4, len(folders))), some)
        if owner == BIG:
            data.big_folder_files = [p for p in paths if p.rpartition("/")[0] == BIG_FOLDER]
            data.deep_folder = max(folders, key=lambda f: (f.count("/"), f))
    data.file_count = fid
    if buf:
        yield "".join(buf)


def placement_lines(data, replicas, chunk=20000):
    buf = []
    for i, origin in enumerate(data.origins):
        for prio in range(replicas + 1):
            buf.append(f"{i + 1}\t{SERVERS[(origin + prio) % len(SERVERS)]}\t{prio}\n")
        if len(buf) >= chunk:
            yield "".join(buf)
            buf.clear()
    if buf:
        yield "".join(buf)


def grant_rows(counts, data, n_random, seed, now):
    rng = random.Random(seed + 2)
    rows, seen = [], set()

    def add(owner, path, grantee, role, by=None):
        key = (owner, path, grantee)
        if grantee != owner and key not in seen:
            seen.add(key)
            rows.append((owner, path, grantee, role, by or owner))

    add(BIG, BIG_FOLDER + "/", READER, "reader")
    add(BIG, BIG_FOLDER2.split("/")[0] + "/", READER, "editor")
    step = max(1, len(data.big_folder_files) // 200)
    for p in data.big_folder_files[::step][:200]:
        add(BIG, p, SHAREE, "reader")
    if data.deep_folder:
        add(BIG, data.deep_folder + "/", SHAREE, "master")
    owners = [o for o in counts if counts[o] > 0]
    users = list(counts)
    wanted = len(rows) + n_random
    while len(rows) < wanted:
        owner, grantee = rng.choice(owners), rng.choice(users)
        folders, files = data.samples[owner]
        r = rng.random()
        if r < 0.05 or not (folders or files):
            path = ""
        elif r < 0.6 and folders:
            path = rng.choice(folders) + "/"
        else:
            path = rng.choice(files)
        add(owner, path, grantee, rng.choice(("reader", "reader", "editor", "master")))
    created = iso_utc(now - 86400)
    for i, (owner, path, grantee, role, by) in enumerate(rows, 1):
        yield f"{i}\t{owner}\t{path}\t{grantee}\t{role}\t{by}\t{created}\n"


def sample_lines(n, now, interval=2.0):
    """Storage samples every ``interval`` seconds per server, the newest now."""
    per = n // len(SERVERS)
    sid = 0
    buf = []
    for si, server in enumerate(SERVERS):
        capacity = (4 + si) << 40
        for k in range(per):
            sid += 1
            t = now - (per - 1 - k) * interval
            used = int(capacity * (0.3 + 0.4 * k / per))
            buf.append(f"{sid}\t{server}\t{iso_utc(t)}\t{used}\t{capacity - used}\n")
        yield "".join(buf)
        buf.clear()


def event_lines(n, counts, now, chunk=5000):
    """Audit events for the live panel (the admin server keeps the newest 10,000), one every
    0.1 s up to now, by users who have files."""
    rng = random.Random(n)
    owners = [o for o, c in counts.items() if c > 0]
    ops = ("read", "read", "read", "write", "create", "delete")
    buf = []
    for i in range(1, n + 1):
        user = rng.choice(owners)
        buf.append(f"{i}\t{iso_utc(now - (n - i) * 0.1)}\taccess\t{rng.choice(SERVERS)}\t{user}"
                   f"\t{rng.choice(ops)}\t{user}/f{i:07d}.txt\tok\t{rng.randrange(1 << 30)}\t\n")
        if len(buf) >= chunk:
            yield "".join(buf)
            buf.clear()
    if buf:
        yield "".join(buf)


# -- loading -----------------------------------------------------------------------------------

def copy(engine, table, columns, lines):
    """COPY ``lines`` (an iterable of text chunks) into ``table``; returns the row count."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SET synchronous_commit TO off")
        cur.execute(f"COPY {table} ({', '.join(columns)}) FROM STDIN", stream=lines)
        count = cur.rowcount
        raw.commit()
        return count
    finally:
        raw.close()


def outside_transaction(engine, sql):
    """VACUUM and the like, on a connection of its own: a pooled pg8000 connection may
    already be in a transaction (the pre-ping's) when AUTOCOMMIT is asked for."""
    own = create_engine(engine.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with own.connect() as c:
            c.execute(text(sql))
    finally:
        own.dispose()


def load(engine, args, now):
    import bcrypt

    timings = {}
    data = Dataset()
    counts = file_counts(args.users, args.files, args.seed)
    t0 = time.perf_counter()
    # One real hash (cost 12, as accounts use) shared by every account: 10,000 bcrypt calls
    # would take most of an hour and measure nothing the GUI queries do.
    pw_hash = bcrypt.hashpw(b"bench password", bcrypt.gensalt()).decode()
    valid_until, created = iso_utc(now + 365 * 86400), iso_utc(now - 400 * 86400)
    user_lines = (f"{i}\t{account_uid(name)}\t{name}\t{name}@bench.example\t{pw_hash}"
                  f"\t{'t' if name == ADMIN else 'f'}\tf\t{created}\t{valid_until}\n"
                  for i, name in enumerate(counts, 1))
    n = copy(engine, "users", ["id", "uid", "username", "email", "password_hash", "admin",
                               "disabled", "created_at", "valid_until"], user_lines)
    timings["users"] = time.perf_counter() - t0
    log(f"users: {n} in {timings['users']:.1f} s")

    t0 = time.perf_counter()
    n = copy(engine, "files", ["id", "owner", "path", "folder", "size", "algorithm", "digest",
                               "version", "origin", "under_replicated", "created_at",
                               "modified_at"], file_lines(counts, data, args.seed, now))
    timings["files"] = time.perf_counter() - t0
    log(f"files: {n} in {timings['files']:.1f} s")

    t0 = time.perf_counter()
    n = copy(engine, "folders", ["owner", "path", "parent"],
             (f"{o}\t{p}\t{q}\n" for o, p, q in data.folders))
    n2 = copy(engine, "owner_usage", ["owner", "file_count", "total_bytes"],
              (f"{o}\t{c}\t{b}\n" for o, (c, b) in data.usage.items()))
    timings["folders+usage"] = time.perf_counter() - t0
    log(f"folders: {n}, owner_usage: {n2} in {timings['folders+usage']:.1f} s")

    t0 = time.perf_counter()
    n = copy(engine, "placements", ["file_id", "server", "priority"],
             placement_lines(data, args.replicas))
    timings["placements"] = time.perf_counter() - t0
    log(f"placements: {n} in {timings['placements']:.1f} s")

    t0 = time.perf_counter()
    n = copy(engine, "grants", ["id", "owner", "path", "grantee", "role", "granted_by",
                                "created_at"], grant_rows(counts, data, args.grants, args.seed, now))
    n2 = copy(engine, "servers", ["name", "url", "status", "since", "admin_state", "used_bytes",
                                  "available_bytes"],
              (f"{s}\thttps://127.0.0.1:{9001 + i}\trunning\t{iso_utc(now - 86400)}\tonline\t0\t0\n"
               for i, s in enumerate(SERVERS)))
    n3 = copy(engine, "storage_samples", ["id", "server", "t", "used_bytes", "available_bytes"],
              sample_lines(args.samples, now))
    n4 = copy(engine, "events", ["id", "at", "kind", "server", "username", "operation", "path",
                                 "result", "size", "message"], event_lines(args.events, counts, now))
    timings["grants+servers+samples+events"] = time.perf_counter() - t0
    log(f"grants: {n}, servers: {n2}, samples: {n3}, events: {n4} in "
        f"{timings['grants+servers+samples+events']:.1f} s")

    t0 = time.perf_counter()
    with engine.connect() as c:
        for table, column in (("users", "id"), ("files", "id"), ("grants", "id"),
                              ("storage_samples", "id"), ("events", "id")):
            c.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                           f"(SELECT max({column}) FROM {table}))"))
        c.commit()
    outside_transaction(engine, "VACUUM ANALYZE")
    timings["vacuum analyze"] = time.perf_counter() - t0
    log(f"VACUUM ANALYZE in {timings['vacuum analyze']:.1f} s")
    return timings
