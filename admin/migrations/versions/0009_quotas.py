"""quotas: a quota per account, reservations of uploads in progress

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

NAME = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")
PATH = sa.String(1024).with_variant(sa.String(1024, collation="C"), "postgresql")


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quota_bytes', sa.BigInteger(), nullable=True))
    op.create_table('quota_reservations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('owner', NAME, nullable=False),
    sa.Column('path', PATH, nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_quota_reservations_owner', 'quota_reservations', ['owner'], unique=False)
    op.create_index('ix_quota_reservations_expires_at', 'quota_reservations', ['expires_at'],
                    unique=False)


def downgrade():
    op.drop_index('ix_quota_reservations_expires_at', table_name='quota_reservations')
    op.drop_index('ix_quota_reservations_owner', table_name='quota_reservations')
    op.drop_table('quota_reservations')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('quota_bytes')
