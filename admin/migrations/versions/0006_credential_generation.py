"""credential generation per account

A password change or an administrator's reset starts a new generation; tokens and
certificates of older generations are refused. Existing accounts start at 0, which is what
credentials issued before this migration (without a generation) count as: nobody is logged
out by the upgrade.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('credential_generation', sa.Integer(), nullable=False,
                                      server_default='0'))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('credential_generation')
