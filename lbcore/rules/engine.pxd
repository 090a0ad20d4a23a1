# Cython declarations for engine.py, compiled from the same source by
# setup.py: the rule loop and the header actions as C calls.
cimport cython
from lbcore.rules.checks cimport Check
from lbcore.rules.message cimport Connection, Headers, Message, conn_of


cdef class Action:
    cpdef object apply(self, object msg)


cdef class CallAction(Action):
    cdef public object fn


cdef class Constant(Action):
    cdef public object result


cdef class Renderer:
    cpdef bytes text(self, object msg)


cdef class ConstantText(Renderer):
    cdef public bytes value


cdef class ConnectionText(Renderer):
    cdef public int fact

    @cython.locals(conn=Connection)
    cpdef bytes text(self, object msg)


cdef class CallRenderer(Renderer):
    cdef public object fn


cdef class SetHeader(Action):
    cdef public bytes name, lname, key
    cdef public Renderer render
    cdef public bint replace

    @cython.locals(message=Message, headers=Headers)
    cpdef object apply(self, object msg)


cdef class DelHeader(Action):
    cdef public bytes lname, key

    @cython.locals(message=Message, headers=Headers)
    cpdef object apply(self, object msg)


@cython.locals(when=Check, action=Action)
cpdef object run(tuple rules, object msg)

@cython.locals(when=Check)
cpdef object choose_backend(tuple rules, object msg)
