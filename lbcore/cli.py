"""`lbcore -c lb.yaml [--check] [--version]`."""

from __future__ import annotations

import argparse
import sys

from . import __version__, build

EXIT_CONFIG = 2
EXIT_BIND = 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="lbcore", description="TCP/HTTP load balancer with HAProxy's semantics.")
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file (lb.yaml)")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--version", action="store_true",
                        help="print the version and what runs compiled, and exit")
    args = parser.parse_args(argv)
    if args.version:
        print(f"lbcore {__version__}\n{build()}")
        return 0
    if not args.config:
        parser.error("-c FILE is required")

    import gc

    from .config import ConfigError, load

    # No cyclic collection while a large file is read: its YAML node tree
    # is acyclic and freed by reference counting, and collections started by
    # its allocations would walk it again and again.
    gc.disable()
    try:
        config = load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    finally:
        gc.enable()
    if args.check:
        print(f"Configuration file {args.config} is valid")
        return 0

    if config.global_.workers > 1:
        from .workers import run_master
        return run_master(config)
    return run_single(config)


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


def run_single(config, reuse_port: bool = False) -> int:
    import uvloop

    raise_fd_limit()

    from .server import BindError, LoadBalancer

    balancer = LoadBalancer(config, reuse_port=reuse_port)
    try:
        return uvloop.run(balancer.run())
    except BindError as exc:
        print(f"lbcore: {exc}", file=sys.stderr)
        return EXIT_BIND


if __name__ == "__main__":
    sys.exit(main())
