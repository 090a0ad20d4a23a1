"""lbcore: a TCP/HTTP load balancer with HAProxy's semantics."""

__version__ = "0.1.0"
