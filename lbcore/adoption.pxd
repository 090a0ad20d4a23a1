# Cython declarations for adoption.py's Kept, compiled from the same source
# by setup.py (see proxy/http.pxd): its methods run on every request of a
# kept connection, and the slot's words become C stores.
cimport cython


@cython.final
cdef class Kept:
    cdef public object journal, table, pending, retry
    cdef unsigned int[::1] words
    cdef public int fd
    cdef public unsigned int gen
    cdef public Py_ssize_t word, base

    @cython.locals(word=Py_ssize_t, length=Py_ssize_t, end=Py_ssize_t)
    cpdef bint consumed(self, bytes data)
    cpdef unsafe(self)
    @cython.locals(word=Py_ssize_t, n=Py_ssize_t)
    cpdef bint settled(self, bytes pending)
    cpdef release(self, bint shutdown)
