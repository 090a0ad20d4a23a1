"""Frontend TLS contexts, and certificates replaced at run time (the runtime
API's `set ssl cert` / `commit ssl cert`, as HAProxy's).

`tls_context()` builds a frontend's server-side context. A CertificateStore
knows the certificate files the frontends use; `set()` opens a transaction
with a new PEM (certificate and key), `commit()` builds a context with it
and hands it to `install(path, pem)`: the proxies take it for their next
handshakes, while established connections keep the context they were
accepted with. As in HAProxy, the file on disk is not written: a reload
reads the files again, so an operator who wants the new certificate to
stay writes the file too (kolla does both).
"""

from __future__ import annotations

import os
import ssl
from typing import Callable, Iterable, Optional

from .config import TLSSpec, set_ciphersuites

PEM_KEY_MARKERS = ("PRIVATE KEY-----",)


def tls_context(tls: TLSSpec, cert: Optional[str] = None, key: Optional[str] = None) -> ssl.SSLContext:
    """The server-side context of a frontend, from its files or from others
    (`cert`, `key`) holding a replacement."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # Python's defaults already, stated so they never depend on them: TLS 1.2
    # and newer, no compression (CRIME), no renegotiation (a client could
    # make us do a handshake's work again and again), as HAProxy.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(cert or tls.cert, key if cert else tls.key)
    if tls.alpn:
        context.set_alpn_protocols(list(tls.alpn))
    if tls.min_version:
        context.minimum_version = getattr(ssl.TLSVersion, tls.min_version.replace(".", "_"))
    if tls.ciphers:
        context.set_ciphers(tls.ciphers)
    if tls.ciphersuites:
        set_ciphersuites(context, tls.ciphersuites)
    return context


def context_from_pem(tls: TLSSpec, pem: str) -> ssl.SSLContext:
    """A context for `tls` with the certificate (and key) in `pem`; the key
    comes from tls.key when the PEM has none. ssl.SSLError if it is bad."""
    import shutil  # with tempfile: only for a certificate set at run time, not at start-up
    import tempfile
    workdir = tempfile.mkdtemp(prefix="lbcore-cert-")  # 0700: the key never sits anywhere readable
    try:
        path = os.path.join(workdir, "cert.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(pem)
        key = None if any(m in pem for m in PEM_KEY_MARKERS) else tls.key
        return tls_context(tls, path, key)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def describe(pem: str) -> dict:
    """What `show ssl cert PATH` prints about the first certificate of `pem`."""
    start = pem.find("-----BEGIN CERTIFICATE-----")
    end = pem.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        return {}
    block = pem[start:end + len("-----END CERTIFICATE-----")] + "\n"
    der = ssl.PEM_cert_to_DER_cert(block)
    import hashlib
    import shutil
    import tempfile
    workdir = tempfile.mkdtemp(prefix="lbcore-cert-")
    try:
        path = os.path.join(workdir, "c.pem")
        with open(path, "w") as f:
            f.write(block)
        decoded = ssl._ssl._test_decode_cert(path)  # CPython's own X.509 reader; no extra dependency
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def name(parts) -> str:
        return "".join(f"/{k}={v}" for rdn in parts for k, v in
                       ((_SHORT.get(k, k), v) for k, v in rdn))

    algorithm = "RSA" if "RSA PRIVATE KEY" in pem else "EC" if "EC PRIVATE KEY" in pem else ""
    return {
        "Serial": decoded.get("serialNumber", ""),
        "notBefore": decoded.get("notBefore", ""),
        "notAfter": decoded.get("notAfter", ""),
        "Subject Alternative Name": ", ".join(f"{k}:{v}" for k, v in decoded.get("subjectAltName", ())),
        "Algorithm": algorithm,
        "SHA1 FingerPrint": hashlib.sha1(der).hexdigest().upper(),
        "Subject": name(decoded.get("subject", ())),
        "Issuer": name(decoded.get("issuer", ())),
    }


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
          "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L", "emailAddress": "emailAddress"}


class CertificateError(Exception):
    pass


class CertificateStore:
    """The certificate files of the running config, transactions on them,
    and the PEMs committed since the last (re)load."""

    def __init__(self, get_specs: Callable[[], Iterable[TLSSpec]], install: Callable[[str, str], object]):
        self.get_specs = get_specs  # the frontends' TLS specs, read per call (reloads)
        self.install = install  # puts a committed PEM in service (every process)
        self.pending: dict[str, str] = {}
        self.committed: dict[str, str] = {}

    def spec_for(self, path: str) -> Optional[TLSSpec]:
        return next((tls for tls in self.get_specs() if tls.cert == path), None)

    def paths(self) -> list[str]:
        return list(dict.fromkeys(tls.cert for tls in self.get_specs()))

    def reloaded(self) -> None:
        """A reload read the files again: what was committed is forgotten."""
        self.committed.clear()

    def current_pem(self, path: str) -> str:
        if path in self.committed:
            return self.committed[path]
        with open(path) as f:
            return f.read()

    # -- runtime API answers ---------------------------------------------------

    def list_text(self) -> str:
        out = ""
        if self.pending:
            out += "# transaction\n" + "".join(f"*{p}\n" for p in self.pending)
        return out + "# filename\n" + "".join(f"{p}\n" for p in self.paths())

    def details_text(self, name: str) -> str:
        transaction = name.startswith("*")
        path = name[1:] if transaction else name
        if transaction:
            if path not in self.pending:
                return "Can't display the certificate: Not found or the certificate is a bundle!\n"
            pem, status = self.pending[path], "Unused"
        else:
            if self.spec_for(path) is None:
                return "Can't display the certificate: Not found or the certificate is a bundle!\n"
            try:
                pem = self.current_pem(path)
            except OSError as exc:
                return f"Can't read {path}: {exc.strerror}\n"
            status = "Used"
        fields = describe(pem)
        lines = [f"Filename: {name}", f"Status: {status}"]
        lines += [f"{k}: {v}" for k, v in fields.items()]
        return "\n".join(lines) + "\n"

    def set(self, path: str, pem: str) -> str:
        tls = self.spec_for(path)
        if tls is None:
            return (f"Can't replace a certificate which is not referenced by the configuration!\n"
                    f"Can't update {path}!\n")
        try:
            context_from_pem(tls, pem)
        except (ssl.SSLError, OSError, ValueError) as exc:
            return f"unable to load certificate from {path}: {exc}\nCan't update {path}!\n"
        updated = path in self.pending
        self.pending[path] = pem
        return f"Transaction {'updated' if updated else 'created'} for certificate {path}!\n"

    def commit(self, path: str) -> str:
        pem = self.pending.get(path)
        if pem is None:
            return f"No ongoing transaction! !\nCan't commit {path}!\n"
        try:
            self.install(path, pem)
        except (ssl.SSLError, OSError, ValueError) as exc:
            return f"Committing {path}.\nCan't commit {path}: {exc}!\n"
        del self.pending[path]
        self.committed[path] = pem
        return f"Committing {path}.\nSuccess!\n"

    def abort(self, path: str) -> str:
        if self.pending.pop(path, None) is None:
            return "No ongoing transaction!\n"
        return f"Transaction aborted for certificate '{path}'!\n"
