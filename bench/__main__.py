"""``python -m bench`` (what ``scripts/bench`` runs): SecuriFile against nginx and vsftpd."""
import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
