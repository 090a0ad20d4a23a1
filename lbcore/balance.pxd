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
    cdef dict _index
    # C arrays (array.array("q") in both builds): no Python int per step.
    cdef long long[::1] _sess, _group, _prev, _next, _stamp, _weights, _low, _head, _tail
    cdef long long _clock, _scale
    cdef Py_ssize_t _cap

    @cython.locals(old=Py_ssize_t, cap=Py_ssize_t, groups=Py_ssize_t, g=Py_ssize_t, s=Py_ssize_t)
    cdef _grow(self, Py_ssize_t sessions)
    @cython.locals(g=Py_ssize_t, s=Py_ssize_t, at=Py_ssize_t, tail=Py_ssize_t, low=Py_ssize_t)
    cdef _append(self, Py_ssize_t i)
    @cython.locals(at=Py_ssize_t, prev=Py_ssize_t, after=Py_ssize_t)
    cdef bint _unlink(self, Py_ssize_t i)
    @cython.locals(cap=Py_ssize_t)
    cdef _raise_low(self, Py_ssize_t g, Py_ssize_t s)
    cdef long long _load(self, Py_ssize_t i)
    @cython.locals(a=cython.longlong, b=cython.longlong)
    cdef bint _before(self, Py_ssize_t i, Py_ssize_t j)
    @cython.locals(best=Py_ssize_t, g=Py_ssize_t, s=Py_ssize_t, i=Py_ssize_t)
    cdef Py_ssize_t _lightest(self)
    @cython.locals(best=Py_ssize_t, i=Py_ssize_t)
    cdef Py_ssize_t _lightest_acceptable(self, exclude, bint limited) except -2
    @cython.locals(i=Py_ssize_t, sessions=Py_ssize_t, old=Py_ssize_t, emptied=bint)
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
