# Cython declarations for checks.py, compiled from the same source by
# setup.py: a condition's tree is walked with C calls.
cimport cython
from lbcore.rules.message cimport Connection, Headers, Message, Request, conn_of


cdef class Check:
    cpdef bint test(self, object msg) except -1


cdef class CallCheck(Check):
    cdef public object fn


cdef class PathCheck(Check):
    cdef public int kind
    cdef public tuple patterns
    cdef public frozenset table
    cdef public object fn

    @cython.locals(request=Request, path=bytes)
    cpdef bint test(self, object msg) except -1


cdef class AttrCheck(Check):
    cdef public bint url
    cdef public object fn

    @cython.locals(request=Request)
    cpdef bint test(self, object msg) except -1


cdef class HeaderCheck(Check):
    cdef public bytes key
    cdef public bint icase
    cdef public int kind
    cdef public tuple patterns
    cdef public frozenset table
    cdef public object fn

    @cython.locals(message=Message, headers=Headers, values=list, value=bytes, needle=bytes, kind=int)
    cpdef bint test(self, object msg) except -1


cdef class IpCheck(Check):
    cdef public bint source
    cdef public tuple v4, v6

    @cython.locals(conn=Connection, address=tuple, version=int)
    cpdef bint test(self, object msg) except -1


cdef class Not(Check):
    cdef public Check check


cdef class AllOf(Check):
    cdef public tuple checks, negated

    @cython.locals(check=Check, i=int)
    cpdef bint test(self, object msg) except -1


cdef class AnyOf(Check):
    cdef public tuple checks

    @cython.locals(check=Check)
    cpdef bint test(self, object msg) except -1
