"""Files only their owner may read: databases with password hashes, audit logs, file data.

Every daemon sets ``PRIVATE_UMASK`` first thing, so whatever it or a library (SQLite's WAL
and shared-memory files) creates is 0600/0700. The helpers here also tighten files and
folders that something else may have created before, e.g. an older version.
"""
import os
from pathlib import Path

PRIVATE_UMASK = 0o077


def restrict_umask():
    """Set the process umask to 077; returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path):
    """Create ``path`` (and missing parents) as 0700; an existing folder is tightened."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def private_file(path):
    """Create ``path`` empty as 0600 unless it exists; either way it ends up 0600."""
    path = Path(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    path.chmod(0o600)
    return path


def open_private_append(path):
    """``open(path, "ab")`` for a file that must be 0600 (an audit log)."""
    return os.fdopen(os.open(private_file(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
