"""What every storage-node handler is given: the node it serves and the authenticator that
says who calls it. Handlers with more to know name it in their own ``initialize``."""
from securifile.common.web import ApiHandler

from .storage import StorageNode


class NodeHandler(ApiHandler):
    def initialize(self, node: StorageNode, authenticator):
        self.node = node
        self.authenticator = authenticator
