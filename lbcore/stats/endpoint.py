"""The stats/admin HTTP endpoint on `stats.bind`.

An asyncio HTTP/1.1 server on h11 (sans-I/O: every parsing decision and
keep-alive state lives in h11; this module only moves bytes). It is not
on the forwarding path, so clarity beats speed here. What it serves:

    GET  /                  HTML page (auto-refresh every stats.refresh)
    GET  /stats.json        JSON
    GET  /stats.csv         HAProxy CSV; also HAProxy's `/;csv`,
                            `/stats;csv`, `/haproxy?stats;csv`
    GET  /metrics           Prometheus text format (`?scope=` as HAProxy)
    POST /admin/backends/{backend}/servers/{server}   admin API

`get_snapshot` is called once per request, so the caller decides what is
shown: the current runtime after a reload, or the merge of all workers.
It and `admin.apply` may return awaitables (a master asking its workers).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import http
import inspect
import logging
import re
import socket
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from ..config import Address, StatsSpec
from .admin import AdminError, AdminHandler, log_change, log_refusal, parse_body
from .csvview import render_csv
from .htmlpage import render_html
from .jsonview import render_json
from .prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE, parse_scopes, render_metrics
from ..listeners import inherited
from ..proxy import errors
from .rates import RateMeter

log = logging.getLogger("lbcore.stats")

MAX_HEAD = 16 * 1024  # request line + headers
MAX_BODY = 64 * 1024  # admin bodies are a few bytes
MAX_CONNECTIONS = 256  # a stats port is for a few dashboards, not a crowd
IDLE_TIMEOUT = 30.0  # keep-alive wait for the next request
REQUEST_TIMEOUT = 10.0  # a started request must arrive whole within this

READ_METHODS = ("GET", "HEAD")
ADMIN_PATH = re.compile(r"^/admin/backends/([^/]+)/servers/([^/]+)/?$")
# HAProxy's stats URIs that scripts use with ";csv".
CSV_ALIAS_BASES = ("/", "/stats", "/haproxy")

Response = tuple[int, list[tuple[str, str]], bytes]
SnapshotSource = Callable[[], Union[dict, Any]]


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _text(status: int, message: str, extra: Optional[list[tuple[str, str]]] = None) -> Response:
    return status, [("Content-Type", "text/plain; charset=utf-8")] + (extra or []), (message + "\n").encode()


def _json(status: int, payload: Any) -> Response:
    return status, [("Content-Type", "application/json")], render_json(payload)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _head_too_large(buffered: bytes) -> bool:
    if len(buffered) <= MAX_HEAD:
        return False
    head = buffered[:MAX_HEAD + 4]
    return b"\r\n\r\n" not in head and b"\n\n" not in head


# The page's admin form actions -> the admin state they set (None: not a state).
PAGE_ACTIONS = {"ready": "ready", "drain": "drain", "maint": "maint", "weight": None, "shutdown": None}


def _redirect(status: str) -> Response:
    return 303, [("Location", f"/;st={status}"), ("Content-Type", "text/plain; charset=utf-8")], b""


def _same_origin(request: h11.Request) -> bool:
    """True unless the browser says the form came from another site."""
    headers = {k: v.decode("latin-1") for k, v in request.headers}
    host = headers.get(b"host", "")
    for name in (b"origin", b"referer"):
        value = headers.get(name)
        if value and value != "null":
            return urlsplit(value).netloc == host
    return True


class _BodyTooLarge(Exception):
    pass


def _listening_socket(address: Address) -> socket.socket:
    handed = inherited.take(address)  # from the lbcore this one replaces (-sf)
    if handed:
        for extra in handed[1:]:
            extra.close()
        return handed[0]
    host = address.host or "0.0.0.0"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise OSError(f"stats.bind {address}: cannot resolve {host!r}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # A restart must not wait out TIME_WAIT on the stats port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"stats.bind {address}: {exc.strerror}") from None
    return sock


class StatsEndpoint:
    def __init__(self, spec: StatsSpec, get_snapshot: SnapshotSource, admin: AdminHandler,
                 metrics_only: bool = False):
        self.spec = spec  # replaced on reload: auth, admin and refresh apply to the next request
        # An exporter port (stats.metrics_bind): /metrics and nothing else.
        self.metrics_only = metrics_only
        self.get_snapshot = get_snapshot
        self.admin = admin
        self.rates = RateMeter()
        self._server: Optional[asyncio.base_events.Server] = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle -----------------------------------------------------------

    async def start(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        """Bind `spec.bind` and serve on the running loop (`loop`, if given,
        must be it); raises OSError naming the address."""
        sock = _listening_socket(self.spec.bind)
        try:
            context = None
            if self.spec.tls is not None and not self.metrics_only:
                from ..certificates import tls_context
                context = tls_context(self.spec.tls)
            self._server = await asyncio.start_server(self._serve, sock=sock, ssl=context)
        except Exception:
            sock.close()
            raise
        log.info("stats endpoint listening on %s", self.address)

    @property
    def address(self) -> str:
        if not self._server or not self._server.sockets:
            return str(self.spec.bind)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def listening_fds(self) -> list[int]:
        """For an -sf takeover (lbcore.takeover): the new process serves on
        the same socket, so a scraper never sees the port refused."""
        return [sock.fileno() for sock in self._server.sockets] if self._server is not None else []

    def close(self) -> None:
        """Stop listening and drop open connections (a stats client retries)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    # -- connections ---------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            while True:
                try:
                    request, body = await self._read_request(conn, reader, writer)
                except h11.RemoteProtocolError as exc:
                    await self._send_error(conn, writer, exc.error_status_hint or 400, f"bad request: {exc}")
                    break
                except _BodyTooLarge:
                    await self._send_error(conn, writer, 413, f"request body larger than {MAX_BODY} bytes")
                    break
                if request is None:
                    break
                if request.http_version not in (b"1.0", b"1.1"):
                    await self._send_error(conn, writer, 505, "only HTTP/1.0 and HTTP/1.1 are served here")
                    break
                response = await self._respond(request, body, peer)
                await self._send(conn, writer, request, response)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception:  # one broken client must never take the endpoint down
            log.exception("stats endpoint: connection from %s failed", peer)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> tuple[Optional[h11.Request], bytes]:
        request: Optional[h11.Request] = None
        body = bytearray()
        loop = asyncio.get_running_loop()
        deadline: Optional[float] = None  # one deadline per request, so a trickle cannot hold it open
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                if deadline is None and (request is not None or conn.trailing_data[0]):
                    deadline = loop.time() + REQUEST_TIMEOUT
                timeout = IDLE_TIMEOUT if deadline is None else max(0.0, deadline - loop.time())
                data = await asyncio.wait_for(reader.read(65536), timeout)
                if deadline is None and data:
                    deadline = loop.time() + REQUEST_TIMEOUT
                conn.receive_data(data)
                # h11 bounds only heads still incomplete; a big head that
                # arrives in one read must be refused too.
                if request is None and _head_too_large(conn.trailing_data[0]):
                    raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            elif isinstance(event, h11.Request):
                request = event
                length = next((v for k, v in event.headers if k == b"content-length"), b"0")
                if int(length) > MAX_BODY:  # h11 has checked it is a number
                    raise _BodyTooLarge()
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise _BodyTooLarge()
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None, b""

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    request: h11.Request, response: Response) -> None:
        status, headers, body = response
        headers = headers + [("Content-Length", str(len(body))), ("Cache-Control", "no-cache")]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status))))
        if request.method != b"HEAD" and body:
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _send_error(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status, headers, body = _text(status, message)
        headers = headers + [("Content-Length", str(len(body))), ("Connection", "close")]
        try:
            writer.write(conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status))))
            writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        except (h11.LocalProtocolError, ConnectionError):
            pass

    # -- requests ------------------------------------------------------------

    def _authorized(self, request: h11.Request) -> bool:
        user, password = self.spec.auth
        value = next((v for k, v in request.headers if k == b"authorization"), b"")
        scheme, _, credentials = value.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        given_user, sep, given_password = decoded.partition(b":")
        # Both comparisons always run, in constant time, so timing tells nothing.
        user_ok = hmac.compare_digest(given_user, user.encode("utf-8"))
        password_ok = hmac.compare_digest(given_password, password.encode("utf-8"))
        return bool(sep) and user_ok and password_ok

    async def _respond(self, request: h11.Request, body: bytes, peer: Any) -> Response:
        try:
            return await self._route(request, body, peer)
        except Exception:
            log.exception("stats endpoint: %s %s failed", request.method, request.target)
            return _text(500, "internal error; see the lbcore log")

    async def _route(self, request: h11.Request, body: bytes, peer: Any) -> Response:
        if self.metrics_only:
            return await self._exporter(request)
        if self.spec.auth is not None and not self._authorized(request):
            return _text(401, "authentication required",
                         [("WWW-Authenticate", 'Basic realm="lbcore statistics", charset="UTF-8"')])
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        if target.startswith(("http://", "https://")):  # absolute-form, as proxies send
            parts = urlsplit(target)
            path, query = parts.path or "/", parts.query
        else:
            path, _, query = target.partition("?")

        admin = ADMIN_PATH.match(path)
        if admin:
            if method != "POST":
                return _text(405, "use POST", [("Allow", "POST")])
            return await self._admin(unquote(admin.group(1)), unquote(admin.group(2)), body, peer)

        view = self._view(path, query)
        if view is None:
            return _text(404, f"no such page: {path}")
        if view == "html" and method == "POST":
            return await self._page_action(request, body, peer)
        if method not in READ_METHODS:
            return _text(405, f"{method} not allowed here; use GET", [("Allow", ", ".join(READ_METHODS))])
        if view == "html":
            return await self._page(path, query)
        return await self._render(view, query)

    async def _exporter(self, request: h11.Request) -> Response:
        """HAProxy's `http-request use-service prometheus-exporter if { path
        /metrics }` in a listen without servers: the exporter at /metrics,
        HAProxy's 503 page for anything else."""
        path, _, query = request.target.decode("ascii", "replace").partition("?")
        if path == "/metrics" and request.method.decode("ascii", "replace") in READ_METHODS:
            return await self._render("metrics", query)
        page = errors.page(503)
        return 503, [("Content-Type", "text/html"), ("Cache-Control", "no-cache")], \
            page[page.index(b"\r\n\r\n") + 4:]

    @staticmethod
    def _view(path: str, query: str) -> Optional[str]:
        if path == "/stats.json":
            return "json"
        if path in ("/stats.csv",):
            return "csv"
        if path == "/metrics":
            return "metrics"
        base, _, options = path.partition(";")
        if base in CSV_ALIAS_BASES and ("csv" in options.split(";") or "csv" in query.split(";")):
            return "csv"
        if base == "/":  # HAProxy's page switches: /;up;norefresh, /;st=DONE
            return "html"
        return None

    async def _render(self, view: str, query: str) -> Response:
        if view == "metrics":
            try:
                scopes = parse_scopes(query)
            except ValueError as exc:
                return _text(400, str(exc))
        snapshot = await self._snapshot()
        if view == "json":
            return 200, [("Content-Type", "application/json")], render_json(snapshot)
        if view == "csv":
            return 200, [("Content-Type", "text/plain; charset=utf-8")], render_csv(snapshot)
        return 200, [("Content-Type", METRICS_CONTENT_TYPE)], render_metrics(snapshot, scopes)

    async def _snapshot(self) -> dict:
        return self.rates.annotate(await _resolve(self.get_snapshot()))

    async def _page(self, path: str, query: str) -> Response:
        options = [o for o in path.split(";")[1:] + query.split(";") if o]
        status = next((o[3:] for o in options if o.startswith("st=")), None)
        page = render_html(await self._snapshot(), self.spec.refresh, admin=self.spec.admin,
                           options=options, status=status)
        return 200, [("Content-Type", "text/html; charset=utf-8")], page

    async def _page_action(self, request: h11.Request, body: bytes, peer: Any) -> Response:
        """The page's admin form (HAProxy's): `b=BACKEND&action=...&s=SRV...`,
        answered with a redirect to the page with the outcome (`;st=`)."""
        who = peer[0] if isinstance(peer, tuple) else peer
        if not self.spec.admin:
            return _redirect("DENY")
        if not _same_origin(request):
            # A form posted from another site with the browser's saved
            # credentials must not drain servers.
            log.warning("stats admin: page action from another origin refused, from %s", who)
            return _text(403, "cross-site admin action refused")
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        backend = (form.get("b") or [""])[0]
        action = (form.get("action") or [""])[0]
        servers = form.get("s") or []
        if action not in PAGE_ACTIONS or not backend:
            return _redirect("ERRP")
        if not servers:
            return _redirect("NONE")
        state, weight = PAGE_ACTIONS[action], None
        if action == "weight":
            text = (form.get("weight") or [""])[0].strip()
            if not text.isdigit():
                return _redirect("ERRP")
            weight = int(text)
        done = 0
        for server in servers:
            try:
                if action == "shutdown":
                    await _resolve(self.admin.shutdown_sessions(backend, server))
                    change: dict = {"sessions": "shut down"}
                else:
                    await _resolve(self.admin.apply(backend, server, state, weight))
                    change = {k: v for k, v in (("state", state), ("weight", weight)) if v is not None}
            except AdminError as exc:
                log_refusal(backend, server, exc.status, exc.message, f"{who} (stats page)")
                if exc.status == 400:
                    return _redirect("ERRP")
                continue
            log_change(backend, server, change, f"{who} (stats page)")
            done += 1
        return _redirect("DONE" if done == len(servers) else "PART" if done else "ERRP")

    async def _admin(self, backend: str, server: str, body: bytes, peer: Any) -> Response:
        who = peer[0] if isinstance(peer, tuple) else peer
        if not self.spec.admin:
            return _json(403, {"error": "admin actions are disabled (stats.admin is false)"})
        try:
            state, weight = parse_body(body)
            row = await _resolve(self.admin.apply(backend, server, state, weight))
        except AdminError as exc:
            log_refusal(backend, server, exc.status, exc.message, who)
            return _json(exc.status, {"error": exc.message})
        log_change(backend, server, {k: v for k, v in (("state", state), ("weight", weight)) if v is not None}, who)
        return _json(200, row)
