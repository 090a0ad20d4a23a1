# Cython declarations for model.py, compiled from the same source by
# setup.py: the counters become C fields the compiled proxy bumps directly.
from lbcore.balance cimport Balancer

cdef class Counters:
    cdef public long long cur_sessions, max_sessions, total_sessions
    cdef public long long bytes_in, bytes_out, http_requests
    cdef public list http_responses
    cdef public long long denied_req, denied_resp, request_errors, connection_errors
    cdef public long long response_errors, retries, redispatches, client_aborts, server_aborts
    cdef public long long queue_cur, queue_max
    cdef public double time_queue, time_connect, time_response, time_total
    cdef public long long timed_requests

    cpdef session_start(self)
    cpdef session_end(self)
    cpdef add_timers(self, double tq, double tc, double tr, double tt)


cdef class Server(Counters):
    cdef public object spec, name, address, host, port
    cdef public Backend backend
    cdef public object weight, initial_weight, backup, maxconn, send_proxy, tls, check_tls, checked
    cdef public object health, admin
    cdef public bint usable
    cdef public object last_change, downtime, down_since, down_transitions
    cdef public object check_status, check_code, check_duration_ms, check_age
    cdef public object check_failures, last_check_at
    cdef public object consecutive_ok, consecutive_fail, observed_failures
    cdef public int puid

    cpdef bint has_room(self)
    cpdef session_start(self)
    cpdef session_end(self)


cdef class Backend(Counters):
    cdef public object spec, name, mode
    cdef public list servers
    cdef public dict by_name, by_id
    cdef public object persist
    cdef public Balancer balancer
    cdef public object request_hash
    cdef public list candidates, listeners
    cdef public object last_change
    cdef public list waiters
    cdef public bint limited
    cdef public object down_transitions, downtime, down_since

    cpdef pick(self, bytes client_key=*, exclude=*, bint full_ok=*)


cdef class Frontend(Counters):
    cdef public object spec, name, mode
    cdef public Backend backend
    cdef public bint stopping
    cdef public object rules
    cdef public long parked
