"""The frontends' listening sockets, bound as soon as the config is read:
before the event loop, the proxy and the health checker are imported.

Those imports take ~50 ms of CPU at every start, the runtime's build some
more. Bound first, an address takes connections from the moment the
checked config is known (a config with a problem still binds nothing),
and they wait in the kernel's accept queue until the server accepts, as
they already did while the runtime was built; systemd's socket
activation does the same for the whole start. The sockets reach the
server as inherited ones do (lbcore.listeners.inherited: by systemd, or
by the lbcore this one replaces), each taken by the bind it was made for.

A signal that comes meanwhile, from a script that waits for the port and
then reloads or stops lbcore, is held (blocked) until the server has
installed its handlers (release_signals()): its default action would
otherwise end the process.

Not for frontends with TLS (certificates are checked before anything
binds: lbcore.server.check_certificates) or bound to an interface (a
failure to is logged through the event log, set up by the server).
"""

from __future__ import annotations

import signal
from typing import Optional

from .listeners import BindError, bind_socket, inherited

# lbcore's signals (lbcore.server): reload, soft stop, stop.
HELD = (signal.SIGHUP, signal.SIGUSR2, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
_mask_before: Optional[set] = None  # the signal mask to restore; None when nothing is held


def bind_frontends(config, reuse_port: bool = False) -> None:
    """Bind every frontend address of `config` that no inherited socket
    serves; BindError (and every socket bound here closed) if one cannot
    be. Nothing for a config this does not apply to (see above)."""
    global _mask_before
    frontends = config.frontends.values()
    if any(fe.tls is not None or fe.interfaces for fe in frontends):
        return
    if _mask_before is None:
        _mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    fresh = []
    try:
        for fe in frontends:
            for address in fe.binds:
                if inherited.waiting(address):
                    continue
                try:
                    sock = bind_socket(address, reuse_port, address in fe.transparent)
                except OSError as exc:
                    # Worded as the server words it (LoadBalancer._bind_all).
                    raise BindError(f"cannot bind frontend {fe.name} to {address}: {exc.strerror or exc}")
                fresh.append((address, sock))
                inherited.bound[address] = sock
    except BindError:
        for address, sock in fresh:
            inherited.bound.pop(address, None)
            sock.close()
        release_signals()
        raise


def release_signals() -> None:
    """Let held signals through (to the handlers installed meanwhile)."""
    global _mask_before
    if _mask_before is not None:
        mask, _mask_before = _mask_before, None
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
