"""The PROXY protocol header (v1 text, v2 binary) sent first to a server
with `send_proxy`, so it sees the real client address."""

from __future__ import annotations

import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def header(version: str, src, dst) -> bytes:
    """src/dst: (host, port) socket addresses of the client connection."""
    try:
        src_ip = ipaddress.ip_address(src[0])
        dst_ip = ipaddress.ip_address(dst[0])
    except (ValueError, TypeError, IndexError):
        return b"PROXY UNKNOWN\r\n" if version == "v1" else V2_SIGNATURE + b"\x20\x00\x00\x00"
    if src_ip.version != dst_ip.version:
        # An IPv4 client on an IPv6 listener shows up mapped; fall back to LOCAL.
        return b"PROXY UNKNOWN\r\n" if version == "v1" else V2_SIGNATURE + b"\x20\x00\x00\x00"
    if version == "v1":
        family = b"TCP4" if src_ip.version == 4 else b"TCP6"
        return b"PROXY %s %s %s %d %d\r\n" % (
            family, str(src_ip).encode(), str(dst_ip).encode(), src[1], dst[1])
    if src_ip.version == 4:
        fam, addrs = 0x11, src_ip.packed + dst_ip.packed
    else:
        fam, addrs = 0x21, src_ip.packed + dst_ip.packed
    body = addrs + struct.pack("!HH", src[1], dst[1])
    return V2_SIGNATURE + bytes((0x21, fam)) + struct.pack("!H", len(body)) + body
