"""HAProxy's value syntaxes: times, addresses, status lists.

Each parser takes the word as written and returns lb.yaml's form of it, or
raises ValueError with a message the reader prefixes with file:line.
"""

from __future__ import annotations

import functools
import ipaddress
import re

_TIME = re.compile(r"([0-9]+)(us|ms|s|m|h|d)?")
_DURATION = re.compile(r"([0-9.]+)(ms|s|m|h|d)")
_INTEGER = re.compile(r"-?[0-9]+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def is_zero_time(word: str) -> bool:
    match = _TIME.fullmatch(word)
    return bool(match) and int(match.group(1)) == 0


# A large file repeats the same few times and counts on every server line:
# each word is parsed once (errors raise, and are not remembered).
@functools.lru_cache(maxsize=1024)
def duration(word: str) -> str:
    """HAProxy time (milliseconds unless a unit is given) -> lb.yaml duration."""
    match = _TIME.fullmatch(word)
    if not match:
        raise ValueError(f"invalid time '{word}' (expected a number of milliseconds or a number "
                         "with a unit: us, ms, s, m, h, d)")
    number, unit = int(match.group(1)), match.group(2) or "ms"
    if number == 0:
        raise ValueError(f"a time of 0 ('{word}') is not supported: lbcore's timeouts must be positive")
    if unit == "us":
        return f"{number / 1000:g}ms"
    return f"{number}{unit}"


def seconds(text: str) -> float:
    """An lb.yaml duration written by duration(), in seconds (for comparing)."""
    match = _DURATION.fullmatch(text)
    assert match, text
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@functools.lru_cache(maxsize=1024)
def integer(word: str, low: int = 0, high: int | None = None) -> int:
    if not _INTEGER.fullmatch(word):
        raise ValueError(f"expected an integer, got '{word}'")
    value = int(word)
    if value < low or (high is not None and value > high):
        raise ValueError(f"{value} is out of range ({low}..{high if high is not None else ''})")
    return value


def _strip_family(word: str) -> tuple[str, str]:
    if "@" not in word:
        return "", word  # (most addresses: no prefix to look for)
    for prefix in ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@", "udp@", "udp4@", "udp6@"):
        if word.startswith(prefix):
            return prefix[:-1], word[len(prefix):]
    if "@" in word.split(":")[0] or word.startswith(("unix@", "abns@", "fd@", "sockpair@")):
        raise ValueError(f"address '{word}': unix, abns, fd and sockpair addresses are not supported")
    return "", word


def _host_port(word: str, text: str, need_port: bool, default_port: int | None = None) -> tuple[str, str]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"invalid address '{word}'")
        host, rest = text[1:end], text[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") > 1:
        # HAProxy writes IPv6 without brackets: the last colon starts the port.
        host, _, port = text.rpartition(":")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            host, port = text, ""
    elif ":" in text:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not port:
        if default_port is not None:
            port = str(default_port)
        elif need_port:
            raise ValueError(f"address '{word}' has no port (lbcore needs an explicit port)")
    if port.startswith(("+", "-")):
        raise ValueError(f"address '{word}': port offsets are not supported")
    if "-" in port:
        raise ValueError(f"address '{word}': port ranges are not supported")
    return host, port


def join_address(host: str, port: str) -> str:
    if host in ("", "*", "0.0.0.0", "::"):
        return f"*:{port}" if host != "::" else f"[::]:{port}"
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


# Most addresses are written IPV4:PORT, which the parsers below give back
# as written (join_address writes 0.0.0.0 as *): those skip the parse.
_IPV4_PORT = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}:[0-9]+")


def _as_written(word: str) -> bool:
    return _IPV4_PORT.fullmatch(word) is not None and not word.startswith("0.0.0.0:")


def bind_addresses(word: str) -> list[str]:
    """`bind` takes a comma-separated list of addresses."""
    if _as_written(word):
        return [word]
    out = []
    for part in word.split(","):
        _, text = _strip_family(part)
        if text.startswith("/"):
            raise ValueError(f"address '{part}': unix socket binds are not supported")
        host, port = _host_port(part, text, need_port=True)
        out.append(join_address(host, port))
    return out


def server_address(word: str) -> str:
    if _as_written(word):
        return word
    _, text = _strip_family(word)
    if text.startswith("/"):
        raise ValueError(f"address '{word}': unix socket servers are not supported")
    host, port = _host_port(word, text, need_port=True)
    return join_address(host, port)


def syslog_address(word: str) -> str:
    """`log` target: /dev/log and other unix sockets, or udp host[:port]."""
    if word.startswith("/"):
        return "unix:" + word
    if word.startswith("unix@"):
        return "unix:" + word[5:]
    family, text = _strip_family(word)
    if family.startswith("tcp"):
        raise ValueError(f"log target '{word}': syslog over TCP is not supported (use udp)")
    host, port = _host_port(word, text, need_port=False, default_port=514)
    return join_address(host, port)


def status_codes(word: str) -> list:
    """`http-check expect status 200`, `200,204`, `200-399` -> lb.yaml list."""
    codes: list = []
    for part in word.split(","):
        if re.fullmatch(r"[1-5][0-9][0-9]", part):
            codes.append(int(part))
            continue
        match = re.fullmatch(r"([1-5][0-9][0-9])-([1-5][0-9][0-9])", part)
        if not match or int(match.group(1)) > int(match.group(2)):
            raise ValueError(f"invalid status '{part}' (expected a code like 200 or a range like 200-399)")
        low, high = int(match.group(1)), int(match.group(2))
        for first in range(low - low % 100, high + 1, 100):
            if first >= low and first + 99 <= high:
                codes.append(f"{first // 100}xx")
            else:
                codes.extend(range(max(first, low), min(first + 99, high) + 1))
    return codes


def status_regex(pattern: str) -> list:
    """`http-check expect rstatus REGEX` -> the lb.yaml list of the codes
    (100..599) the regex finds a match in, as HAProxy matches the status."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression '{pattern}': {exc}") from None
    out: list = []
    for first in range(100, 600, 100):
        matched = [code for code in range(first, first + 100) if compiled.search(str(code))]
        out.extend([f"{first // 100}xx"] if len(matched) == 100 else matched)
    if not out:
        raise ValueError(f"'{pattern}' matches no status code (100..599)")
    return out
