"""`lbcore -c lb.yaml [--check] [--version]`, HAProxy's command line
(`lbcore -f haproxy.cfg [-c] [-W|-Ws] [-db|-D] [-p PIDFILE] [-sf PID...]`)
and `lbcore convert -f haproxy.cfg... > lb.yaml`.

How `-c` is read: HAProxy's `-c` means "check only" and takes no value,
lbcore's `-c FILE` names an lb.yaml. When the command line holds `-f`, it
is HAProxy's command line and `-c` is the check; otherwise `-c FILE` is
lbcore's (and `--check` its check).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from types import SimpleNamespace
from typing import Callable, Optional

from . import __version__, build
from .dataclass_code import dataclass

EXIT_CONFIG = 2
EXIT_BIND = 1
# haproxy -c exits 1 on a bad file; scripts written for it test that.
EXIT_HAPROXY_CONFIG = 1


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        return convert_main(argv[1:])
    if "-f" in argv or any(arg in ("-v", "-vv") for arg in argv):
        return haproxy_main(argv)
    return lbcore_main(argv)


def lbcore_parser():
    import argparse
    parser = argparse.ArgumentParser(
        prog="lbcore", description="TCP/HTTP load balancer with HAProxy's semantics. "
        "Also runs from haproxy.cfg with HAProxy's command line: lbcore -f haproxy.cfg [-c].")
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file (lb.yaml)")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--version", action="store_true",
                        help="print the version and what runs compiled, and exit")
    parser.add_argument("-sf", dest="soft_stop", metavar="PID", type=int, nargs="+", default=[],
                        help="replace the running lbcore PID: take its listening sockets and state, "
                             "then let it finish its work and exit")
    parser.add_argument("-st", dest="hard_stop", metavar="PID", type=int, nargs="+", default=[],
                        help="as -sf, but the old process stops at once")
    return parser


def lbcore_main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] in ("-c", "--config") and not argv[1].startswith("-"):
        # The usual start, as systemd units write it: argparse (its import,
        # and the help formatter each option builds, which imports shutil)
        # was ~9 ms of every start.
        args = SimpleNamespace(config=argv[1], check=False, version=False, soft_stop=[], hard_stop=[])
    else:
        parser = lbcore_parser()
        args = parser.parse_args(argv)
        if args.version:
            print(f"lbcore {__version__}\n{build()}")
            return 0
        if not args.config:
            parser.error("-c FILE is required (or -f haproxy.cfg)")

    from .config import ConfigError, load
    from .heap import hold_collections, release_collections

    # No cyclic collection while a large file is read: its YAML node tree
    # is acyclic and freed by reference counting, and collections started by
    # its allocations would walk it again and again. Nor while the server
    # starts: the config is as young as the tree was (lbcore.heap); the
    # server collects once it serves (LoadBalancer.run), or run() or this
    # turns collections back on on every other way out.
    hold_collections()
    try:
        config = load(args.config)
    except BaseException as exc:
        release_collections()
        if not isinstance(exc, ConfigError):
            raise
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        release_collections()
        from .preflight import unresolvable_servers
        problems = unresolvable_servers(config)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return EXIT_CONFIG
        print(f"Configuration file {args.config} is valid")
        return 0
    handover = Handover(config)
    del config  # the server's only: see Handover
    return run(handover, *replacing(args.soft_stop, args.hard_stop))


def replacing(soft: list[int], hard: list[int]) -> tuple[list[Callable[[], None]], list[int]]:
    """-sf/-st: take the sockets of those processes at start (lbcore.takeover),
    stop them once this one serves."""
    started = [lambda: stop_previous(soft, hard)] if soft or hard else []
    return started, soft + hard


# -- HAProxy's command line --------------------------------------------------------

@dataclass
class HaproxyArgs:
    files: list[str] = dataclasses.field(default_factory=list)
    check: bool = False
    master_worker: bool = False
    systemd: bool = False
    foreground: bool = False  # -db
    daemon: bool = False  # -D
    pidfile: Optional[str] = None
    quiet: bool = False
    version: int = 0  # 1 for -v, 2 for -vv
    soft_stop: list[int] = dataclasses.field(default_factory=list)  # -sf
    hard_stop: list[int] = dataclasses.field(default_factory=list)  # -st
    localpeer: Optional[str] = None
    ready_fd: Optional[int] = None  # internal: a -W master's worker reports "serving" here


class UsageError(ValueError):
    pass


FLAGS = {"-c": "check", "-W": "master_worker", "-Ws": "systemd", "-db": "foreground", "-D": "daemon",
         "-q": "quiet"}


def parse_haproxy_args(argv: list[str]) -> HaproxyArgs:
    args = HaproxyArgs()
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) else None
        if arg in FLAGS:
            setattr(args, FLAGS[arg], True)
            if arg == "-Ws":
                args.master_worker = True
        elif arg in ("-v", "-V"):
            args.version = max(args.version, 1) if arg == "-v" else args.version
        elif arg == "-vv":
            args.version = 2
        elif arg == "--ready-fd":
            if value is None or not value.isdigit():
                raise UsageError("--ready-fd needs a file descriptor")
            args.ready_fd = int(value)
            i += 1
        elif arg in ("-f", "-p", "-L"):
            if value is None:
                raise UsageError(f"{arg} needs a value")
            if arg == "-f":
                args.files.append(value)
            elif arg == "-p":
                args.pidfile = value
            else:
                args.localpeer = value
            i += 1
        elif arg in ("-sf", "-st"):
            pids = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                if not argv[i].isdigit():
                    raise UsageError(f"{arg}: '{argv[i]}' is not a process id")
                pids.append(int(argv[i]))
            (args.soft_stop if arg == "-sf" else args.hard_stop).extend(pids)
        elif arg == "--":
            args.files.extend(argv[i + 1:])
            break
        else:
            raise UsageError(f"unsupported option '{arg}' (lbcore takes HAProxy's -f, -c, -W, -Ws, -db, -D, "
                             "-p, -q, -v, -vv, -L, -sf, -st)")
        i += 1
    return args


def haproxy_version_text(verbose: bool) -> str:
    from .haproxy_cfg import SYNTAX_VERSION
    text = (f"lbcore version {__version__} - reads HAProxy {SYNTAX_VERSION} configuration syntax\n")
    if verbose:
        text += build() + "\n"
    return text


def haproxy_main(argv: list[str]) -> int:
    try:
        args = parse_haproxy_args(argv)
    except UsageError as exc:
        print(f"lbcore: {exc}", file=sys.stderr)
        return EXIT_HAPROXY_CONFIG
    if args.version:
        sys.stdout.write(haproxy_version_text(args.version > 1))
        return 0
    if not args.files:
        print("lbcore: no configuration file (-f haproxy.cfg)", file=sys.stderr)
        return EXIT_HAPROXY_CONFIG
    if args.master_worker and (args.foreground or args.systemd) and not (args.check or args.daemon) \
            and args.ready_fd is None:
        # -W -db, -Ws (kolla-ansible, openstack-ansible): in the foreground
        # whatever the files say, the master needs nothing from them but
        # the pidfile. Its first worker is forked before they are read and
        # reads them itself, as later workers do: not forked from a master
        # holding the read's heap, whose pages it would copy as it starts
        # (~25 ms of CPU at 1,000 pairs), and the master reads nothing.
        return run_master_worker(args)
    return read_and_serve(args)


def read_and_serve(args: HaproxyArgs, ready: Optional[Callable[[Optional[str]], None]] = None) -> int:
    """Read the -f files and serve them (or, -c, check them): in the
    process started (as a -W master, it forks a first worker that serves
    what it read), or in a -W master's worker, which tells its master
    through `ready` (--ready-fd: a worker started anew) that it serves and
    which pidfile the files name."""
    if ready is None and args.ready_fd is not None:
        from .master_worker import report_ready

        def ready(pidfile: Optional[str], fd: int = args.ready_fd) -> None:
            report_ready(fd, pidfile)
    worker = ready is not None

    from . import haproxy_cfg
    from .config import ConfigError
    from .heap import hold_collections, release_collections

    # As lbcore_main: no cyclic collection from here until the server's
    # heap settles. haproxy_cfg.load holds them while it reads, but turned
    # back on after it, the first allocations collected the young config
    # (10-18 ms at 1,000 pairs before the bind, 7 ms more after).
    hold_collections()
    try:
        loaded = haproxy_cfg.load(args.files, localpeer=args.localpeer)
    except BaseException as exc:
        release_collections()
        if not isinstance(exc, ConfigError):
            raise
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_HAPROXY_CONFIG
    if not args.quiet:
        for warning in loaded.warnings:
            print(f"[WARNING] {warning}", file=sys.stderr)
    if args.check:
        release_collections()
        if not args.quiet:
            print("Configuration file is valid")
        return 0
    config = loaded.config
    pidfile = os.path.abspath(args.pidfile) if args.pidfile else config.global_.pidfile
    master_worker = (args.master_worker or loaded.master_worker) and not worker
    # -W: the master writes the pidfile, its worker does not.
    config = dataclasses.replace(config, global_=dataclasses.replace(
        config.global_, pidfile=None if (master_worker or worker) else pidfile))
    # `daemon` (or -D) forks into the background unless -db or -Ws keep
    # the process in the foreground, as HAProxy.
    daemon = (loaded.daemon or args.daemon) and not (args.foreground or args.systemd) and not worker
    # -Ws: READY=1 (and RELOADING=1, STOPPING=1) go to $NOTIFY_SOCKET
    # whenever systemd set it (lbcore.systemd); under -W the master sends
    # them, its workers do not.
    handover = Handover(config if not master_worker else loaded.config)
    del config, loaded  # the server's only: see Handover
    if master_worker:
        return run_master_worker(args, handover, pidfile, daemon)
    started, takeover_from = replacing(args.soft_stop, args.hard_stop)
    if worker:
        started.append(lambda: ready(pidfile))
    if daemon:
        return run_daemon(lambda started: run(handover, started, takeover_from), started)
    return run(handover, started, takeover_from)


def run_master_worker(args: HaproxyArgs, handover: Optional["Handover"] = None, pidfile: Optional[str] = None,
                      daemon: bool = False) -> int:
    """-W: a master whose first worker serves the Config it read or, with
    no `handover`, reads the files itself (and reports their pidfile: -p
    wins), and whose later workers read them themselves (master_worker.py)."""
    from . import master_worker, systemd

    if handover is None:
        serve = reading_worker(args)
        pidfile = os.path.abspath(args.pidfile) if args.pidfile else None
    else:
        serve = first_worker(handover)

    def run_master(started: list[Callable[[], None]]) -> int:
        return master_worker.run(serve, worker_argv(args), started, pidfile,
                                 first_soft_stop=tuple(args.soft_stop), first_hard_stop=tuple(args.hard_stop))
    if daemon:
        return run_daemon(run_master, [systemd.ready])
    return run_master([systemd.ready])


def first_worker(handover: "Handover") -> Callable[[list[int], list[int], Callable[[], None]], int]:
    """A -W master's first worker: it serves the config the master read.
    A worker writes no pidfile: the master does. The master drops this
    once the worker is forked; the worker's server takes the config out of
    the Handover (see Handover)."""
    config = handover.take()
    box = Handover(dataclasses.replace(config, global_=dataclasses.replace(config.global_, pidfile=None)))
    del config

    def serve(soft: list[int], hard: list[int], report: Callable[[], None]) -> int:
        started, takeover_from = replacing(soft, hard)
        return run(box, started + [report], takeover_from)
    return serve


def reading_worker(args: HaproxyArgs) -> Callable[[list[int], list[int], Callable[..., None]], int]:
    """A -W master's first worker forked before anything was read: it reads
    the files and serves them as a later worker does, and tells the master
    the pidfile they name when it reports that it serves."""
    def serve(soft: list[int], hard: list[int], report: Callable[..., None]) -> int:
        return read_and_serve(dataclasses.replace(args, soft_stop=soft, hard_stop=hard), ready=report)
    return serve


def worker_argv(args: HaproxyArgs) -> list[str]:
    """The command line of a -W master's later workers (master_worker.py
    adds --ready-fd and -sf): the same files, read by the worker."""
    argv = []
    for path in args.files:
        argv += ["-f", os.path.abspath(path)]
    if args.localpeer:
        argv += ["-L", args.localpeer]
    if args.quiet:
        argv.append("-q")
    return argv


def stop_previous(soft: list[int], hard: list[int]) -> None:
    """Once this process serves, the old ones finish (-sf: SIGUSR1, HAProxy's
    soft stop, which lbcore also takes as a graceful stop) or stop (-st)."""
    for pids, sig in ((soft, signal.SIGUSR1), (hard, signal.SIGTERM)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def run_daemon(run_fn: Callable[[list], int], started: list[Callable[[], None]]) -> int:
    """Fork into the background; the parent exits 0 once the child is bound
    and serving, or 1 if it could not start (its error is on stderr)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            ready = pipe.read(1)
        return 0 if ready == b"1" else EXIT_BIND
    os.close(read_end)
    os.setsid()

    def detach() -> None:
        os.write(write_end, b"1")
        os.close(write_end)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)

    code = run_fn(started + [detach])
    os._exit(code)


