"""Starting a cluster on one machine (``securifile up``) and issuing its certificates and
tokens (``securifile-certs``): provisioning for operators and the test harness, run beside the
servers rather than inside them."""
