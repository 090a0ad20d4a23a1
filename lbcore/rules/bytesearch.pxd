# C twins of bytesearch.py, inlined where they are cimported (message.pxd);
# bytesearch.py is what the pure-Python build runs and what these match
# (tests/unit/test_rules_bytesearch.py runs both).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE


from libc.string cimport memchr, memcmp


cdef inline Py_ssize_t find(bytes hay, bytes needle, Py_ssize_t start):
    # memchr for the needle's first byte, then memcmp: on a request head
    # (needles are header names after a newline) faster than memmem's
    # set-up for each search.
    cdef const char *h = PyBytes_AS_STRING(hay)
    cdef const char *p = PyBytes_AS_STRING(needle)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(hay)
    cdef Py_ssize_t m = PyBytes_GET_SIZE(needle)
    cdef const char *at
    cdef const char *last
    if start > n or m > n - start:
        return -1
    if m == 0:
        return start
    at = h + start
    last = h + n - m  # the last place the needle can start
    while at <= last:
        at = <const char *>memchr(at, p[0], last - at + 1)
        if at == NULL:
            return -1
        if memcmp(at, p, m) == 0:
            return at - h
        at += 1
    return -1


cdef inline bytes lowered(bytes block):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(block)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + 1)
    cdef const unsigned char *src = <const unsigned char *>PyBytes_AS_STRING(block)
    cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    cdef unsigned char c
    dst[0] = 10  # b"\n"
    for i in range(n):
        c = src[i]
        dst[i + 1] = c + 32 if 65 <= c <= 90 else c  # A-Z only, as bytes.lower
    return out
