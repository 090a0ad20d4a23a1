# Cython declarations for message.py, compiled from the same source by
# setup.py: what rules read per request becomes C fields and C calls.
cimport cython
from lbcore.rules cimport bytesearch

cdef class Connection:
    cdef public object src, dst, sni
    cdef public long src_port, dst_port
    cdef public bint ssl
    cdef public object _src_text, _dst_text, _src_ip, _dst_ip, _dst_port_text, stick

    cpdef bytes src_bytes(self)
    cpdef bytes dst_bytes(self)
    cpdef bytes dst_port_bytes(self)
    cpdef tuple src_ip(self)
    cpdef tuple dst_ip(self)


cdef class Headers:
    cdef public bytes block
    cdef public object _lower
    cdef public bint edited

    cdef _start(self, bytes block)

    cpdef bytes _index(self)
    cpdef list values_at(self, bytes key)
    cpdef list lower_values_at(self, bytes key)
    cpdef object last_at(self, bytes key)
    cpdef bint has_at(self, bytes key) except -1
    cpdef add(self, bytes name, bytes value)
    cpdef delete(self, bytes lname)


cdef class Message:
    cdef public Connection conn
    cdef public Headers headers


@cython.locals(message=Message)
cpdef Connection conn_of(object msg)

@cython.locals(headers=Headers)
cpdef Headers new_headers(bytes block)

@cython.locals(request=Request)
cpdef Request new_request(Connection conn, bytes method, bytes target, bytes version, bytes header_block)


cdef class Request(Message):
    cdef public bytes method, target, version
    cdef public object _path, _query
    cdef public bint _edited
    cdef public object stick, backend

    cdef _start(self, Connection conn, bytes method, bytes target, bytes version, bytes header_block)

    @cython.locals(target=bytes, scheme=Py_ssize_t, slash=Py_ssize_t, mark=Py_ssize_t)
    cpdef _split(self)
    cpdef bytes path(self)
    cpdef object query(self)
    cpdef bint is_changed(self)


cdef class Response(Message):
    cdef public Request request
    cdef public long status
    cdef public bint _edited
