# Cython declarations for stream.py, compiled from the same source by
# setup.py (see http.pxd): the stream's state as C fields, its steps as C
# calls. Not final: http's Exchange extends it in C, tcp's TcpSession in Python.
from lbcore.model cimport Server, Backend, Frontend


cdef class Stream:
    cdef public object owner
    cdef public Frontend frontend
    cdef public Backend backend
    cdef public Server server, last_server
    cdef public bytes key
    cdef public int attempts, retries
    cdef public object tried
    cdef public double queued_at, t_begin, t_head, t_queue, t_assigned, t_connect, t_response
    cdef public int status
    cdef public long long bytes_in, bytes_out
    cdef public str terminated
    cdef public bint ended, http
    cdef public object stick_keys

    cpdef begin(self, owner, Frontend frontend, bytes key, double now, bint http)
    cpdef choose_backend(self, Backend backend=*)
    cpdef balance_key(self, Backend backend)
    cpdef pick(self, exclude=*)
    cpdef dispatch(self)
    cpdef assign(self, Server server)
    cpdef release_server(self)
    cpdef finish(self, bint keep_server=*)


cpdef release_slot(Server server)
cpdef end_tunnel(Server server)
cpdef wake_waiters(Backend backend)
