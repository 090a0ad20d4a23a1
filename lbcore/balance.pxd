# Cython declarations for balance.py, compiled from the same source by
# setup.py (see proxy/http.pxd): one pick per request and one load update per
# session start/end, called from C.
cimport cython

cdef bint _acceptable(object server, object exclude, bint limited)
# C unsigned arithmetic: the same values as the masked Python ints.
cpdef unsigned int mix32(unsigned int a)


cdef class Balancer:
    cdef public object name
    cdef public list servers
    cdef list _given

    cpdef pick(self, key=*, exclude=*, bint limited=*)
    cpdef load_changed(self, server)


cdef class RoundRobin(Balancer):
    cdef list _cycle
    cdef Py_ssize_t _next
    cdef list _heap, _turns

    cdef _new_cycle(self)
    cdef _next_server(self)
    cpdef pick(self, key=*, exclude=*, bint limited=*)


cdef class LeastConn(Balancer):
    cdef dict _index, _head, _tail
    cdef list _load, _prev, _next, _loads
    cdef set _queued

    @cython.locals(tail=Py_ssize_t)
    cdef _append(self, Py_ssize_t i, load)
    @cython.locals(prev=Py_ssize_t, after=Py_ssize_t)
    cdef _unlink(self, Py_ssize_t i, load)
    @cython.locals(i=Py_ssize_t)
    cdef Py_ssize_t _lightest(self) except -2
    @cython.locals(i=Py_ssize_t)
    cdef Py_ssize_t _lightest_acceptable(self, exclude, bint limited) except -2
    @cython.locals(i=Py_ssize_t)
    cpdef load_changed(self, server)
    @cython.locals(i=Py_ssize_t)
    cpdef pick(self, key=*, exclude=*, bint limited=*)


cdef class First(Balancer):
    cpdef pick(self, key=*, exclude=*, bint limited=*)


cdef class Hash(Balancer):
    cdef public bint consistent
    cdef list _table, _ring
    cdef dict _points
    cdef RoundRobin _fallback

    cpdef pick(self, key=*, exclude=*, bint limited=*)
