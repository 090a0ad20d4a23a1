# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Message-head scanning for the http fast path, compiled.

Same contract and results as heads_py.py (read its docstrings): one pass
over the head in C instead of a Python callback per header, which is
where the profiler put the per-request cost of header handling.
"""

from libc.string cimport memchr

IMPLEMENTATION = "cython"

from .heads_py import STRICT_METHODS  # one list for both
from .heads_py import MAX_FIELDS, MAX_FIELD_NAME

cdef Py_ssize_t C_MAX_FIELDS = MAX_FIELDS
cdef Py_ssize_t C_MAX_FIELD_NAME = MAX_FIELD_NAME

cdef bint TOKEN[256]
cdef bint VALUE[256]


cdef void _init_tables():
    cdef int c
    for c in range(256):
        TOKEN[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or \
            c in (33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126)
        VALUE[c] = c == 9 or (32 <= c <= 126) or c >= 128


_init_tables()


cdef inline unsigned char _lower(unsigned char c):
    if 65 <= c <= 90:
        return c + 32
    return c


cdef bint _name_is(const unsigned char* p, Py_ssize_t n, bytes lname):
    cdef const unsigned char* q = lname
    cdef Py_ssize_t i
    if n != len(lname):
        return False
    for i in range(n):
        if _lower(p[i]) != q[i]:
            return False
    return True


# Header kinds.
DEF K_OTHER = 0
DEF K_CONNECTION = 1
DEF K_HOP = 2
DEF K_UNUSUAL = 3
DEF K_LENGTH = 4
DEF K_HOST = 5
DEF K_XFF = 6
DEF K_XFP = 7


cdef int _kind(const unsigned char* p, Py_ssize_t n, bint response):
    cdef unsigned char c0
    if n < 2 or n > 19:
        return K_OTHER
    c0 = _lower(p[0])
    if c0 == b'c':
        if _name_is(p, n, b"connection"):
            return K_CONNECTION
        if _name_is(p, n, b"content-length"):
            return K_LENGTH
    elif c0 == b'k':
        if _name_is(p, n, b"keep-alive"):
            return K_HOP
    elif c0 == b'p':
        if _name_is(p, n, b"proxy-connection"):
            return K_HOP
        if response and _name_is(p, n, b"proxy-authenticate"):
            return K_UNUSUAL
    elif c0 == b't':
        if _name_is(p, n, b"transfer-encoding") or _name_is(p, n, b"te") \
                or _name_is(p, n, b"trailer"):
            return K_UNUSUAL
    elif c0 == b'u':
        if _name_is(p, n, b"upgrade"):
            return K_UNUSUAL
    elif c0 == b'e':
        if not response and _name_is(p, n, b"expect"):
            return K_UNUSUAL
    elif c0 == b'h':
        if _name_is(p, n, b"host"):
            return K_HOST
    elif c0 == b'x':
        if _name_is(p, n, b"x-forwarded-for"):
            return K_XFF
        if _name_is(p, n, b"x-forwarded-proto"):
            return K_XFP
    return K_OTHER


cdef int _connection(const unsigned char* p, Py_ssize_t n):
    """1 keep-alive, -1 close, 0 none, -2 another token (slow path)."""
    cdef Py_ssize_t i = 0, start, stop
    cdef int verdict = 0
    while i < n:
        while i < n and (p[i] == 32 or p[i] == 9 or p[i] == 44):
            i += 1
        start = i
        while i < n and p[i] != 44:
            i += 1
        stop = i
        while stop > start and (p[stop - 1] == 32 or p[stop - 1] == 9):
            stop -= 1
        if stop == start:
            continue
        if _name_is(p + start, stop - start, b"close"):
            verdict = -1  # close wins over keep-alive
        elif _name_is(p + start, stop - start, b"keep-alive"):
            if verdict == 0:
                verdict = 1
        else:
            return -2
    return verdict


cdef long long _digits(const unsigned char* p, Py_ssize_t n):
    cdef long long v = 0
    cdef Py_ssize_t i
    if n == 0 or n > 15:
        return -1
    for i in range(n):
        if not (48 <= p[i] <= 57):
            return -1
        v = v * 10 + (p[i] - 48)
    return v


cdef bint _plain_host(const unsigned char* p, Py_ssize_t n):
    """`name[:port]` with a name of letters, digits, dots and dashes and a
    port up to 65535 (heads_py._PLAIN_HOST)."""
    cdef Py_ssize_t i = 0, digits
    cdef long port = 0
    cdef unsigned char c
    while i < n:
        c = p[i]
        if not ((48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 45 or c == 46):
            break
        i += 1
    if i == 0:
        return False
    if i == n:
        return True
    if p[i] != 58:
        return False
    i += 1
    digits = n - i
    if digits < 1 or digits > 5:
        return False
    while i < n:
        c = p[i]
        if not (48 <= c <= 57):
            return False
        port = port * 10 + (c - 48)
        i += 1
    return port <= 65535


cdef Py_ssize_t _line_end(const unsigned char* p, Py_ssize_t pos, Py_ssize_t limit):
    """Offset of the CR of the CRLF ending the line at pos, or -1."""
    cdef const unsigned char* cr = <const unsigned char*>memchr(p + pos, 13, limit - pos)
    if cr == NULL:
        return -1
    cdef Py_ssize_t at = cr - p
    if at + 1 >= limit or p[at + 1] != 10:
        return -1
    return at


cdef Py_ssize_t _header(const unsigned char* p, Py_ssize_t pos, Py_ssize_t limit,
                        Py_ssize_t* name_len, Py_ssize_t* vstart, Py_ssize_t* vstop):
    """Parse `token:[OWS]value[OWS]CRLF` at pos; returns the next line's
    offset, or -1 if the line is not plain."""
    cdef Py_ssize_t i = pos, eol, j
    while i < limit and TOKEN[p[i]]:
        i += 1
    if i == pos or i >= limit or p[i] != 58:
        return -1
    name_len[0] = i - pos
    eol = _line_end(p, i, limit)
    if eol < 0:
        return -1
    i += 1
    while i < eol and (p[i] == 32 or p[i] == 9):
        i += 1
    j = eol
    while j > i and (p[j - 1] == 32 or p[j - 1] == 9):
        j -= 1
    for k in range(i, j):
        if not VALUE[p[k]]:
            return -1
    vstart[0] = i
    vstop[0] = j
    return eol + 2


def scan_request(bytes buf, Py_ssize_t end, bint drop_xfp, bint own_xff):
    cdef const unsigned char* p = buf
    cdef Py_ssize_t limit = end + 2  # header lines end at limit (CRLF included)
    cdef Py_ssize_t i = 0, mstop, tstart, tstop, pos, nxt, nlen = 0, vs = 0, vn = 0
    cdef int minor, kind, verdict
    cdef bint keep
    cdef long long length = 0, v
    cdef bint seen_length = False
    cdef int hosts = 0
    cdef Py_ssize_t fields = 0
    cdef list kept = []
    cdef Py_ssize_t run_start
    if limit > len(buf):
        return None
    while i < limit and TOKEN[p[i]]:
        i += 1
    if i == 0 or i >= limit or p[i] != 32:
        return None
    mstop = i
    if buf[0:mstop] in STRICT_METHODS:
        return None
    i += 1
    tstart = i
    while i < limit and 0x21 <= p[i] <= 0x7e and p[i] != 35:  # no fragment
        i += 1
    tstop = i
    if tstop == tstart or p[tstart] != 47 or i + 10 > limit or p[i] != 32:
        return None  # (only origin-form targets: the others go the strict way)
    if not (p[i + 1] == b'H' and p[i + 2] == b'T' and p[i + 3] == b'T' and p[i + 4] == b'P'
            and p[i + 5] == b'/' and p[i + 6] == b'1' and p[i + 7] == b'.'
            and (p[i + 8] == b'0' or p[i + 8] == b'1') and p[i + 9] == 13 and p[i + 10] == 10):
        return None
    minor = p[i + 8] - 48
    keep = minor == 1
    pos = i + 11
    run_start = pos
    while pos < limit:
        nxt = _header(p, pos, limit, &nlen, &vs, &vn)
        if nxt < 0:
            return None
        fields += 1
        if fields > C_MAX_FIELDS or nlen > C_MAX_FIELD_NAME:
            return None
        kind = _kind(p + pos, nlen, False)
        if kind == K_OTHER:
            pass
        elif kind == K_HOST:
            hosts += 1
            if not _plain_host(p + vs, vn - vs):
                return None
        elif kind == K_LENGTH:
            v = _digits(p + vs, vn - vs)
            if seen_length or v < 0:
                return None
            seen_length = True
            length = v
        elif kind == K_UNUSUAL:
            return None
        elif kind == K_XFF:
            if own_xff:
                return None
        elif kind == K_XFP and not drop_xfp:
            pass
        else:
            # Dropped: Connection (judged), Keep-Alive, Proxy-Connection, X-Forwarded-Proto.
            if kind == K_CONNECTION:
                verdict = _connection(p + vs, vn - vs)
                if verdict == -2:
                    return None
                if verdict < 0:
                    keep = False
                elif verdict > 0 and minor == 0:
                    keep = True
            if pos > run_start:
                kept.append(buf[run_start:pos])
            run_start = nxt
        pos = nxt
    if pos > run_start:
        kept.append(buf[run_start:pos])
    if hosts > 1 or (hosts == 0 and minor == 1):
        return None
    return (buf[0:mstop], buf[tstart:tstop], minor, keep, length,
            kept[0] if len(kept) == 1 else b"".join(kept))


def scan_response(bytes buf, Py_ssize_t end):
    cdef const unsigned char* p = buf
    cdef Py_ssize_t limit = end + 2
    cdef Py_ssize_t pos, nxt, eol, nlen = 0, vs = 0, vn = 0, run_start, k
    cdef int status, kind, verdict
    cdef bint keep = True
    cdef long long length = -1, v
    cdef list runs = []
    if limit > len(buf) or limit < 15:
        return None
    if not (p[0] == b'H' and p[1] == b'T' and p[2] == b'T' and p[3] == b'P' and p[4] == b'/'
            and p[5] == b'1' and p[6] == b'.' and p[7] == b'1' and p[8] == 32
            and 50 <= p[9] <= 53 and 48 <= p[10] <= 57 and 48 <= p[11] <= 57 and p[12] == 32):
        return None
    status = (p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)
    eol = _line_end(p, 13, limit)
    if eol < 0:
        return None
    for k in range(13, eol):
        if not VALUE[p[k]]:
            return None
    pos = eol + 2
    run_start = 0
    while pos < limit:
        nxt = _header(p, pos, limit, &nlen, &vs, &vn)
        if nxt < 0:
            return None
        kind = _kind(p + pos, nlen, True)
        if kind == K_UNUSUAL:
            return None
        if kind == K_LENGTH:
            v = _digits(p + vs, vn - vs)
            if length >= 0 or v < 0:
                return None
            length = v
        elif kind == K_CONNECTION or kind == K_HOP:
            if kind == K_CONNECTION:
                verdict = _connection(p + vs, vn - vs)
                if verdict == -2:
                    return None
                if verdict < 0:
                    keep = False
            if pos > run_start:
                runs.append(buf[run_start:pos])
            run_start = nxt
        pos = nxt
    if pos > run_start:
        runs.append(buf[run_start:pos])
    if length < 0 and status != 204 and status != 304:
        return None
    if length >= 0 and status == 204:
        return None
    return status, length, keep, runs[0] if len(runs) == 1 else b"".join(runs)
