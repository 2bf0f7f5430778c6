"""The measurements through the project's own classes (``Catalog``, ``AccessControl``, ...):
timings, statement counts and EXPLAIN ANALYZE."""
import math
import statistics
import time
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import event, text

from securifile.admin.acl import AccessControl
from securifile.admin.catalog import Catalog
from securifile.admin.events import events_page
from securifile.admin.servers import ServerRegistry

from .dataset import BIG, BIG_FOLDER, BIG_FOLDER2, NOBODY, READER, SERVERS, SHAREE, log

BUDGET_MS = 20.0  # p95 through HTTP, per call, for every page the TUI asks for
PAGE = 200  # the page size the TUI asks for (client.admin.PAGE, passed explicitly here)
# -- measuring ---------------------------------------------------------------------------------

class StatementLog:
    """Every statement an engine sends while ``capture`` is on (for counts and EXPLAIN)."""

    def __init__(self, engine):
        self.on = False
        self.statements = []
        # The GUI's reads go through the engine's reading pool (admin/db.py) when it has one.
        for each in {engine, getattr(engine, "reading", engine)}:
            event.listen(each, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany):
        if self.on:
            self.statements.append((statement, parameters))

    @contextmanager
    def capture(self):
        self.statements = []
        self.on = True
        try:
            yield self
        finally:
            self.on = False


def percentile(values, p):
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timed(fn, runs, warmup, cpu_clock=time.process_time):
    """Wall times (ms) of ``runs`` warm calls, and the CPU ``cpu_clock`` counted per call
    (ms, mean): on a shared machine the wall time measures the load, the CPU time the code."""
    for _ in range(warmup):
        fn()
    times = []
    cpu0 = cpu_clock()
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times, (cpu_clock() - cpu0) * 1000.0 / runs


def scenario_values(engine):
    """Arguments and expected sizes for the measurements, read from the data (so they hold
    at any ``--files`` and on a reused database). Deep pages start 5/6 into big/inbox, 3/4
    into big's files and half-way into the recursive tree."""
    with engine.connect() as c:
        one = lambda sql, **kw: c.execute(text(sql), kw).scalar()  # noqa: E731
        nth = ("SELECT path FROM files WHERE owner = :o AND {where} ORDER BY path "
               "OFFSET :n LIMIT 1")
        v = {
            "inbox_count": one("SELECT count(*) FROM files WHERE owner = :o AND folder = :f",
                               o=BIG, f=BIG_FOLDER),
            "big_count": one("SELECT file_count FROM owner_usage WHERE owner = :o", o=BIG),
            "tree_top": one("SELECT split_part(path, '/', 1) AS top FROM files WHERE owner = :o "
                            "AND folder <> '' AND split_part(path, '/', 1) NOT IN "
                            "(:f1, :f2) GROUP BY top ORDER BY count(*) DESC LIMIT 1",
                            o=BIG, f1=BIG_FOLDER, f2=BIG_FOLDER2.split("/")[0]),
            "busy_grantee": one("SELECT grantee FROM grants WHERE grantee NOT IN (:a, :b) "
                                "GROUP BY grantee ORDER BY count(*) DESC LIMIT 1",
                                a=READER, b=SHAREE),
            "sharee_file": one("SELECT path FROM grants WHERE grantee = :g AND owner = :o "
                               "AND path NOT LIKE '%/' ORDER BY path OFFSET 100 LIMIT 1",
                               g=SHAREE, o=BIG),
            "sharee_inbox": one("SELECT count(*) FROM grants WHERE grantee = :g AND owner = :o "
                                "AND path LIKE :f", g=SHAREE, o=BIG, f=BIG_FOLDER + "/%"),
            "user_count": one("SELECT count(*) FROM users"),
            "mid_user": one("SELECT username FROM users ORDER BY username OFFSET "
                            "(SELECT count(*) / 2 FROM users) LIMIT 1"),
            "last_event": one("SELECT coalesce(max(id), 0) FROM events"),
        }
        v["inbox_deep_at"] = v["inbox_count"] * 5 // 6
        v["inbox_deep"] = one(nth.format(where="folder = :f"), o=BIG, f=BIG_FOLDER,
                              n=v["inbox_deep_at"])
        v["owned_deep_at"] = v["big_count"] * 3 // 4
        v["owned_deep"] = one(nth.format(where="true"), o=BIG, n=v["owned_deep_at"])
        lo, hi = v["tree_top"] + "/", v["tree_top"] + "0"
        v["tree_count"] = one("SELECT count(*) FROM files WHERE owner = :o AND path >= :lo "
                              "AND path < :hi", o=BIG, lo=lo, hi=hi)
        v["tree_deep_at"] = v["tree_count"] // 2
        v["tree_deep"] = one(nth.format(where="path >= :lo AND path < :hi"), o=BIG, lo=lo, hi=hi,
                             n=v["tree_deep_at"])
        v["busy_owner"] = one("SELECT owner FROM grants WHERE grantee = :g GROUP BY owner "
                              "ORDER BY count(*) DESC LIMIT 1", g=v["busy_grantee"])
        v["busy_path"] = one("SELECT path FROM files WHERE owner = :o ORDER BY path LIMIT 1",
                             o=v["busy_owner"])
    return v


