"""Conditions, samples and rules in HAProxy's syntax (pure logic, no I/O).

- message.py: what rules read and change (Connection, Request, Response)
- samples.py: fetches and converters (registries others extend), `%[...]`
- matching.py: ACL pattern matching; maps.py: map and pattern files
- conditions.py: ACLs and `if`/`unless` conditions
- checks.py: conditions once compiled; engine.py: the rule loop (`run`),
  the per-request actions, `choose_backend` (both compiled in the fast build)
- actions.py: tcp_request, http_request, http_response actions
- answers.py: deny/return/redirect/auth responses as HAProxy writes them
- switching.py: use_backend; auth.py: userlists and `http_auth`

config.py compiles every expression once at load with `compile_action`
and `compile_condition`; the proxy calls `run` and `choose_backend`.
"""

from __future__ import annotations

from typing import Any, Optional

from . import auth, maps  # noqa: F401  (register http_auth and the map converters)
from .actions import (HTTP_REQUEST_ACTIONS, HTTP_RESPONSE_ACTIONS, REJECT, STOP,
                      TCP_REQUEST_ACTIONS, Rule, run)
from .answers import Answer
from .engine import Action, CallAction
from .conditions import AclTable, compile_condition
from .errors import RuleError
from .message import Connection, Headers, Request, Response
from .samples import (CONVERTERS, FETCHES, L4, REQ, RES, Context, compile_format,
                      compile_sample, converter, fetch)
from .switching import UseBackend, choose_backend

__all__ = [
    "Answer", "AclTable", "Connection", "Context", "CONVERTERS", "FETCHES", "Headers",
    "L4", "REQ", "RES", "REJECT", "Request", "Response", "Rule", "RuleError", "STOP",
    "UseBackend", "LISTS", "choose_backend", "compile_action", "compile_condition",
    "compile_format", "compile_sample", "converter", "fetch", "run",
]

# Rule lists: lb.yaml key -> (its action registry, the data its rules see).
LISTS = {
    "tcp_request": (TCP_REQUEST_ACTIONS, L4),
    "http_request": (HTTP_REQUEST_ACTIONS, REQ),
    "http_response": (HTTP_RESPONSE_ACTIONS, RES),
}


def compile_action(list_name: str, action: str, value: Any, ctx: Context):
    """The act(msg) of one rule; RuleError names what is wrong."""
    registry = LISTS[list_name][0]
    parse = registry.get(action)
    if parse is None:
        raise RuleError(f"unknown {list_name} action {action!r} (expected one of {', '.join(registry)})")
    act = parse(value, ctx)
    return act if isinstance(act, Action) else CallAction(act)


def remember_sni(context) -> None:
    """Make the server name a TLS client sends readable as ssl_fc_sni: kept
    on the connection's SSLObject (rules.frontend reads it back), chained
    with any SNI callback the context has (certificate selection)."""
    previous = context.sni_callback

    def callback(ssl_object, name, ssl_context):
        try:
            ssl_object.lbcore_sni = name
        except AttributeError:
            pass
        return previous(ssl_object, name, ssl_context) if previous is not None else None
    context.sni_callback = callback


def context(list_name: str, base_dir: str, userlists: dict, files: dict, section: str,
            phase: Optional[int] = None) -> Context:
    return Context(phase=LISTS[list_name][1] if phase is None else phase, base_dir=base_dir,
                   userlists=userlists, files=files, where=list_name, section=section)
