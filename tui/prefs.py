"""What the terminal client remembers between runs: the admin server, the user, the CA file
and the theme, in ``tui.json`` next to the saved login (``~/.config/securifile``).

Never a password: only the keys below are ever written, and the file is 0600 all the same.
"""
import json
import os
from pathlib import Path

from securifile.client.settings import default_login_dir

KEYS = ("admin_url", "username", "ca", "theme")


class Preferences:
    FILE = "tui.json"

    def __init__(self, folder):
        self.folder = Path(folder) if folder else None

    @classmethod
    def default(cls):
        return cls(default_login_dir())

    @property
    def path(self):
        return self.folder / self.FILE if self.folder else None

    def load(self):
        """The remembered values (an empty dict when none, or when the file is unreadable)."""
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if k in KEYS and isinstance(v, str)} if isinstance(data, dict) else {}

    def update(self, **values):
        """Remember these values (None forgets one); False when there is nowhere to write."""
        if self.path is None:
            return False
        unknown = set(values) - set(KEYS)
        if unknown:
            raise ValueError(f"not remembered: {', '.join(sorted(unknown))}")
        data = self.load()
        for key, value in values.items():
            if value is None or value == "":
                data.pop(key, None)
            else:
                data[key] = str(value)
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            temp = self.folder / f".{self.FILE}.{os.getpid()}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
            os.replace(temp, self.path)
        except OSError:
            return False  # remembering is a convenience; a read-only home must not stop a login
        return True
