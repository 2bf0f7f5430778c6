"""Process logging: one format everywhere, and a warning on every line when TLS is off."""
import logging
import sys


def setup_logging(level, who, tls):
    prefix = "" if tls else "[NO TLS - DEBUG ONLY] "
    fmt = f"%(asctime)s {prefix}{who} %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), format=fmt,
                        stream=sys.stderr, force=True)
    if not tls:
        logging.getLogger("securifile").warning(
            "ENCRYPTION IS DISABLED: every byte travels in clear text; debugging only")
