# Cython declarations for balance.py, compiled from the same source by
# setup.py (see proxy/http.pxd): one pick per request, called from C.
cdef class Balancer:
    cpdef pick(self, list candidates, client_key=*)


cdef class RoundRobin(Balancer):
    cdef dict _current
    cdef unsigned long long _next

    cpdef pick(self, list candidates, client_key=*)


cdef class LeastConn(Balancer):
    cdef unsigned long long _next

    cpdef pick(self, list candidates, client_key=*)


cdef class Source(Balancer):
    cdef tuple _slots_for
    cdef list _slots

    cpdef pick(self, list candidates, client_key=*)


cdef class First(Balancer):
    cpdef pick(self, list candidates, client_key=*)
