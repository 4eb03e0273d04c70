"""One redaction policy for everything the hub shows: the JSON API, the console, the CLI and
the logs.

A field is secret when its name matches one of the policy's patterns (``HUB_REDACT_FIELDS``;
by default secret, password, token, api_key, card and their kin). Names are compared by
their words, so ``apiKey``, ``X-Api-Key`` and ``stripe_api_key`` all match ``api_key``
while ``discarded`` does not match ``card``; a pattern of five letters or more also matches
inside one word (``webhooksecret``, ``accesstoken``). Patterns are plain words, never
regular expressions: a settings file cannot make redaction slow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

REDACTED = "***"

DEFAULT_FIELDS: tuple[str, ...] = (
    "secret", "password", "passwd", "passphrase", "token", "api_key", "apikey",
    "authorization", "cookie", "card", "card_number", "cvc", "cvv", "iban", "private_key",
)

_MAX_DEPTH = 100
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_INSIDE_WORD = 5  # patterns this long also match inside a single word


def words(name: str) -> tuple[str, ...]:
    """``"X-Api-Key"`` -> ``("x", "api", "key")``; ``"accessToken"`` -> ``("access", "token")``."""
    return tuple(w.lower() for w in _WORD.findall(name))


class Redaction:
    """Which field names hold secrets, and the copy of a value with theirs replaced."""

    def __init__(self, fields: Iterable[str] = DEFAULT_FIELDS) -> None:
        self.fields = tuple(f for f in fields if f)
        self._patterns = [words(f) for f in self.fields]
        self._patterns = [p for p in self._patterns if p]
        self._inside = [p[0] for p in self._patterns if len(p) == 1 and len(p[0]) >= _INSIDE_WORD]
        self._cache: dict[str, bool] = {}

    def secret(self, name: str) -> bool:
        """True when the field ``name`` holds a secret by this policy."""
        hit = self._cache.get(name)
        if hit is None:
            hit = self._match(name)
            if len(self._cache) < 10_000:
                self._cache[name] = hit
        return hit

    def _match(self, name: str) -> bool:
        got = words(name)
        plural = tuple(w[:-1] if w.endswith("s") else w for w in got)
        for pattern in self._patterns:
            n = len(pattern)
            for seq in (got, plural):
                if any(seq[i:i + n] == pattern for i in range(len(seq) - n + 1)):
                    return True
        flat = name.lower()
        return any(p in flat for p in self._inside)

    def value(self, value: Any, _depth: int = 0) -> Any:
        """``value`` with the value of every secret field replaced by ``***``, at any depth
        (inputs, outputs, results, headers: whatever a step was given may hold one)."""
        if _depth > _MAX_DEPTH:
            return REDACTED
        if isinstance(value, Mapping):
            return {k: REDACTED if isinstance(k, str) and self.secret(k)
                    else self.value(v, _depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v, _depth + 1) for v in value]
        return value

    def path(self, path: str) -> str:
        """A URL path as the lineage may keep it: no query string or fragment, and a segment
        that follows a secret-named one (``/cards/4242...``) or is one's value
        (``key=value``) replaced by ``***``."""
        path = path.split("?", 1)[0].split("#", 1)[0]
        out: list[str] = []
        after_secret = False
        for segment in path.split("/"):
            name, eq, _ = segment.partition("=")
            if after_secret and segment:
                out.append(REDACTED)
            elif eq and self.secret(name):
                out.append(f"{name}={REDACTED}")
            else:
                out.append(segment)
            after_secret = bool(segment) and self.secret(name)
        return "/".join(out)

    def log_processor(self, _logger: Any, _method: str,
                      event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """A structlog processor: a log line never carries a secret field's value."""
        for key in list(event_dict):
            if key != "event" and self.secret(key):
                event_dict[key] = REDACTED
            elif isinstance(event_dict[key], Mapping | list):
                event_dict[key] = self.value(event_dict[key])
        return event_dict


DEFAULT = Redaction()
