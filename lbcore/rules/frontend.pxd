# Cython declarations for frontend.py, compiled from the same source by
# setup.py: what the proxy calls per request, with C calls into the engine.
cimport cython
from lbcore.rules.message cimport Connection, Request, Response, new_request
from lbcore.rules.engine cimport run, choose_backend


cpdef request_done(Request request, long status, long long bytes_in=*, long long bytes_out=*)
cpdef connection_done(Connection facts, long long bytes_in=*, long long bytes_out=*)


cdef class FrontendRules:
    cdef public object frontend, backends
    cdef public tuple tcp_rules, request_rules, response_rules, switching
    cdef public dict backend_rules

    cpdef bint tcp_request(self, Connection facts) except -1
    cpdef Request request(self, Connection facts, bytes method, bytes target, bytes version, bytes block)

    @cython.locals(backend=object, target=object)
    cpdef object http_request(self, Request request)

    cpdef object use_backend(self, Request request)
    cpdef request_done(self, Request request, long status, long long bytes_in=*, long long bytes_out=*)
    cpdef connection_done(self, Connection facts, long long bytes_in=*, long long bytes_out=*)

    @cython.locals(line_end=Py_ssize_t, status=long, response=Response)
    cpdef object http_response(self, Request request, bytes head)
