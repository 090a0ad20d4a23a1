# Cython declarations for http.py, compiled from the same source by
# setup.py: C fields for the per-request state, C calls (cpdef) along the
# common path of a keep-alive request. Every cpdef stays callable from Python.
cimport cython
from lbcore.model cimport Server, Frontend
from lbcore.timers cimport Sweeper
from lbcore.upstream cimport UpstreamConnection, UpstreamPool
from lbcore.proxy.stream cimport Stream
from lbcore.adoption cimport Kept
from lbcore.rules.frontend cimport FrontendRules
from lbcore.rules.message cimport Request


@cython.final
cdef class Exchange(Stream):
    cdef public bytes url
    cdef public object parts
    cdef public bytes head
    cdef public long long head_size
    cdef public bytes method
    cdef public str version
    cdef public bint keep_alive
    cdef public int host_count
    cdef public object xff, conn_tokens, upgrade
    cdef public bint chunked, has_te, headers_done, complete
    cdef public list unsent
    cdef public long long unsent_size
    cdef public object replay
    cdef public long long replay_size
    cdef public bint body_sent
    cdef public UpstreamConnection upstream
    cdef public bint response_started
    cdef public bint rechunk, close_after, local
    cdef public object tunnel_pending
    cdef public bint method_head
    cdef public object request
    cdef public bytes tail
    cdef public object answer
    cdef public object cookie_state
    cdef public list held
    cdef public long long held_size


@cython.final
cdef class HttpSettings:
    cdef public double http_request, client, keep_alive, park_after
    cdef public bint forwarded_for, forwarded_proto
    cdef public bytes monitor_uri
    cdef public object rules


@cython.final
cdef class ClientConnection:
    cdef public object proxy
    cdef public Frontend frontend
    cdef public object ctx
    cdef public Sweeper sweeper
    cdef public UpstreamPool pool
    cdef public object peer
    cdef public bytes client_ip
    cdef public object transport, parser
    cdef public Exchange current, active
    cdef public object queue
    cdef public double deadline
    cdef public int pause_mask
    cdef public bint closing, made, gone, refused
    cdef public UpstreamConnection tunnel
    cdef public bytes proto
    cdef public double server_timeout
    cdef public int pending_error
    cdef public list out
    cdef public object clock
    cdef public bytes head_buf
    cdef public long long body_left
    cdef public Exchange receiving
    cdef public HttpSettings settings
    cdef public object relay
    cdef public bytes key
    cdef public object facts
    cdef public Kept kept
    cdef public bint kept_open, kept_settle
    cdef public double idle_until

    cpdef _pause(self, int reason)
    cpdef _resume(self, int reason)
    cpdef close(self)
    cpdef data_received(self, bytes data)
    cpdef _journal(self, bytes data)
    cpdef _unsafe(self)
    cpdef _settle(self)
    @cython.locals(rules=FrontendRules)
    cpdef _fast_head(self, bytes data)
    cpdef _fast_body(self, bytes data)
    cpdef _request_ready(self, Exchange ex)
    cpdef _request_complete(self, Exchange ex)
    cpdef _send_body(self, Exchange ex, bytes data)
    cpdef _dispatch(self, Exchange ex)
    @cython.locals(rules=FrontendRules, request=Request)
    cpdef bint _request_rules(self, Exchange ex) except -1
    cpdef connect_server(self, Exchange ex, Server server)
    cpdef _attach(self, Exchange ex, UpstreamConnection upstream)
    @cython.locals(rules=FrontendRules)
    cpdef response_head(self, UpstreamConnection upstream, int status, bytes head)
    @cython.locals(rules=FrontendRules)
    cpdef whole_response(self, UpstreamConnection upstream, bytes head, bytes body)
    cpdef response_body(self, body)
    cpdef _send(self, bytes data)
    cpdef flush(self)
    cpdef response_complete(self, UpstreamConnection upstream)
    cpdef _finish(self, Exchange ex, bint aborted=*, bint keep_server_session=*)
    cpdef write_log(self, Exchange ex)
