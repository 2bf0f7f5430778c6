"""deleted files and report times

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('deleted_files',
    sa.Column('owner', sa.String(length=64).with_variant(sa.String(length=64, collation='C'), 'postgresql'), nullable=False),
    sa.Column('path', sa.String(length=1024).with_variant(sa.String(length=1024, collation='C'), 'postgresql'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('owner', 'path')
    )
    with op.batch_alter_table('deleted_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deleted_files_deleted_at'), ['deleted_at'], unique=False)

    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_report', sa.DateTime(timezone=True), nullable=True))



def downgrade():
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.drop_column('last_report')

    with op.batch_alter_table('deleted_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deleted_files_deleted_at'))

    op.drop_table('deleted_files')
