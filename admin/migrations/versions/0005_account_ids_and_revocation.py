"""account ids, removed accounts, revoked credentials, file owner ids

Every account gets an immutable id (existing ones a random one); files remember the id of
the account that owned their name, so a later account of that name cannot reach them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
import uuid

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

NAME = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('uid', sa.String(length=32), nullable=True))
    users = sa.table('users', sa.column('id', sa.Integer), sa.column('uid', sa.String))
    conn = op.get_bind()
    for (user_id,) in conn.execute(sa.select(users.c.id)).all():
        conn.execute(users.update().where(users.c.id == user_id).values(uid=uuid.uuid4().hex))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('uid', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint('uq_users_uid', ['uid'])

    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_uid', sa.String(length=32), nullable=True))
    op.execute("UPDATE files SET owner_uid = (SELECT users.uid FROM users "
               "WHERE users.username = files.owner)")

    op.create_table('removed_accounts',
    sa.Column('uid', sa.String(length=32), nullable=False),
    sa.Column('username', NAME, nullable=False),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('purge_after', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('uid')
    )
    op.create_index('ix_removed_accounts_username', 'removed_accounts', ['username'], unique=False)
    op.create_table('revoked_credentials',
    sa.Column('id', sa.String(length=80), nullable=False),
    sa.Column('uid', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_revoked_credentials_uid', 'revoked_credentials', ['uid'], unique=False)
    op.create_index('ix_revoked_credentials_expires_at', 'revoked_credentials', ['expires_at'],
                    unique=False)


def downgrade():
    op.drop_index('ix_revoked_credentials_expires_at', table_name='revoked_credentials')
    op.drop_index('ix_revoked_credentials_uid', table_name='revoked_credentials')
    op.drop_table('revoked_credentials')
    op.drop_index('ix_removed_accounts_username', table_name='removed_accounts')
    op.drop_table('removed_accounts')
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_column('owner_uid')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint('uq_users_uid', type_='unique')
        batch_op.drop_column('uid')
