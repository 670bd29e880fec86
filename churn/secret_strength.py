"""The rule a server secret must meet: long and varied enough to be a random value.

The server secret keys the HMAC of every API key and signs the dashboard's session cookies;
with a guessable secret and a public key id anyone could sign a session cookie. A secret must
have at least :data:`MIN_LENGTH` characters, must not be a shorter string repeated, and must
carry at least :data:`MIN_BITS` bits by its own character frequencies (length x the Shannon
entropy of its characters). That refuses short values, placeholders, typed phrases and
patterns ("changeme" four times, "aaaa...", "abcdefghij" repeated); it cannot prove a value
random, so generate it (:data:`GENERATE_HINT`). The secrets this
project generates (64 hex characters, about 240 bits by this measure) and
``secrets.token_urlsafe(32)`` (43 characters, about 210 bits) pass with a wide margin.
"""

from __future__ import annotations

import math
from collections import Counter

MIN_LENGTH = 32
MIN_BITS = 128
GENERATE_HINT = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


def estimated_bits(value: str) -> float:
    """Length times the Shannon entropy of the value's character frequencies, in bits."""
    if not value:
        return 0.0
    counts = Counter(value).values()
    n = len(value)
    return -sum(c * math.log2(c / n) for c in counts)


def secret_weakness(value: str) -> str | None:
    """Why ``value`` is too weak for a server secret, or None when it meets the rule.

    The reason names sizes only, never the value (it ends up in error messages).
    """
    if len(value) < MIN_LENGTH:
        size = f"{len(value)} character{'s' if len(value) != 1 else ''}"
        return f"is {size} long, at least {MIN_LENGTH} are needed"
    if value in (value + value)[1:-1]:
        return "is a shorter string repeated"
    bits = estimated_bits(value)
    if bits < MIN_BITS:
        return (
            f"is too regular to be random (about {bits:.0f} bits by its character frequencies, "
            f"at least {MIN_BITS} are needed)"
        )
    return None
