"""cluster membership: numbered server lists, the epoch each server knows, the witness's lease

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('memberships',
                    sa.Column('epoch', sa.Integer(), nullable=False),
                    sa.Column('servers', sa.Text(), nullable=False),
                    sa.Column('change', sa.String(length=200), nullable=False),
                    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('epoch'))
    op.create_table('witness_leases',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('side', sa.Text(), nullable=False),
                    sa.Column('until', sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('known_epoch', sa.Integer(), nullable=False,
                                      server_default='0'))


def downgrade():
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.drop_column('known_epoch')
    op.drop_table('witness_leases')
    op.drop_table('memberships')
