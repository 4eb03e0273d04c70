"""Webhook signatures: HMAC-SHA256 of the raw body with the source's shared secret.

Outside systems (a warehouse, a payment provider) complete async steps without holding an
API key: each source has a secret (``HUB_WEBHOOK_SECRETS``), and a delivery carries
``X-Hub-Signature-256: sha256=<hex>`` (GitHub's format, which most senders can produce).
The signature covers the exact bytes received, so it is checked before the body is parsed;
the comparison takes constant time. A signature proves who sent a body, not when: a replayed
delivery can only repeat an outcome the step already has (409).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Hub-Signature-256"


class BadSignature(Exception):
    """Why a delivery is refused (401); the message never contains a secret."""


def sign(secret: bytes, body: bytes) -> str:
    """The header value a sender computes (tests and client examples use it)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secrets: dict[str, bytes], source: str, body: bytes, header: str | None) -> None:
    secret = secrets.get(source)
    if secret is None:
        raise BadSignature(f"no webhook secret is configured for source {source!r} "
                           "(HUB_WEBHOOK_SECRETS)")
    if not header:
        raise BadSignature(f"missing {SIGNATURE_HEADER} header: send sha256=<hex of "
                           "HMAC-SHA256 of the raw body with the source's secret>")
    scheme, _, given = header.strip().partition("=")
    if scheme.lower() != "sha256" or not given:
        raise BadSignature(f"{SIGNATURE_HEADER} must look like sha256=<hex>")
    expected = sign(secret, body).removeprefix("sha256=")
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode("latin-1",
                                                                              "replace")):
        raise BadSignature(f"{SIGNATURE_HEADER} does not match the body for source "
                           f"{source!r}: sign the exact bytes sent, with that source's secret")
