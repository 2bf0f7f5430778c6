"""Durable writes: a rename or unlink lasts a crash only once its folder is synced too."""
import os


def fsync_dir(path):
    """Flush the directory entry changes (creations, renames, unlinks) of folder ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