# -- lbcore convert ---------------------------------------------------------------------

def convert_main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="lbcore convert",
                                     description="Write the lb.yaml equivalent of haproxy.cfg files.")
    parser.add_argument("-f", dest="files", action="append", required=True, metavar="PATH",
                        help="haproxy.cfg file or directory of *.cfg (repeatable, in order)")
    parser.add_argument("-o", dest="output", metavar="FILE", help="write here instead of stdout")
    args = parser.parse_args(argv)

    from . import haproxy_cfg
    from .config import ConfigError

    try:
        text, warnings = haproxy_cfg.convert(args.files)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    for warning in warnings:
        print(f"[WARNING] {warning}", file=sys.stderr)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


# -- running ------------------------------------------------------------------------------

class Handover:
    """The start-up config on its way to the server that runs it. Passed
    as it is, every frame on the way (main's, run's, run_single's) kept it
    alive as long as the process, beside the config of the last reload:
    3 MB more at 1,000 frontend/backend pairs after the first reload. The
    server takes it out of here, and then holds the only reference."""

    __slots__ = ("config",)

    def __init__(self, config) -> None:
        self.config = config

    def take(self):
        config, self.config = self.config, None
        return config


def run(config, started: Optional[list[Callable[[], None]]] = None, takeover_from: list[int] = ()) -> int:
    """Serve `config`, a Config or a Handover of one."""
    from . import systemd
    from .listeners import inherited

    handover = config if isinstance(config, Handover) else Handover(config)
    del config
    for sock in systemd.listen_fds():  # socket activation
        inherited.add(sock)
    if takeover_from:  # -sf/-st: the old process's sockets (takeover imports asyncio: only then)
        from . import takeover
        takeover.take_over(list(takeover_from))
    if handover.config.global_.workers > 1:
        from .heap import release_collections
        from .workers import run_master
        release_collections()  # the master serves nothing (lbcore_main held them)
        # The workers inherit it; the master holds a copy of every client
        # connection they keep (lbcore.adoption).
        raise_fd_limit()
        return run_master(handover.take(), started=tuple(started or ()))
    return run_single(handover, started=started)


def raise_fd_limit() -> None:
    """Every connection costs two descriptors (client and server): take the
    hard limit, as HAProxy does, rather than fail at the soft one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def run_single(config, reuse_port: bool = False, started: Optional[list[Callable[[], None]]] = None) -> int:
    """One serving process for `config`, a Config or a Handover of one."""
    raise_fd_limit()

    from .bind_first import bind_frontends
    from .heap import release_collections
    from .listeners import BindError

    try:  # listening before the heavy imports below (lbcore/bind_first.py)
        bind_frontends(config.config if isinstance(config, Handover) else config, reuse_port)
    except BindError as exc:
        release_collections()
        print(f"lbcore: {exc}", file=sys.stderr)
        return EXIT_BIND

    import uvloop

    from .server import LoadBalancer

    balancer = LoadBalancer(config.take() if isinstance(config, Handover) else config, reuse_port=reuse_port)
    del config
    balancer.on_started.extend(started or ())
    try:
        return uvloop.run(balancer.run())
    except BindError as exc:
        print(f"lbcore: {exc}", file=sys.stderr)
        return EXIT_BIND
    finally:
        release_collections()  # however the server ended (lbcore_main held them)


if __name__ == "__main__":
    sys.exit(main())