def page_of(total):
    """(rows, whether more follow) of a PAGE-row page with ``total`` rows from its cursor on."""
    return min(PAGE, total), total > PAGE


def expect(cond, what):
    if not cond:
        raise AssertionError(f"unexpected result: {what}")


def role_function(acl, caller, owner):
    """The ``role_of`` that FilesHandler passes to ``list_folder``: built by
    ``AccessControl.role_function`` when the project has it (one grants query per listing),
    otherwise one ``AccessControl.role`` call per path, as FilesHandler does without it."""
    make = getattr(acl, "role_function", None)
    if make is not None:
        return make(caller, owner)
    return lambda p: acl.role(caller, owner, p)


def python_scenarios(catalog, acl, registry, sessions, v, since):
    """(name, callable[, calls]) triples; each callable checks what it got, so a fast wrong
    answer fails. Pages are the TUI's (PAGE rows), cursors are keyset cursors."""

    def listing(caller, owner, folder, after=None, recursive=False, total=None):
        def run():
            role_of = role_function(acl, caller, owner)
            # AdminService.list_folder hands over the grant paths that role_of read, when
            # role_of keeps them (Roles.paths); the catalogue reads them itself otherwise.
            known = {"grant_paths": role_of.paths} if hasattr(role_of, "paths") else {}
            r = catalog.list_folder(caller, owner, folder, role_of, PAGE, after, recursive,
                                    **known)
            if total is None:
                expect(r["files"] or r["folders"], f"{owner}/{folder}: empty")
                return
            rows, more = page_of(total)
            expect(len(r["files"]) == rows and (r["next"] is not None) == more,
                   f"{caller} {owner}/{folder}: {len(r['files'])} files, next={r['next']}")
        return run

    def users_page():
        expect(len(catalog.users(PAGE)) == min(PAGE, v["user_count"]), "users page")

    def users_all():
        after, total = None, 0
        while True:
            page = catalog.users(PAGE, after)
            total += len(page)
            if len(page) < PAGE:
                break
            after = page[-1]["username"]
        expect(total == v["user_count"], f"users: {total} of {v['user_count']}")

    def owned(after=None, total=None):
        def run():
            r = catalog.owned_files(BIG, PAGE, after)
            rows, more = page_of(total)
            expect(len(r["files"]) == rows and (r["next"] is not None) == more
                   and r["file_count"] == v["big_count"], "owned files")
        return run

    def totals():
        r = catalog.owned_files(BIG, 1)
        expect(r["file_count"] == v["big_count"] and r["total_bytes"] > 0, "totals")

    def prune():
        expect(catalog.prune_samples(since - timedelta(days=7)) == 0, "prune deleted samples")

    def samples(start, least, most):
        def run():
            r = catalog.samples(SERVERS[0], start)
            expect(least <= len(r) <= most, f"samples: {len(r)}")
        return run

    def events(after, rows):
        def run():
            r = events_page(sessions, after, PAGE if after is not None else 50)
            expect(len(r["events"]) == rows, f"events: {len(r['events'])}")
        return run

    def servers():
        expect(len(registry.listing()) == len(SERVERS), "servers")

    def role(user, owner, path, want):
        def run():
            got = acl.role(user, owner, path)
            expect(want is ... or got == want, f"role {user} {owner}/{path}: {got}, wanted {want}")
        return run

    inbox_file = v["inbox_deep"]
    now = since + timedelta(hours=1)
    burst = min(300, v["last_event"])
    pages = -(-v["user_count"] // PAGE)
    return [
        (f"list big/inbox ({v['inbox_count']} direct files), page 1, owner",
         listing(BIG, BIG, BIG_FOLDER, total=v["inbox_count"])),
        (f"list big/inbox, deep page (after #{v['inbox_deep_at']}), owner",
         listing(BIG, BIG, BIG_FOLDER, after=v["inbox_deep"],
                 total=v["inbox_count"] - v["inbox_deep_at"] - 1)),
        ("list big/ (root: files + subfolders), owner", listing(BIG, BIG, "")),
        (f"list big/{v['tree_top']}/ recursive ({v['tree_count']} files), page 1",
         listing(BIG, BIG, v["tree_top"], recursive=True, total=v["tree_count"])),
        (f"list big/{v['tree_top']}/ recursive, deep page",
         listing(BIG, BIG, v["tree_top"], after=v["tree_deep"], recursive=True,
                 total=v["tree_count"] - v["tree_deep_at"] - 1)),
        ("list big/inbox as reader (folder grant), page 1",
         listing(READER, BIG, BIG_FOLDER, total=v["inbox_count"])),
        (f"list big/inbox as sharee ({v['sharee_inbox']} file grants)",
         listing(SHAREE, BIG, BIG_FOLDER, total=v["sharee_inbox"])),
        ("list big/ root as sharee (grants below only)", listing(SHAREE, BIG, "")),
        (f"users(), a page of {PAGE} (with totals)", users_page),
        (f"users(), all {v['user_count']:,}: {pages} calls of {PAGE} (total)", users_all, pages),
        (f"owned_files(big), first {PAGE}", owned(total=v["big_count"])),
        (f"owned_files(big), deep page (after #{v['owned_deep_at']})",
         owned(v["owned_deep"], total=v["big_count"] - v["owned_deep_at"] - 1)),
        ("a user's totals: owned_files(big, limit=1)", totals),
        ("samples(node1, since 10 min ago): the plot's first load",
         samples(now - timedelta(minutes=10), 250, 350)),
        ("samples(node1, since 10 s ago): a plot tick", samples(now - timedelta(seconds=10), 1, 10)),
        ("events: the panel's first load (newest 50)", events(None, min(50, v["last_event"]))),
        (f"events: a page after a burst of {burst}", events(v["last_event"] - burst, min(PAGE, burst))),
        ("servers listing (with under-replicated counts)", servers),
        ("AccessControl.role: owner", role(BIG, BIG, inbox_file, "owner")),
        ("AccessControl.role: reader via folder grant", role(READER, BIG, inbox_file, "reader")),
        ("AccessControl.role: sharee (201 grants on big)",
         role(SHAREE, BIG, v["sharee_file"], "reader")),
        (f"AccessControl.role: busiest grantee ({v['busy_grantee']})",
         role(v["busy_grantee"], v["busy_owner"], v["busy_path"], ...)),
        ("AccessControl.role: no grant", role(NOBODY, BIG, inbox_file, None)),
        ("housekeeping (not GUI): prune_samples(7 days ago)", prune),
    ]


def run_python(engine, sessions, args, v, since):
    catalog, acl, registry = Catalog(sessions), AccessControl(sessions), ServerRegistry(sessions)
    statements = StatementLog(engine)
    results = []
    for name, fn, *calls in python_scenarios(catalog, acl, registry, sessions, v, since):
        if args.only and not any(word in name for word in args.only):
            continue
        with statements.capture():
            fn()
        captured = list(statements.statements)
        times, cpu = timed(fn, args.runs, args.warmup)
        res = summary(name, times, "python", len(captured), calls[0] if calls else 1, cpu)
        results.append(res)
        log(f"{name}: median {res['median_ms']:.2f} ms, p95 {res['p95_ms']:.2f} ms, "
            f"CPU {cpu:.2f} ms, {res['statements']} SQL statements")
        if not res["under_budget"] or args.explain_all:
            res["explain"] = explain(engine, captured)
    return results


def summary(name, times, path, statements=None, calls=1, cpu_ms=None):
    """Median and p95 of a scenario; the budget holds per call (a scenario may make several).
    ``cpu_ms``: the CPU time per scenario (this process's for the Python path, the admin
    server's for HTTP)."""
    median, p95 = statistics.median(times), percentile(times, 95)
    return {"name": name, "path": path, "runs": len(times), "calls": calls, "cpu_ms": cpu_ms,
            "median_ms": median, "p95_ms": p95, "max_ms": max(times), "statements": statements,
            "under_budget": median / calls < BUDGET_MS and p95 / calls < BUDGET_MS}


def explain(engine, captured, top=3):
    """EXPLAIN ANALYZE of the distinct statements a call ran, the most repeated first."""
    counts = Counter(s for s, _ in captured)
    params = {}
    for s, p in captured:
        params.setdefault(s, p)
    out = []
    with engine.connect() as c:
        for statement, n in counts.most_common(top):
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            rows = c.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement,
                                     params[statement]).all()
            out.append({"statement": " ".join(statement.split()), "times_per_call": n,
                        "parameters": [str(x) for x in (params[statement] or ())][:12],
                        "plan": "\n".join(r[0] for r in rows)})
        c.rollback()
    return out
