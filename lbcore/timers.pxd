# Cython declarations for timers.py, compiled from the same source by
# setup.py (see proxy/http.pxd): `now` is read on every request.
cimport cython


@cython.final
cdef class Sweeper:
    cdef public object loop
    cdef public double now
    cdef public set watched
    cdef public object _handle
