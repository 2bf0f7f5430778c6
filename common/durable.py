"""Durable writes: after a file is renamed into place, its folder is synced too, or a crash
can forget the rename (the file's own fsync does not cover the directory entry)."""
import os


def fsync_dir(path):
    """Flush the directory ``path`` (its entries: renames and new names) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
