"""Userlists and the `http_auth(LIST)` fetch: HTTP Basic credentials
checked against crypt(3) hashes or plain passwords.

Hashes are verified by the system's libcrypt (libxcrypt on Debian), called
through ctypes: the same library HAProxy links for its userlists and the
one that wrote /etc/shadow, so every scheme an operator can produce with
`mkpasswd` ($5$, $6$, $y$, $2b$, ...) verifies exactly as it does there,
with no hand-written crypto in lbcore. Python's `crypt` module would wrap
the same call but is deprecated and gone in 3.13. A verification costs a
few milliseconds by design (5000 rounds of SHA-512 for $6$), so results
are remembered per credential (keyed by a SHA-256 of it, never the text),
as a client sends the same Authorization header on every request.
"""

from __future__ import annotations

import base64
from typing import Optional

from .errors import RuleError
from .samples import REQ, fetch

CACHE_SIZE = 1024


class _LibCrypt:
    def __init__(self) -> None:
        self.error: Optional[str] = None
        self._crypt_rn = None
        self._data = None
        # ctypes, and finding libcrypt (it runs ldconfig): only for a config with userlists.
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
        try:
            lib = ctypes.CDLL(name)
            crypt_rn = lib.crypt_rn
        except (OSError, AttributeError) as exc:
            self.error = f"libcrypt is not available ({exc}); install libcrypt1"
            return
        crypt_rn.restype = ctypes.c_char_p
        crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        self._crypt_rn = crypt_rn
        self._memset = ctypes.memset
        # struct crypt_data is 32 KiB in libxcrypt; crypt_rn checks the size.
        self._data = ctypes.create_string_buffer(65536)

    def crypt(self, phrase: bytes, setting: bytes) -> Optional[bytes]:
        if self._crypt_rn is None:
            return None
        self._memset(self._data, 0, 64)
        return self._crypt_rn(phrase, setting, self._data, len(self._data))


_libcrypt: Optional[_LibCrypt] = None


def _lib() -> _LibCrypt:
    """libcrypt, found and loaded on first use (finding it runs ldconfig)."""
    global _libcrypt
    if _libcrypt is None:
        _libcrypt = _LibCrypt()
    return _libcrypt


def crypt(phrase: bytes, setting: bytes) -> Optional[bytes]:
    """crypt(3) of `phrase` with the salt and method of `setting`, None if
    the method is unknown or libcrypt is missing."""
    return _lib().crypt(phrase, setting)


def check_hash(hashed: str) -> None:
    """Raise RuleError unless libcrypt can verify against `hashed`."""
    if _lib().error:
        raise RuleError(_lib().error)
    result = crypt(b"lbcore-probe", hashed.encode())
    if not result or result.startswith(b"*") or not hashed.startswith("$") and len(hashed) != 13:
        raise RuleError(f"unsupported password hash {hashed[:6]!r}... (expected a crypt(3) hash "
                        "such as mkpasswd -m sha-512 makes: $6$...)")


class Userlist:
    """Users and their secrets; `check(user, password)` verifies one pair."""

    def __init__(self, name: str, users: dict) -> None:
        import hashlib  # here, not at import: a config without userlists never loads them
        import hmac
        self.name = name
        self.users = users  # user (bytes) -> (hashed: bool, secret: bytes)
        self._cache: dict = {}
        self._sha256 = hashlib.sha256
        self._same = hmac.compare_digest

    def check(self, user: bytes, password: bytes) -> bool:
        entry = self.users.get(user)
        if entry is None:
            return False
        hashed, secret = entry
        if not hashed:
            return self._same(password, secret)
        key = self._sha256(user + b"\0" + password).digest()
        known = self._cache.get(key)
        if known is None:
            result = crypt(password, secret)
            known = result is not None and self._same(result, secret)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = known
        return known

    def check_header(self, authorization: Optional[bytes]) -> bool:
        """An Authorization header value with Basic credentials."""
        if not authorization:
            return False
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except ValueError:
            return False
        user, colon, password = decoded.partition(b":")
        return bool(colon) and self.check(user, password)


@fetch("http_auth", "bool", REQ, 1, 1)
def _http_auth(args, ctx):
    userlist = ctx.userlists.get(args[0])
    if userlist is None:
        known = ", ".join(sorted(ctx.userlists)) or "none defined"
        raise RuleError(f"unknown userlist {args[0]!r} ({known})")

    def one(msg):
        return userlist.check_header(msg.headers.last_full(b"authorization"))
    return one, None
