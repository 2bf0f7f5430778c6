"""The tie-break witness: in an even split of the servers, one side at a time goes on.

A side that reaches exactly half of the servers asks for a short lease; the witness grants
it to one side until the lease runs out unrenewed, and refuses every other side meanwhile.
Any member of the granted side renews it. The nodes count their lease from before they
asked and shorten it, so the old side has stopped before the witness grants a new one.

The lease is one database row, changed by a single compare-and-set UPDATE (grant when the
row names this side or has run out), so that two admin server instances on one database
never grant it to both sides: PostgreSQL re-checks the condition on the row a concurrent
grant just committed. Its times come from the database's clock, the one clock both
instances share.
"""
import json

from sqlalchemy import Float, literal, literal_column, select, update

from .coordination import insert_once
from .models import WitnessGrant

MAX_LEASE = 60.0
ROW = 1


def database_now(dialect):
    """Epoch seconds by the database server's clock, as an SQL expression."""
    if dialect == "postgresql":
        return literal_column("(EXTRACT(EPOCH FROM clock_timestamp())::float8)", Float)
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Float)


class Witness:
    """``sessions``: the admin database; ``clock``: epoch seconds (tests), else the
    database's own clock."""

    def __init__(self, sessions, clock=None):
        self.sessions = sessions
        self.clock = clock

    def _now(self, s):
        if self.clock is not None:
            return literal(float(self.clock()), Float)
        return database_now(s.get_bind().dialect.name)

    def ask(self, asker, side, lease):
        """Grant (True) or refuse the lease of ``lease`` seconds for ``side``."""
        side = sorted(set(side))
        lease = max(0.0, min(float(lease), MAX_LEASE))
        if asker not in side:
            return False
        key = json.dumps(side)
        with self.sessions.begin() as s:
            # The row is made by the schema's migration; a schema made otherwise gets it here.
            s.execute(insert_once(s, WitnessGrant, {"id": ROW, "side": "", "until": 0.0}, "id"))
            now = self._now(s)
            granted = s.execute(
                update(WitnessGrant)
                .where(WitnessGrant.id == ROW)
                .where((WitnessGrant.side == key) | (WitnessGrant.until <= now))
                .values(side=key, until=now + lease)
                .execution_options(synchronize_session=False)).rowcount == 1
        return granted

    def remaining(self):
        """Seconds left of the lease held now (0 when none is)."""
        with self.sessions() as s:
            left = s.scalar(select(WitnessGrant.until - self._now(s))
                            .where(WitnessGrant.id == ROW))
        return max(0.0, float(left or 0.0))

    def lease_live(self):
        """A side may be serving on a tie: the membership must not change under it."""
        return self.remaining() > 0

    @property
    def side(self):
        with self.sessions() as s:
            held = s.scalar(select(WitnessGrant.side).where(WitnessGrant.id == ROW))
        return json.loads(held) if held else None
