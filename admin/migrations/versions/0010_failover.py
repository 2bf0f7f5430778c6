"""two admin server instances on one database: the witness lease, syslog record ids, the
login back-off

The tie-break lease moves from one process's memory into one row that every instance
updates with a compare-and-set; audit events keep the id each syslog message carries, so a
message sent again (after a broken connection, or to the other instance) is stored once;
failed logins and trusted addresses are rows, so both instances count one back-off.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    lease = op.create_table(
        'witness_lease',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('side', sa.Text(), nullable=False),
        sa.Column('until', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.bulk_insert(lease, [{'id': 1, 'side': '', 'until': 0.0}])
    op.create_table(
        'login_failures',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('key', sa.String(length=300), nullable=False),
        sa.Column('at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_login_failures_key_at', 'login_failures', ['key', 'at'])
    op.create_index('ix_login_failures_at', 'login_failures', ['at'])
    op.create_table(
        'login_trust',
        sa.Column('account', sa.String(length=300), nullable=False),
        sa.Column('address', sa.String(length=300), nullable=False),
        sa.Column('at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('account', 'address'))
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('record_id', sa.String(length=32), nullable=True))
        batch_op.create_index('ux_events_record_id', ['record_id'], unique=True)


def downgrade():
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ux_events_record_id')
        batch_op.drop_column('record_id')
    op.drop_table('witness_lease')
    op.drop_table('login_trust')
    op.drop_index('ix_login_failures_at', 'login_failures')
    op.drop_index('ix_login_failures_key_at', 'login_failures')
    op.drop_table('login_failures')
