"""A real HTTP/1.1 backend for tests, run as its own process so a test can
SIGKILL it: `python tests/backend.py --port P --name s1`.

Paths:
  /echo              JSON: server name, method, path, headers, body sha256/length
  /size/N            N bytes of a repeating pattern (Content-Length)
  /chunked/N         N bytes sent chunked in 16 KiB chunks
  /status/N          answers status N
  /sleep/S           answers after S seconds
  /healthcheck       200, or the status in the file given by --health-file
  /ws                101 Switching Protocols, then echoes bytes (upgrade tunnel)
  /headers?K=V&...   200 with each K: V added to the response head
  /connclose         200 with Connection: close, then closes
  /close             reads the request, closes without answering
  /garbage           answers bytes that are not HTTP, then closes
  /badlength         answers a head whose Content-Length is not a number
  /truncate/N        announces N bytes, sends N/2, then closes
  /slowbody/S        waits S seconds before reading the body (upload back-pressure)
  /early/N           answers status N at once without reading the body, then closes
  /bighead/N         200 with an N-byte X-Big response header
  /lateclose         200 that promises keep-alive, then closes at once (stale pooled connection)
  /diehead/NAME/N    the server named NAME sends a 200 head announcing N bytes and a few of
                     them, then SIGKILLs its whole process (a crash mid-response); any
                     other server answers like /size/N
  /diechunk/NAME/N   the same with a chunked response
  /tls               JSON (with --tls-cert): {"handshakes": N, "sni": [names sent, null for none]}
  /closebody, /http10, /dupcl, /clte, /notmod, /hints, /overlong, /badchunk   raw answers (see RAW_ANSWERS), then close
  anything else      like /echo
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATTERN = bytes(range(256)) * 64  # 16 KiB


def pattern_bytes(n: int) -> bytes:
    reps = n // len(PATTERN) + 1
    return (PATTERN * reps)[:n]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "testbackend"
    # Headers and body go out in two writes; with Nagle the body waits for
    # the peer's delayed ACK (40 ms), capping a keep-alive client at ~25 req/s.
    disable_nagle_algorithm = True

    def log_message(self, *args):  # quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        hasher_limit = 1 << 20
        if length <= hasher_limit:
            return self.rfile.read(length)
        # Large uploads: hash as we go, keep nothing.
        digest = hashlib.sha256()
        left = length
        while left:
            block = self.rfile.read(min(left, 1 << 16))
            if not block:
                break
            digest.update(block)
            left -= len(block)
        self._big_digest = (digest.hexdigest(), length - left)
        return b""

    def _send(self, status: int, body: bytes, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("X-Server", self.server.name)
        for k, v in extra:
            self.send_header(k, v)
        if self.command == "HEAD" or status in (204, 304) or status < 200:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        if self.server.two_writes:
            # As Python's http.server, many WSGI servers and the demo's
            # backends do: the head, then the body, with Nagle on.
            self.end_headers()
            self.wfile.write(body)
            return
        # Head and body in one send(), as nginx does for small answers: a
        # SIGKILL between two writes would truncate a response, a failure no
        # load balancer can hide, and failover drills would count it.
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    def _send_chunked(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("X-Server", self.server.name)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(data), 16384):
            piece = data[i:i + 16384]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def _echo(self):
        self._big_digest = None
        body = self._read_body()
        if self._big_digest:
            sha, length = self._big_digest
        else:
            sha, length = hashlib.sha256(body).hexdigest(), len(body)
        info = {
            "server": self.server.name,
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_sha256": sha,
            "body_length": length,
            "peer": list(self.client_address[:2]),
        }
        if self.path.startswith("/echo/body"):
            self._send(200, body, "application/octet-stream")
            return
        self._send(200, json.dumps(info).encode())

    def _route(self):
        path = self.path.split("?")[0]
        parts = path.strip("/").split("/")
        if parts[0] == "tls" and self.server.tls is not None:
            self._read_body()
            self._send(200, json.dumps(self.server.tls.seen()).encode())
        elif parts[0] == "healthcheck":
            self._read_body()
            status = 200
            if self.server.health_file and os.path.exists(self.server.health_file):
                with open(self.server.health_file) as f:
                    text = f.read().strip()
                if text == "hang":
                    time.sleep(3600)
                status = int(text or 200)
            self._send(status, b"ok\n" if status == 200 else b"bad\n", "text/plain")
        elif parts[0] == "size" and len(parts) > 1:
            self._read_body()
            self._send(200, pattern_bytes(int(parts[1])), "application/octet-stream")
        elif parts[0] == "chunked" and len(parts) > 1:
            self._read_body()
            n = int(parts[1])
            self._send_chunked(pattern_bytes(n))
        elif parts[0] == "status" and len(parts) > 1:
            self._read_body()
            self._send(int(parts[1]), b"" if int(parts[1]) in (204, 304) else b"status\n", "text/plain")
        elif parts[0] == "sleep" and len(parts) > 1:
            self._read_body()
            time.sleep(float(parts[1]))
            self._send(200, b"slept\n", "text/plain")
        elif parts[0] == "ws":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            conn = self.connection
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            self.close_connection = True
        elif parts[0] in RAW_ANSWERS:
            self._read_body()
            self.wfile.write(RAW_ANSWERS[parts[0]])
            self.wfile.flush()
            self.close_connection = True
        elif parts[0] == "headers":
            self._read_body()
            from urllib.parse import parse_qsl, urlsplit
            extra = parse_qsl(urlsplit(self.path).query, keep_blank_values=True)
            self._send(200, b"headers\n", "text/plain", extra)
        elif parts[0] == "connclose":
            self._read_body()
            self._send(200, b"closing\n", "text/plain", [("Connection", "close")])
            self.close_connection = True
        elif parts[0] == "truncate" and len(parts) > 1:
            self._read_body()
            n = int(parts[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            self.wfile.write(pattern_bytes(n // 2))
            self.wfile.flush()
            self.close_connection = True
        elif parts[0] in ("diehead", "diechunk") and len(parts) > 2:
            self._read_body()
            n = int(parts[2])
            chunked = parts[0] == "diechunk"
            if parts[1] != self.server.name:
                if chunked:
                    self._send_chunked(pattern_bytes(n))
                else:
                    self._send(200, pattern_bytes(n), "application/octet-stream")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("X-Server", self.server.name)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"10\r\n" + pattern_bytes(16) + b"\r\n")
            else:
                self.send_header("Content-Length", str(n))
                self.end_headers()
                self.wfile.write(pattern_bytes(min(16, n // 2)))
            self.wfile.flush()
            time.sleep(0.05)  # let the head reach the proxy first
            os.kill(os.getpid(), signal.SIGKILL)
        elif parts[0] == "lateclose":
            self._read_body()
            self._send(200, b"late\n", "text/plain")
            self.close_connection = True
        elif parts[0] == "bighead" and len(parts) > 1:
            self._read_body()
            self._send(200, b"big\n", "text/plain", [("X-Big", "b" * int(parts[1]))])
        elif parts[0] == "early" and len(parts) > 1:
            self._send(int(parts[1]), b"early\n", "text/plain", [("Connection", "close")])
            self.wfile.flush()
            # Lingering close, as real servers do: closing with the upload
            # still unread would reset the connection and could destroy the
            # answer before the proxy reads it.
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(2)
            try:
                while self.connection.recv(65536):
                    pass
            except OSError:
                pass
            self.close_connection = True
        elif parts[0] == "slowbody" and len(parts) > 1:
            time.sleep(float(parts[1]))
            self._echo()
        else:
            self._echo()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _route


class NagleHandler(Handler):
    """--two-writes: Nagle's algorithm stays on (http.server's default)."""

    disable_nagle_algorithm = False


# Answers written as raw bytes, each followed by closing the connection.
RAW_ANSWERS = {
    "close": b"",
    "garbage": b"this is not HTTP at all\r\n\r\n",
    "badlength": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nbody",
    # A body delimited by the end of the connection (no length, not chunked).
    "closebody": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + pattern_bytes(100000),
    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    # A 304 may announce the length of the representation it stands for.
    "notmod": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: \"v1\"\r\n\r\n",
    "hints": (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    # More bytes than announced: the excess must never reach a client.
    "overlong": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
    "badchunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    "dupcl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "clte": (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5\r\nhello\r\n0\r\n\r\n"),
}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, addr, name, health_file, two_writes=False, tls=None):
        self.name = name
        self.health_file = health_file
        self.two_writes = two_writes
        self.tls = tls  # a TLSServing: every accepted connection speaks TLS
        handler = NagleHandler if two_writes else Handler
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap(sock)
        return sock, addr

    def handle_error(self, request, client_address):
        if self.tls is not None and isinstance(sys.exc_info()[1], (ssl.SSLError, OSError)):
            return  # a refused handshake (the test's point, often): not a traceback
        super().handle_error(request, client_address)


class TLSServing:
    """The server side of TLS for the test backends: the handshakes seen and
    the SNI each one sent, for tests of what lbcore sends its servers."""

    def __init__(self, cert: str, key: str) -> None:
        import threading
        self.lock = threading.Lock()
        self.handshakes = 0
        self.names: list = []
        context = self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = self._hello

    def _hello(self, ssl_object, server_name, context) -> None:
        with self.lock:  # called once per ClientHello, SNI or not
            self.handshakes += 1
            self.names.append(server_name)

    def seen(self) -> dict:
        with self.lock:
            return {"handshakes": self.handshakes, "sni": list(self.names)}

    def wrap(self, sock):
        # The handshake happens at the first read, in the connection's own
        # thread: a stalled client never holds up the accept loop.
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="backend")
    parser.add_argument("--health-file", default=None)
    parser.add_argument("--tcp-echo", action="store_true", help="raw TCP echo with half-close")
    parser.add_argument("--two-writes", action="store_true",
                        help="answer in two writes (head, body) with Nagle on, as http.server does")
    parser.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", default=None, help="its key (PEM)")
    args = parser.parse_args()
    tls = TLSServing(args.tls_cert, args.tls_key) if args.tls_cert else None
    if args.tcp_echo:
        tcp_echo(args.host, args.port, args.name, tls)
        return
    server = Server((args.host, args.port), args.name, args.health_file, args.two_writes, tls)
    print("ready", flush=True)
    server.serve_forever()


def tcp_echo(host: str, port: int, name: str, tls: "TLSServing" = None) -> None:
    """Echo every byte; on the client's FIN, finish sending and close
    (half-close). With `tls`, over TLS; a read of exactly "?tls\n" is
    answered "{name} handshakes=N sni=NAME" instead of echoed."""
    import threading

    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(512)
    print("ready", flush=True)

    def serve(conn):
        if tls is not None:
            try:
                conn = tls.wrap(conn)
                conn.do_handshake()
            except (ssl.SSLError, OSError):
                conn.close()
                return
        with conn:
            greeting = os.environ.get("TCP_ECHO_GREETING")
            if greeting:
                conn.sendall(greeting.replace("{name}", name).encode())
            while True:
                try:
                    data = conn.recv(65536)
                except (ssl.SSLError, OSError):
                    break
                if not data:
                    break
                if tls is not None and data == b"?tls\n":
                    seen = tls.seen()
                    conn.sendall(f"{name} handshakes={seen['handshakes']} sni={seen['sni'][-1]}\n".encode())
                    continue
                conn.sendall(data)
            try:
                if tls is not None:
                    conn = conn.unwrap()  # close_notify: TLS's way to say "no more"
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the peer is gone already (a proxy shut the session)

    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
