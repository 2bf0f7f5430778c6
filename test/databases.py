"""Database fixtures: every database test runs on SQLite and on a real PostgreSQL."""
import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from securifile.admin import db

PG_URL = os.environ.get("SECURIFILE_TEST_PG", "postgresql+pg8000://postgres@127.0.0.1:5432/postgres")


def fresh_postgres_database():
    """Create an empty database on the test server; returns (url, drop)."""
    name = "sf_test_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + "/" + name

    def drop():
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'admin.sqlite3'}"
        return
    url, drop = fresh_postgres_database()
    yield url
    drop()


@pytest.fixture
def sessions(db_url):
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    yield db.session_factory(engine)
    engine.dispose()
