"""Which headers a `Connection` header makes hop-by-hop.

RFC 9110 7.6.1: a proxy removes the headers that `Connection` names before
forwarding a message. Framing and Host are exempt whatever a peer names:
removing `Content-Length` or `Transfer-Encoding` while the body still goes
through leaves the body unframed, so the next hop reads it as the next
message (request smuggling, response splitting); removing `Host` changes
which site the request is for. HAProxy does not drop them either. Such a
token is ignored, the message is otherwise forwarded as usual.
"""

from __future__ import annotations

# Tokens that are options of the connection itself, not header names.
CONNECTION_OPTIONS = frozenset((b"close", b"keep-alive", b"upgrade", b""))

# Headers no Connection token can remove.
NEVER_HOP_BY_HOP = frozenset((b"content-length", b"transfer-encoding", b"host"))


def named_headers(value: bytes) -> frozenset:
    """The lower-case header names a Connection value makes hop-by-hop."""
    named = frozenset(t.strip(b" \t").lower() for t in value.split(b","))
    return named - CONNECTION_OPTIONS - NEVER_HOP_BY_HOP
