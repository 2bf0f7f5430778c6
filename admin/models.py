"""The admin database: users, files, placements, access grants, servers and their history.

This is the single source of what the GUI shows; nodes report into it. The same models run
on SQLite (the embedded default) and PostgreSQL (production, through pg8000).
"""
from datetime import datetime

from sqlalchemy import (
    BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Paths compare byte-wise ('C' collation on PostgreSQL, SQLite's default BINARY), so that a
# folder's files are one index range scan: path >= 'dir/' AND path < 'dir0'.
# Ids of rows that grow without bound: 64-bit on PostgreSQL, SQLite's rowid otherwise.
SerialId = BigInteger().with_variant(Integer, "sqlite")
PathString = String(1024).with_variant(String(1024, collation="C"), "postgresql")
NameString = String(64).with_variant(String(64, collation="C"), "postgresql")


class Base(DeclarativeBase):
    pass


class User(Base):
    """An account. ``uid`` is its immutable id: tokens and certificates carry it, and every
    decision compares it, so a later account of the same name never inherits them."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("uid", name="uq_users_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32))
    username: Mapped[str] = mapped_column(NameString, unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(100))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Credentials carry the generation they were issued in; a password change or reset
    # starts a new one, and every older token and certificate is refused.
    credential_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The most bytes the account's namespace may hold (each file counted once, whatever the
    # number of replicas); None: no limit.
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class QuotaReservation(Base):
    """Bytes an upload in progress may still add to its owner's namespace: granted before the
    node accepts them, so that concurrent uploads cannot together pass the quota. It ends
    when the node's report of the stored file is applied, when the node gives it back (a
    failed upload), or at ``expires_at`` (a node that died mid-upload)."""

    __tablename__ = "quota_reservations"
    __table_args__ = (Index("ix_quota_reservations_owner", "owner"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(NameString)
    path: Mapped[str] = mapped_column(PathString)
    bytes: Mapped[int] = mapped_column(BigInteger)  # growth of the owner's usage reserved
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class RemovedAccount(Base):
    """An account that was removed: its id never comes back, and while its namespace waits
    for its purge (``purge_after``) the files it left stay sealed (see docs/SECURITY.md)."""

    __tablename__ = "removed_accounts"

    uid: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(NameString, index=True)
    removed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    purge_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # When the nodes had deleted the last of its files (None: not yet). The row stays: its
    # id never comes back, and a late report of one of its files is still sealed.
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RevokedCredential(Base):
    """A token (``jti``) or certificate (``cert:SERIAL``) revoked before it expires, e.g. by
    logout; kept until then, and handed to nodes through their decisions."""

    __tablename__ = "revoked_credentials"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Enrolment(Base):
    """A single-use code that lets an account's owner set their password; only its SHA-256
    is kept, so the database alone does not let anyone enrol."""

    __tablename__ = "enrolments"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class File(Base):
    """A file as the nodes reported it; replicas are in Placement."""

    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("owner", "path", name="uq_files_owner_path"),
        Index("ix_files_owner_folder_path", "owner", "folder", "path"),
        Index("ix_files_under_replicated", "under_replicated"),
    )

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    owner: Mapped[str] = mapped_column(NameString)
    # The id of the account that owned the name when the file first appeared: a file of a
    # removed account stays sealed from a new account of the same name.
    owner_uid: Mapped[str | None] = mapped_column(String(32), nullable=True)
    path: Mapped[str] = mapped_column(PathString)
    folder: Mapped[str] = mapped_column(PathString)  # '' for the namespace root
    size: Mapped[int] = mapped_column(BigInteger)
    algorithm: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String(64))
    under_replicated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    modified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    placements: Mapped[list["Placement"]] = relationship(
        back_populates="file", cascade="all, delete-orphan", order_by="Placement.priority")


class Folder(Base):
    """Every folder that holds a file, directly or below: listing subfolders is an index scan."""

    __tablename__ = "folders"
    __table_args__ = (Index("ix_folders_owner_parent_path", "owner", "parent", "path"),)

    owner: Mapped[str] = mapped_column(NameString, primary_key=True)
    path: Mapped[str] = mapped_column(PathString, primary_key=True)
    parent: Mapped[str] = mapped_column(PathString)


class DeletedFile(Base):
    """The version a file was deleted at, so that a late report of an older version (queued
    on a node that was cut off) cannot bring it back."""

    __tablename__ = "deleted_files"

    owner: Mapped[str] = mapped_column(NameString, primary_key=True)
    path: Mapped[str] = mapped_column(PathString, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class OwnerUsage(Base):
    """Each owner's file count and volume, kept in step with ``files`` in the same transaction
    so the users list never aggregates a million rows."""

    __tablename__ = "owner_usage"

    owner: Mapped[str] = mapped_column(NameString, primary_key=True)
    file_count: Mapped[int] = mapped_column(BigInteger, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class Placement(Base):
    __tablename__ = "placements"

    file_id: Mapped[int] = mapped_column(
        SerialId, ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    server: Mapped[str] = mapped_column(String(64), primary_key=True)
    priority: Mapped[int] = mapped_column(Integer)
    file: Mapped[File] = relationship(back_populates="placements")


class Grant(Base):
    """A role on a file, or on a folder (``path`` ending in '/'), for one user."""

    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("owner", "path", "grantee", name="uq_grants_target_grantee"),
        Index("ix_grants_grantee", "grantee"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(NameString)
    path: Mapped[str] = mapped_column(PathString)
    grantee: Mapped[str] = mapped_column(NameString)
    role: Mapped[str] = mapped_column(String(8))
    granted_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Server(Base):
    __tablename__ = "servers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    admin_state: Mapped[str] = mapped_column(String(16), default="online")
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    available_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sampled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_report: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The newest membership epoch this server said it holds (admin/membership.py).
    known_epoch: Mapped[int] = mapped_column(Integer, default=0)


class WitnessLease(Base):
    """The tie-break lease the admin server last granted (one row), so that a membership
    change made by another process (the CLI) sees it too. ``until``: Unix time."""

    __tablename__ = "witness_leases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    side: Mapped[str] = mapped_column(Text)
    until: Mapped[float] = mapped_column(Float)


class Membership(Base):
    """One numbered list of the cluster's servers; the highest epoch is the current one.
    ``servers`` is JSON: [{"name", "url", "state": "member" | "draining"}]."""

    __tablename__ = "memberships"

    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    servers: Mapped[str] = mapped_column(Text)
    change: Mapped[str] = mapped_column(String(200), default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Observation(Base):
    """One server's current view of another: the aggregate status is derived from these."""

    __tablename__ = "observations"

    observer: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StatusChange(Base):
    __tablename__ = "status_history"
    __table_args__ = (Index("ix_status_history_server_at", "server", "at"),)

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    server: Mapped[str] = mapped_column(String(64))
    observer: Mapped[str] = mapped_column(String(64))
    old: Mapped[str] = mapped_column(String(16))
    new: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StorageSample(Base):
    __tablename__ = "storage_samples"
    __table_args__ = (Index("ix_storage_samples_server_t", "server", "t"),)

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    server: Mapped[str] = mapped_column(String(64))
    t: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_bytes: Mapped[int] = mapped_column(BigInteger)
    available_bytes: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    """Recent audit events (file access, status changes) for the GUI's live panel."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_at", "at"),
                      Index("ux_events_record_id", "record_id", unique=True))

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(16))
    server: Mapped[str] = mapped_column(String(64), default="")
    username: Mapped[str] = mapped_column(String(32), default="")
    operation: Mapped[str] = mapped_column(String(16), default="")
    path: Mapped[str] = mapped_column(String(1100), default="")
    result: Mapped[str] = mapped_column(String(32), default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    # The syslog message's own id (SD "rec@32473"): a copy received again is not stored.
    record_id: Mapped[str | None] = mapped_column(String(32), nullable=True, default=None)


class LoginFailure(Base):
    """A failed password check (admin/shared_throttle.py), by account, login or address."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),
                      Index("ix_login_failures_at", "at"))

    id: Mapped[int] = mapped_column(SerialId, primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    at: Mapped[float] = mapped_column(Float)


class LoginTrust(Base):
    """An address an account logged in from: it skips that account's back-off."""

    __tablename__ = "login_trust"

    account: Mapped[str] = mapped_column(String(300), primary_key=True)
    address: Mapped[str] = mapped_column(String(300), primary_key=True)
    at: Mapped[float] = mapped_column(Float)


class WitnessGrant(Base):
    """The tie-break lease itself (admin/witness.py): one row, id 1, taken by compare-and-set
    by any admin instance; ``side`` JSON list of names, ``until`` Unix time by the
    database's clock. (``WitnessLease`` is the copy written down for membership changes.)"""

    __tablename__ = "witness_lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    side: Mapped[str] = mapped_column(Text, default="")
    until: Mapped[float] = mapped_column(Float, default=0.0)


class AppliedReport(Base):
    """Report ids already applied, so a node's resend changes nothing."""

    __tablename__ = "applied_reports"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    server: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
