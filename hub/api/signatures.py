"""Webhook signatures, by the Standard Webhooks specification (standardwebhooks.com).

Outside systems (a warehouse, a payment provider) complete async steps without holding an
API key. A delivery carries three headers: ``webhook-id`` (unique per delivery, kept on
retries), ``webhook-timestamp`` (integer Unix seconds) and ``webhook-signature``
(space-separated ``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``). Signing the
id and the time, not only the body, is what makes a captured delivery useless: outside the
tolerance its timestamp refuses it, inside it its id has already been used (the store
records every accepted id, in the signal's transaction).

Each source has one or more secrets (``HUB_WEBHOOK_SECRETS``, decoded by
``ApiSettings.secrets``): ``whsec_<base64>`` as the specification writes them, or a plain
string, used as its UTF-8 bytes. Several secrets make rotation possible: a signature made
with any of them is accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
LEGACY_HEADER = "X-Hub-Signature-256"

MAX_ID_CHARS = 256
MAX_SIGNATURES = 16
_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_CHARS}}}")  # printable ASCII: safe to store, log


class BadSignature(Exception):
    """Why a delivery is refused (401); the message never contains a secret."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A verified delivery: who sent it, and the id that must not be accepted twice."""

    source: str
    id: str
    timestamp: int


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value a sender computes (tests and the demo use it)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(key: bytes, msg_id: str, body: bytes,
                   timestamp: int | None = None) -> dict[str, str]:
    """All three headers of one delivery (the demo's sender and the tests)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(key, msg_id, ts, body)}


def verify(secrets: dict[str, list[bytes]], source: str, body: bytes, *,
           msg_id: str | None, timestamp: str | None, signature: str | None,
           tolerance_s: float, legacy: str | None = None,
           now: float | None = None) -> Delivery:
    """Check one delivery's headers against the source's secrets, in constant time per
    secret; raise BadSignature naming the first thing wrong."""
    keys = secrets.get(source)
    if not keys:
        raise BadSignature(f"no webhook secret is configured for source {source!r} "
                           "(HUB_WEBHOOK_SECRETS)")
    if not (msg_id and timestamp and signature):
        missing = [h for h, v in ((ID_HEADER, msg_id), (TIMESTAMP_HEADER, timestamp),
                                  (SIGNATURE_HEADER, signature)) if not v]
        hint = (f" ({LEGACY_HEADER} is no longer accepted: it signed the body only, so a "
                "captured delivery could be replayed)" if legacy else "")
        raise BadSignature(f"missing {', '.join(missing)} header(s): sign deliveries by the "
                           f"Standard Webhooks specification{hint}")
    if not _ID.fullmatch(msg_id):
        raise BadSignature(f"{ID_HEADER} must be 1 to {MAX_ID_CHARS} printable ASCII "
                           "characters")
    if not timestamp.isascii() or not timestamp.strip().isdigit() or len(timestamp) > 12:
        raise BadSignature(f"{TIMESTAMP_HEADER} must be integer Unix seconds")
    ts = int(timestamp)
    skew = (time.time() if now is None else now) - ts
    if abs(skew) > tolerance_s:
        raise BadSignature(f"{TIMESTAMP_HEADER} is {abs(int(skew))}s "
                           f"{'old' if skew > 0 else 'in the future'}; deliveries are "
                           f"accepted within {tolerance_s:g}s of the hub's clock")
    given = _signatures(signature)
    if given is None:
        raise BadSignature(f"{SIGNATURE_HEADER} must be space-separated v1,<base64> values "
                           f"(at most {MAX_SIGNATURES})")
    signed = f"{msg_id}.{ts}.".encode() + body
    matched = False
    for key in keys:  # every key and every value is compared: no early exit to time
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for value in given:
            matched |= hmac.compare_digest(expected, value)
    if not matched:
        raise BadSignature(f"{SIGNATURE_HEADER} does not match for source {source!r}: sign "
                           f"'{{{ID_HEADER}}}.{{{TIMESTAMP_HEADER}}}.{{raw body}}' with one of "
                           "that source's secrets")
    return Delivery(source, msg_id, ts)


def _signatures(header: str) -> list[bytes] | None:
    """The v1 signatures of a header; other versions are skipped, as the spec asks."""
    parts = header.split()
    if not parts or len(parts) > MAX_SIGNATURES:
        return None
    out: list[bytes] = []
    for part in parts:
        version, sep, value = part.partition(",")
        if not sep:
            return None
        if version != "v1":
            continue
        try:
            out.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            return None
    return out
