"""HAProxy's canned error responses (same status lines and bodies), sent
with `Connection: close`."""

from __future__ import annotations

# HAProxy's error pages: title and text by status (also deny's and auth's
# pages, rules/answers.py).
MESSAGES = {
    200: (b"OK", b"Service ready."),
    400: (b"Bad request", b"Your browser sent an invalid request."),
    401: (b"Unauthorized", b"You need a valid user and password to access this content."),
    403: (b"Forbidden", b"Request forbidden by administrative rules."),
    404: (b"Not Found", b"The resource could not be found."),
    405: (b"Method Not Allowed", b"A request was made of a resource using a request method not supported by that resource"),
    407: (b"Unauthorized", b"You need a valid user and password to access this content."),
    408: (b"Request Time-out", b"Your browser didn't send a complete request in time."),
    410: (b"Gone", b"The resource you requested is no longer available and will not be available again."),
    413: (b"Payload Too Large", b"The request entity exceeds the maximum allowed."),
    425: (b"Too Early", b"Your browser sent early data."),
    429: (b"Too Many Requests", b"You have sent too many requests in a given amount of time."),
    431: (b"Request Header Fields Too Large", b"The request header fields are too large."),
    500: (b"Internal Server Error", b"An internal server error occurred."),
    501: (b"Not Implemented", b".The server does not support the functionality required to fulfill the request."),
    502: (b"Bad Gateway", b"The server returned an invalid or incomplete response."),
    503: (b"Service Unavailable", b"No server is available to handle this request."),
    504: (b"Gateway Time-out", b"The server didn't respond in time."),
    # Not one of HAProxy's pages (it serves other versions or answers 400):
    # RFC 9110 15.6.6, for a well-formed version other than 1.0 and 1.1.
    505: (b"HTTP Version Not Supported", b"The server does not support the HTTP version of the request."),
}


def _render(code: int) -> bytes:
    title, text = MESSAGES[code]
    body = b"<html><body><h1>%d %s</h1>\n%s\n</body></html>\n" % (code, title, text)
    return (b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\ncache-control: no-cache\r\n"
            b"content-type: text/html\r\nconnection: close\r\n\r\n%s") % (
        code, title, len(body), body)


_PAGES = {code: _render(code) for code in MESSAGES}

# The errors an errorfile replaces when lbcore answers them itself (proxy/
# http.py). HAProxy 2.6 writes its parsing and request-timeout errors from
# its HTTP/1 layer, which ignores errorfiles (mux_h1.c h1_send_error).
FILE_REPLACEABLE = frozenset({500, 502, 503, 504})


def page(code: int) -> bytes:
    return _PAGES[code]
