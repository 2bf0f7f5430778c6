"""index of under-replicated files

The servers listing counts each server's under-replicated files; few files are, so an index
on the flag keeps that count from scanning every file.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index('ix_files_under_replicated', ['under_replicated'], unique=False)


def downgrade():
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('ix_files_under_replicated')
