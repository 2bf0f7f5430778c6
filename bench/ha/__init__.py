"""``python -m bench.ha``: failure detection, failover reads, verification on return (see __main__.py)."""
