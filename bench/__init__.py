"""SecuriFile's benchmarks: not part of the installed package; run from the repository root.

    scripts/bench ...               # = python -m bench: against nginx and vsftpd (docs/PERFORMANCE.md)
    .venv/bin/python -m bench.ha    # failure detection, failover reads, verification on return
    .venv/bin/python -m bench.admin # the admin server's queries at 1,000,000 files (docs/ADMIN-SCALE.md)

Modules import each other relatively (``from .measure import ...``) and the product as
``securifile.*``, so that ``python -m`` from the repository root finds both.
"""
