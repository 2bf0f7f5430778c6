"""``python -m bench.admin``: the admin server's GUI queries on PostgreSQL with 1,000,000 files and 10,000 users.

    .venv/bin/python -m bench.admin [--database URL [--reuse]] [--keep]
        [--runs 50] [--no-http] [--write-doc docs/ADMIN-SCALE.md] [--json FILE]
        [--files 1000000 --users 10000 ...]

The queries are the pages the TUI asks for (PAGE rows, keyset cursors: ``after``), each
checked against what the data holds; the budget is BUDGET_MS per call, median and p95.
A smaller ``--files`` keeps the data's shape (the named accounts shrink in proportion),
for a quick check that the queries and their plans are right.

Without ``--database`` a throwaway database ``sf_bench_<random>`` is created on ``--server``
and dropped at the end (``--keep`` leaves it and prints its URL; a later run with
``--database URL --reuse`` measures it again without loading). ``--database`` alone must name
an empty database: the schema is created with the project's Alembic migrations, then filled.

Loading: users (one precomputed bcrypt hash), files with their folders, placements and
owner_usage rows, grants, servers and storage samples go in through PostgreSQL COPY (pg8000's
``stream``), then VACUUM ANALYZE. The data is seeded and skewed like a real installation: one
user with 200,000 files, a few with tens of thousands, a long tail of small ones, 10% of
accounts without files; folders with 30,000 and 12,000 direct files; trees up to 8 deep.

Measuring uses the project's own code paths, warm: ``Catalog`` and ``AccessControl`` on the
session factory of ``securifile.admin.db`` (the ``role_of`` passed to ``list_folder`` is built
as ``FilesHandler`` builds it), and unless ``--no-http`` the REST API of a
``securifile-admin --config X serve`` started on the same database (TLS, bearer tokens,
one keep-alive connection). Every figure is the median and p95 of ``--runs`` calls after
warm-up calls. For each call the SQL statements are counted; for any query over the
budget (median or p95) the statements it ran are printed with EXPLAIN ANALYZE.
"""
import argparse
import json
import os
import secrets
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from securifile.admin import db

from .api import run_http
from .dataset import load, log, outside_transaction
from .queries import run_python, scenario_values
from .report import machine, print_explains, report_markdown, sizes, write_doc

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SERVER = "postgresql+pg8000://postgres@127.0.0.1:5432/postgres"

# -- main --------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.admin", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--database", help="database URL (postgresql+pg8000://...); default: a "
                   "throwaway sf_bench_<random> on --server, dropped at the end")
    p.add_argument("--server", default=DEFAULT_SERVER,
                   help="maintenance database URL used to create and drop the throwaway one")
    p.add_argument("--reuse", action="store_true",
                   help="the database is already loaded (by an earlier --keep run): only measure")
    p.add_argument("--keep", action="store_true", help="do not drop the throwaway database")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--files", type=int, default=1_000_000)
    p.add_argument("--replicas", type=int, default=1,
                   help="replicas per file (placements = files x (replicas + 1))")
    p.add_argument("--grants", type=int, default=20_000, help="random grants beside the fixed ones")
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--events", type=int, default=10_000,
                   help="audit events (the admin server keeps the newest 10,000)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-http", dest="http", action="store_false",
                   help="skip the REST measurements through a securifile-admin server")
    p.add_argument("--only", action="append",
                   help="measure only the queries whose name contains this (repeatable)")
    p.add_argument("--explain-all", action="store_true", help="EXPLAIN ANALYZE every query")
    p.add_argument("--write-doc", nargs="?", const=str(REPO / "docs" / "ADMIN-SCALE.md"),
                   help="write the results into this Markdown file (between markers)")
    p.add_argument("--json", help="also write the full results (plans included) as JSON")
    return p.parse_args(argv)


def command_line(argv):
    """The command as the report shows it: database URLs (credentials) and the --json file
    (a path on this machine, meaningless in docs/ADMIN-SCALE.md) left out."""
    shown, hide_next = [], False
    for a in argv:
        if hide_next:
            hide_next = False
        elif a == "--json":
            hide_next = True
        elif not a.startswith("--json="):
            shown.append(a if "://" not in a else "URL")
    return " ".join(["python -m bench.admin", *shown])


def create_throwaway(server_url):
    name = "sf_bench_" + secrets.token_hex(5)
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)

    def drop():
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        log(f"dropped {name}")

    return url, drop


def main(argv=None):
    args = parse_args(argv)
    # SIGTERM (a killed job) unwinds like Ctrl-C: the server stops, the database is dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    drop = None
    if args.database:
        url = args.database
        if not url.startswith("postgresql"):
            raise SystemExit("bench_admin measures PostgreSQL: give a postgresql+pg8000:// URL")
    else:
        if args.reuse:
            raise SystemExit("--reuse needs --database")
        url, drop = create_throwaway(args.server)
        log(f"created {make_url(url).database}")
    engine = db.make_engine(url)
    try:
        now = time.time()
        load_seconds = None
        if args.reuse:
            db.upgrade(engine)  # a migration added since the load (e.g. an index) applies here
            outside_transaction(engine, "ANALYZE")
            with engine.connect() as c:
                now = c.execute(text("SELECT extract(epoch FROM max(t)) FROM storage_samples")
                                ).scalar()
                now = float(now)
        else:
            db.upgrade(engine)
            with engine.connect() as c:
                if c.execute(text("SELECT count(*) FROM files")).scalar():
                    raise SystemExit("the database already holds files: give an empty one, "
                                     "or --reuse to measure what is there")
            t0 = time.perf_counter()
            load_seconds = load(engine, args, now)
            log(f"loaded in {time.perf_counter() - t0:.0f} s")
        since = datetime.fromtimestamp(now, timezone.utc) - timedelta(hours=1)
        v = scenario_values(engine)
        sessions = db.session_factory(engine)
        load_before = os.getloadavg()
        results = run_python(engine, sessions, args, v, since)
        if args.http:
            results += run_http(url, args, v, since)
        load_after = os.getloadavg()
        report = {
            "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command_line(argv if argv is not None else sys.argv[1:]),
            "machine": machine(engine), "sizes": sizes(engine), "load_seconds": load_seconds,
            "runs": args.runs, "warmup": args.warmup, "results": results, "scenario": v,
            "loadavg": {"before": load_before, "after": load_after},
        }
        print()
        print(report_markdown(report))
        print_explains(results)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        if args.write_doc:
            write_doc(args.write_doc, report)
        return 0 if all(r["under_budget"] for r in results) else 1
    finally:
        engine.dispose()
        if drop is not None:
            if args.keep:
                log(f"kept: --database {url} --reuse")
            else:
                drop()


if __name__ == "__main__":
    sys.exit(main())
