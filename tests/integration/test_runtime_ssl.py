"""`show ssl cert`, `set ssl cert PATH <<` + PEM, `commit ssl cert PATH`
over the runtime socket: new TLS handshakes get the new certificate,
connections already established keep working. Certificates from openssl,
clients are openssl s_client and Python's ssl."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from tests.support import BackendProcess, LbcoreProcess, free_port, http_config, socat, wait_unix


def make_cert(directory: str, name: str) -> str:
    key, crt = os.path.join(directory, f"{name}.key"), os.path.join(directory, f"{name}.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "30", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
                   check=True, capture_output=True, timeout=60)
    pem = os.path.join(directory, f"{name}.pem")
    with open(pem, "w") as out:
        out.write(open(crt).read() + open(key).read())
    return pem


def s_client_subject(port: int) -> str:
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "x"],
                            input=b"", capture_output=True, timeout=20)
    text = result.stdout.decode(errors="replace")
    return next(line for line in text.splitlines() if line.startswith("subject="))


def tls_get(sock: ssl.SSLSocket) -> bytes:
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0]


def open_tls(port: int) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))


@pytest.mark.parametrize("workers", [1, 2])
def test_set_and_commit_ssl_cert(workers):
    work = tempfile.mkdtemp(prefix="lbcore-ssl-")
    one, two = make_cert(work, "one.test"), make_cert(work, "two.test")
    backend = BackendProcess("s1").start()
    port = free_port()
    sock_path = os.path.join(work, "admin.sock")
    config = http_config([backend.address], port, frontend={"tls": {"cert": one}})
    config["stats"] = {"socket": {"path": sock_path}}
    config["global"]["workers"] = workers
    lb = LbcoreProcess(config, workdir=work).start()
    try:
        wait_unix(sock_path, proc=lb.proc)
        target = f"unix-connect:{sock_path}"
        assert socat(target, "show ssl cert\n") == f"# filename\n{one}\n\n"
        details = socat(target, f"show ssl cert {one}\n")
        assert f"Filename: {one}\nStatus: Used\n" in details and "Subject: /CN=one.test" in details

        established = open_tls(port)
        assert tls_get(established) == b"HTTP/1.1 200 OK"
        assert "CN = one.test" in s_client_subject(port)

        pem = open(two).read()
        assert socat(target, f"set ssl cert {one} <<\n{pem}\n") == f"Transaction created for certificate {one}!\n\n"
        assert socat(target, "show ssl cert\n") == f"# transaction\n*{one}\n# filename\n{one}\n\n"
        assert "Subject: /CN=two.test" in socat(target, f"show ssl cert *{one}\n")
        assert "CN = one.test" in s_client_subject(port)  # not before the commit
        assert socat(target, f"commit ssl cert {one}\n") == f"Committing {one}.\nSuccess!\n\n"

        # Every new handshake (each worker's too) gets the new certificate...
        for _ in range(6):
            assert "CN = two.test" in s_client_subject(port)
        fresh = open_tls(port)
        assert tls_get(fresh) == b"HTTP/1.1 200 OK"
        # ...and the connection opened before is untouched.
        assert tls_get(established) == b"HTTP/1.1 200 OK"
        established.close()
        fresh.close()

        assert socat(target, f"commit ssl cert {one}\n") == f"No ongoing transaction! !\nCan't commit {one}!\n\n"
        assert socat(target, f"set ssl cert {one} <<\nnot a certificate\n\n").endswith(f"Can't update {one}!\n\n")
        assert socat(target, f"set ssl cert /etc/other.pem <<\n{pem}\n").startswith(
            "Can't replace a certificate which is not referenced by the configuration!")
        assert "certificate " + one + " replaced" in lb.logs()
    finally:
        lb.stop()
        backend.stop()
