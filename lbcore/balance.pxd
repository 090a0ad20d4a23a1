# Cython declarations for balance.py, compiled from the same source by
# setup.py (see proxy/http.pxd): one pick per request and one load update per
# session start/end, called from C.
cdef bint _acceptable(object server, object exclude, bint limited)


cdef class Balancer:
    cdef public object name
    cdef public list servers
    cdef list _given

    cpdef pick(self, key=*, exclude=*, bint limited=*)
    cpdef load_changed(self, server)


cdef class RoundRobin(Balancer):
    cdef bint _uniform
    cdef Py_ssize_t _next
    cdef list _heap, _turns

    cdef _new_cycle(self)
    cdef _next_server(self)
    cpdef pick(self, key=*, exclude=*, bint limited=*)


cdef class LeastConn(Balancer):
    cdef list _heap, _pos, _load, _turn
    cdef long long _clock
    cdef dict _index

    cdef bint _less(self, Py_ssize_t i, Py_ssize_t j)
    cdef _sift(self, Py_ssize_t p)
    cdef _requeue(self, Py_ssize_t i)
    cpdef load_changed(self, server)
    cpdef pick(self, key=*, exclude=*, bint limited=*)


cdef class First(Balancer):
    cpdef pick(self, key=*, exclude=*, bint limited=*)


cdef class Hash(Balancer):
    cdef public bint consistent
    cdef list _table, _ring
    cdef dict _points
    cdef RoundRobin _fallback

    cpdef pick(self, key=*, exclude=*, bint limited=*)
