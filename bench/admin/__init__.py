"""``python -m bench.admin``: the admin server's queries at scale (see __main__.py)."""
