"""The admin server in this process, for the middle test tier: an ``AdminService`` over a real
database (SQLite and PostgreSQL, one migrated database per module and backend, emptied before
each test) with a test CA, and helpers that make accounts and node reports.

Shared by test_admin_service.py (the service's methods) and test_admin_handlers.py (its
routes through pytest-tornado). Nothing here starts a process.
"""
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete

from securifile.admin import db
from securifile.admin.models import Base
from securifile.admin.service import AdminService
from securifile.common.auth import Principal
from securifile.common.certnames import ROLE_ADMIN, ROLE_NODE, CertLayout
from securifile.common.certs import ensure_ca, ensure_server_cert, ensure_user_cert
from securifile.common.config import Config, ServerEntry
from securifile.common.errors import Unavailable
from securifile.common.tokens import load_public_key, verify_token

from .databases import fresh_postgres_database

PASSWORD = "correct horse battery"
NODES = ("node1", "node2")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def admin_engine(request, tmp_path_factory):
    """One migrated database per module and backend: migrating for every test would take
    seconds, emptying the tables takes milliseconds."""
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('admin-db') / 'admin.sqlite3'}"
    else:
        url, drop = fresh_postgres_database()
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        if drop is not None:
            drop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A test CA with the admin server's and the nodes' certificates."""
    layout = CertLayout(tmp_path_factory.mktemp("certs"))
    ca = ensure_ca(layout)
    ensure_server_cert(layout, ca, "admin", ROLE_ADMIN)
    for name in NODES:
        ensure_server_cert(layout, ca, name, ROLE_NODE)
    return layout, ca


class NodesHeard:
    """Stands in for the admin server's node client (admin/nodeclient.py: ``set_state``):
    records what each node was told; the URLs in ``unreachable`` do not answer."""

    def __init__(self):
        self.told = []
        self.unreachable = set()

    async def set_state(self, base_url, state):
        if base_url in self.unreachable:
            raise Unavailable(f"server at {base_url} did not answer", code="node_unreachable")
        self.told.append((base_url, state))
        return {"admin_state": state}


@pytest.fixture
def service(admin_engine, certs, tmp_path):
    with admin_engine.begin() as c:
        for table in reversed(Base.metadata.sorted_tables):
            c.execute(delete(table))
    cfg = Config(servers=[ServerEntry(n, f"https://127.0.0.1:{9000 + i}")
                          for i, n in enumerate(NODES)],
                 certs_dir=certs[0].root, data_dir=tmp_path, bcrypt_rounds=4)
    svc = AdminService(cfg, db.session_factory(admin_engine), NodesHeard())
    svc.servers.register(cfg.servers)
    svc.membership.bootstrap(cfg.servers)  # as admin/main.py does at start
    return svc


def add_user(service, name, admin=False):
    return service.accounts.create(name, f"{name}@example.com", 30, PASSWORD, admin).user


def caller(service, name):
    """The ``Caller`` a fresh login of ``name`` resolves to."""
    return service.identify(principal_of(service, name))


def principal_of(service, name):
    """The principal a node or this server resolves from ``name``'s login token."""
    token = service.login(name, PASSWORD, "127.0.0.1")["token"]
    claims = verify_token(load_public_key(service.layout.token_public_key), token)
    return Principal(name, "user", bool(claims.get("adm")), uid=claims["uid"],
                     credential=claims["jti"], expires=claims["exp"])


def user_certificate(certs, service, name):
    """A client certificate for ``name``'s current account: (cert path, key path)."""
    layout, ca = certs
    return ensure_user_cert(layout, ca, name, datetime.now(timezone.utc) + timedelta(days=1),
                            service.accounts.get(name).uid)


def file_report(server, owner, path, n=0):
    """A node's report that it stored ``owner/path``."""
    return {"id": f"r-{server}-{owner}-{path}-{n}", "server": server, "events": [{
        "type": "file", "record": {"owner": owner, "path": path, "size": 3, "digest": "00",
                                   "algorithm": "sha256", "version": 1, "origin": server,
                                   "modified": time.time(), "replicas": []}}]}
