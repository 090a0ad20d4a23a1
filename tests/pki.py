"""A throwaway PKI for TLS tests: CAs, server certificates signed by them
and a CRL, written as PEM files (the `cryptography` package)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_NOW = datetime.datetime.now(datetime.timezone.utc)


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: str, *blobs: bytes) -> str:
    with open(path, "wb") as f:
        for blob in blobs:
            f.write(blob)
    return path


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    """A certificate authority in `directory`: `ca.path` is its PEM."""

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = _key()
        self.cert = (x509.CertificateBuilder()
                     .subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(_NOW - datetime.timedelta(days=1))
                     .not_valid_after(_NOW + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = _write(os.path.join(directory, f"{name}.pem"),
                           self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, dns: Iterable[str] = (), ips: Iterable[str] = ("127.0.0.1",)) -> tuple[str, str, int]:
        """A server certificate: (cert path, key path, serial)."""
        key = _key()
        serial = x509.random_serial_number()
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(cn)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(serial)
                   .not_valid_before(_NOW - datetime.timedelta(days=1))
                   .not_valid_after(_NOW + datetime.timedelta(days=2)))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = os.path.join(self.directory, f"{self.name}-{cn}-{serial % 100000}")
        return (_write(stem + ".crt", cert.public_bytes(serialization.Encoding.PEM)),
                _write(stem + ".key", _pem_key(key)), serial)

    def crl(self, revoked: Iterable[int] = ()) -> str:
        """A CRL (PEM) revoking the given serials."""
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(self.cert.subject)
                   .last_update(_NOW - datetime.timedelta(hours=1))
                   .next_update(_NOW + datetime.timedelta(days=1)))
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(_NOW - datetime.timedelta(hours=1)).build())
        crl = builder.sign(self.key, hashes.SHA256())
        return _write(os.path.join(self.directory, f"{self.name}-crl-{len(list(revoked))}.pem"),
                      crl.public_bytes(serialization.Encoding.PEM))
