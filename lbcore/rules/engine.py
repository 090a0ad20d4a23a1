"""What runs per request: rule lists and use_backend over compiled checks
and actions. The compiled build makes these loops C loops (engine.pxd);
pure Python runs the same code.

An action's `apply(msg)` returns None to go on, `STOP` to end the list
(accept, allow), `REJECT` (tcp_request reject), or an `Answer` that ends
it and is what the client gets (deny, return, redirect, auth).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .message import conn_of

STOP = "stop"
REJECT = "reject"


class Action:
    __slots__ = ()

    def apply(self, msg) -> Any:
        raise NotImplementedError

    def __call__(self, msg) -> Any:
        return self.apply(msg)


class CallAction(Action):
    """Any action, as a function of the message."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def apply(self, msg) -> Any:
        return self.fn(msg)


class Constant(Action):
    """The same result every time: a prepared answer, STOP or REJECT."""

    __slots__ = ("result",)

    def __init__(self, result: Any) -> None:
        self.result = result

    def apply(self, msg) -> Any:
        return self.result


class Renderer:
    """What a header value becomes for a message: `text(msg)` -> bytes."""

    __slots__ = ()

    def text(self, msg) -> bytes:
        raise NotImplementedError


class ConstantText(Renderer):
    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def text(self, msg) -> bytes:
        return self.value


class ConnectionText(Renderer):
    """%[src], %[dst] or %[dst_port] alone: text the connection keeps."""

    __slots__ = ("fact",)

    def __init__(self, fact: str) -> None:
        self.fact = {"src": 0, "dst": 1, "dst_port": 2}[fact]

    def text(self, msg) -> bytes:
        conn = conn_of(msg)
        if self.fact == 0:
            return conn.src_bytes()
        if self.fact == 1:
            return conn.dst_bytes()
        return conn.dst_port_bytes()


class CallRenderer(Renderer):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def text(self, msg) -> bytes:
        return self.fn(msg)


class SetHeader(Action):
    """set_header (`replace`: every line of the name goes first) and
    add_header; `render.text(msg)` gives the value."""

    __slots__ = ("name", "lname", "key", "render", "replace")

    def __init__(self, name: bytes, render: Callable, replace: bool) -> None:
        self.name = name
        self.lname = name.lower()
        self.key = b"\n" + self.lname + b":"
        self.render = render
        self.replace = replace

    def apply(self, msg) -> Any:
        message = msg  # a request or a response (a C type check when compiled)
        headers = message.headers
        if self.replace and headers.has_at(self.key):
            headers.delete(self.lname)
        headers.add(self.name, self.render.text(msg))
        return None


class DelHeader(Action):
    __slots__ = ("lname", "key")

    def __init__(self, lname: bytes) -> None:
        self.lname = lname
        self.key = b"\n" + lname + b":"

    def apply(self, msg) -> Any:
        message = msg
        headers = message.headers
        if headers.has_at(self.key):
            headers.delete(self.lname)
        return None


def run(rules: tuple, msg) -> Any:
    """Apply `rules` ((when, action, name) each) to `msg`: None when all
    ran, else STOP, REJECT or an Answer."""
    for rule in rules:
        when = rule[0]
        if when is None or when.test(msg):
            action = rule[1]
            result = action.apply(msg)
            if result is not None:
                return result
    return None


def choose_backend(rules: tuple, msg) -> Optional[str]:
    """The backend name the first matching use_backend rule ((when, name,
    format) each) gives; None: the default backend."""
    for rule in rules:
        when = rule[0]
        if when is None or when.test(msg):
            fmt = rule[2]
            if fmt is None:
                return rule[1]
            rendered = fmt.render(msg)
            return rendered.decode("latin-1") if rendered else None
    return None
