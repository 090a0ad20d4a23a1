# C twins of bytesearch.py, inlined where they are cimported (message.pxd);
# bytesearch.py is what the pure-Python build runs and what these match
# (tests/unit/test_rules_bytesearch.py runs both).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE


cdef extern from "string.h":
    void *memmem(const void *hay, size_t hay_len, const void *needle, size_t needle_len) nogil


cdef inline Py_ssize_t find(bytes hay, bytes needle, Py_ssize_t start):
    cdef const char *h = PyBytes_AS_STRING(hay)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(hay)
    cdef const char *at
    if start > n:
        return -1
    at = <const char *>memmem(h + start, n - start, PyBytes_AS_STRING(needle), PyBytes_GET_SIZE(needle))
    return -1 if at == NULL else at - h


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
