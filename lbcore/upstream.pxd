# Cython declarations for upstream.py, compiled from the same source by
# setup.py (see proxy/http.pxd).
cimport cython
from lbcore.model cimport Server
from lbcore.batch cimport WriteBatch
from lbcore.timers cimport Sweeper


@cython.final
cdef class UpstreamConnection:
    cdef public UpstreamPool pool
    cdef public Server server
    cdef public object transport, parser, exchange, client
    cdef public double deadline
    cdef public bint reused, closed
    cdef public int status
    cdef public bytes reason
    cdef public list head_parts
    cdef public long long head_size
    cdef public bint resp_chunked
    cdef public long long resp_length
    cdef public bint no_body, keep_alive, body_started, private, tunnel, paused
    cdef public bytes head_buf
    cdef public long long body_left
    cdef public bint slow
    cdef public object conn_named
    cdef public bytes te_value
    cdef public list out
    cdef public object sock
    cdef public bint acked
    cdef public int interims

    cpdef _reset_response(self)
    cpdef data_received(self, bytes data)
    cpdef _fast_head(self, client, bytes data)
    cpdef _fast_body(self, client, bytes data)
    cpdef _ack_now(self)
    cpdef attach(self, client, exchange, bytes data)
    cpdef send(self, bytes data)
    cpdef flush(self)
    cpdef release(self)
    cpdef close(self)


@cython.final
cdef class UpstreamPool:
    cdef public object loop
    cdef public Sweeper sweeper
    cdef public WriteBatch batch
    cdef public dict idle, peak, needed, purged_at
    cdef public object purge_handle

    cpdef take(self, Server server)
    cdef _busy(self, Server server)
    cpdef put(self, UpstreamConnection conn)
    cpdef forget(self, UpstreamConnection conn)
