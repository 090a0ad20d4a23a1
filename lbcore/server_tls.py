"""TLS to servers: the client-side context of one server spec, and the
name check HAProxy makes on the certificate a server presents.

`ServerTLS(spec)` is built once per server spec (lbcore/model.py, at start
and on reload), never per connection: it reads the CA and CRL files and
holds the ssl.SSLContext every connection to that server shares.

HAProxy 2.6's meaning, which lb.yaml follows:
- `verify required` checks the chain against `ca` (and `crl`), then, when
  a name is known, that the certificate carries it: the SNI sent if any,
  else `verifyhost`; with neither, any name is accepted (HAProxy's rule:
  without SNI, set verifyhost). `verify none` checks nothing.
- SNI is sent only when `sni` is set (HAProxy sends none by default);
  checks send `check_sni` instead, never the traffic's `sni`.
- The name check is HAProxy's: subjectAltName DNS entries and the subject's
  CNs, case-insensitive, a `*` only as the whole leftmost label, matching
  one label.
"""

from __future__ import annotations

import ssl
from typing import Optional

from .config import ServerTLSSpec, set_ciphersuites

SYSTEM_CA = "@system-ca"  # HAProxy 2.6's `ca-file @system-ca`: the system's trust store


class ServerTLS:
    """What a connection to one server needs for TLS: the context, the SNI
    to send and the name its certificate must carry (None: no name check)."""

    __slots__ = ("spec", "context", "sni", "verify_name", "check_sni", "check_verify_name",
                 "check_context")

    def __init__(self, spec: ServerTLSSpec) -> None:
        self.spec = spec
        self.context = client_context(spec, spec.alpn)
        verifying = spec.verify == "required"
        self.sni = spec.sni or ""
        self.verify_name = (spec.sni or spec.verifyhost) if verifying else None
        # Checks share the context unless check_alpn asks for other protocols.
        self.check_context = (client_context(spec, spec.check_alpn)
                              if spec.check_alpn and spec.check_alpn != spec.alpn else self.context)
        self.check_sni = spec.check_sni or ""
        self.check_verify_name = (spec.check_sni or spec.verifyhost) if verifying else None


def client_context(spec: ServerTLSSpec, alpn: tuple = ()) -> ssl.SSLContext:
    """The context for connections to a server. Raises OSError/ssl.SSLError
    (unreadable or bad CA/CRL file) or ValueError (bad ciphers)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Names are checked by check_name() against HAProxy's choice of name
    # (SNI, else verifyhost), which OpenSSL's own check cannot express.
    context.check_hostname = False
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if spec.verify == "required":
        context.verify_mode = ssl.CERT_REQUIRED
        if spec.ca == SYSTEM_CA:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        elif spec.ca:
            context.load_verify_locations(cafile=spec.ca)
        if spec.crl:
            # A PEM CRL file loads like a CA file; the flags make OpenSSL use
            # it for every certificate of the chain, as HAProxy does.
            context.load_verify_locations(cafile=spec.crl)
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    else:
        context.verify_mode = ssl.CERT_NONE
    if spec.min_version:
        context.minimum_version = getattr(ssl.TLSVersion, spec.min_version.replace(".", "_"))
    if spec.ciphers:
        context.set_ciphers(spec.ciphers)
    if spec.ciphersuites:
        set_ciphersuites(context, spec.ciphersuites)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def check_name(ssl_object, name: Optional[str]) -> Optional[str]:
    """None if the server's certificate carries `name` (or no name is to be
    checked), else why not."""
    if not name:
        return None
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        return "the server presented no certificate"
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    names += [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    if any(name_matches(pattern, name) for pattern in names):
        return None
    return f"certificate names {', '.join(names) or '(none)'} do not match {name!r}"


def name_matches(pattern: str, name: str) -> bool:
    """HAProxy's ssl_sock_srv_hostcheck: exact (case-insensitive), or a `*`
    leftmost label standing for exactly one non-empty label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if not pattern.startswith("*.") or "*" in pattern[1:]:
        return False
    first, dot, rest = name.partition(".")
    return bool(first) and bool(dot) and rest == pattern[2:] and "." in rest
