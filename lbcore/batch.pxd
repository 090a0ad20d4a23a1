# Cython declarations for batch.py, compiled from the same source by
# setup.py (see proxy/http.pxd).
cimport cython


@cython.final
cdef class WriteBatch:
    cdef public object loop
    cdef public list members
    cdef public bint scheduled

    cpdef add(self, member)
    cpdef flush(self)
