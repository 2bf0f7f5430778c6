"""TLS contexts for servers and clients: TLS 1.2 at least, our CA only, mutual TLS for peers.

Build a context once and share it: Tornado's HTTP client otherwise builds one per request,
which costs more than the request itself for small files.
"""
import ssl


def server_context(cert, key, ca):
    """A server context that asks for (but does not demand) a client certificate.

    Users may authenticate with a bearer token instead; endpoints that demand a node
    certificate check the verified peer certificate themselves. A certificate that is
    presented but not signed by our CA fails the handshake.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(ca, cert=None, key=None):
    """A client context that trusts only our CA and checks host names."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx
