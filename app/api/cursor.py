"""Opaque, signed pagination cursors.

A cursor names a pagination session (whose served item ids live in Redis with a TTL), the
user it belongs to, the next page number and the position the next page starts at. It is
base64url(JSON) + "." + base64url(HMAC-SHA256), so a client can neither forge one nor move it
to another user's feed; every replica verifies it with the same secret.

Example:
    codec = CursorCodec(b"secret", max_age_s=1800)
    token = codec.encode(Cursor(session_id="s1", user_id=42, page=2, next_position=21, issued_at=now))
    codec.decode(token, user_id=42, now=now)   # -> the same Cursor
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass


class InvalidCursor(ValueError):
    """The cursor is malformed, forged, expired or belongs to another user (HTTP 400, field `cursor`)."""


@dataclass(frozen=True)
class Cursor:
    session_id: str
    user_id: int
    page: int  # 1-based number of the page this cursor fetches
    next_position: int  # position (1-based) of the first item of that page
    issued_at: float  # world-independent wall-clock seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    MAX_LENGTH = 512  # a longer token is rejected before any decoding work

    def __init__(self, secret: bytes, max_age_s: float) -> None:
        if len(secret) < 16:
            raise ValueError("cursor secret must be at least 16 bytes")
        self._secret = secret
        self.max_age_s = max_age_s

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest()[:16])

    def encode(self, cursor: Cursor) -> str:
        body = _b64(json.dumps(asdict(cursor), separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def decode(self, token: str, user_id: int, now: float) -> Cursor:
        if not token or len(token) > self.MAX_LENGTH or token.count(".") != 1:
            raise InvalidCursor("malformed cursor")
        body, signature = token.split(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            raise InvalidCursor("cursor signature does not verify")
        try:
            fields = json.loads(_unb64(body))
            cursor = Cursor(
                session_id=str(fields["session_id"]),
                user_id=int(fields["user_id"]),
                page=int(fields["page"]),
                next_position=int(fields["next_position"]),
                issued_at=float(fields["issued_at"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
            raise InvalidCursor(f"malformed cursor: {type(exc).__name__}") from None
        if cursor.user_id != user_id:
            raise InvalidCursor("cursor belongs to another user")
        if now - cursor.issued_at > self.max_age_s:
            raise InvalidCursor("cursor expired; start again without one")
        if cursor.page < 2 or cursor.next_position < 1:
            raise InvalidCursor("malformed cursor")
        return cursor
