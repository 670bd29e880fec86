"""The rule a server secret must meet: at least 32 random bytes, written as text.

The server secret keys the HMAC of every API key and signs the dashboard's session cookies;
with a guessable secret and a public key id anyone could sign a session cookie. Randomness
cannot be proven from the value, so the rule checks what 32 random bytes look like once
written down, and refuses the rest:

- A hexadecimal value carries 4 bits a character: it needs at least :data:`MIN_HEX_LENGTH`
  (64) characters (``secrets.token_hex(32)``, ``openssl rand -hex 32``). Half of that
  (``openssl rand -hex 16``) is 16 bytes, and refused.
- Any other value needs at least :data:`MIN_LENGTH` (43) characters, the length of 32 bytes
  in base64 (``secrets.token_urlsafe(32)``, ``openssl rand -base64 32``); it must not be a
  shorter string repeated and must carry at least :data:`MIN_BITS` bits by its own character
  frequencies (length x the Shannon entropy of its characters), which refuses placeholders,
  padding and patterns ("changeme" repeated, "aaaa...", "abcdefghij" repeated). A random
  base64 value of 43 characters measures about 210 bits.
"""

from __future__ import annotations

import math
import re
from collections import Counter

MIN_LENGTH = 43
MIN_HEX_LENGTH = 64
MIN_BITS = 128
_HEX = re.compile(r"[0-9a-fA-F]+")
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
    if _HEX.fullmatch(value):
        if len(value) < MIN_HEX_LENGTH:
            return (
                f"is {len(value)} hex characters ({len(value) * 4} bits); 32 random bytes are "
                f"{MIN_HEX_LENGTH} hex characters"
            )
        return None if value not in (value + value)[1:-1] else "is a shorter string repeated"
    if len(value) < MIN_LENGTH:
        size = f"{len(value)} character{'s' if len(value) != 1 else ''}"
        return f"is {size} long, at least {MIN_LENGTH} are needed (32 random bytes in base64)"
    if value in (value + value)[1:-1]:
        return "is a shorter string repeated"
    bits = estimated_bits(value)
    if bits < MIN_BITS:
        return (
            f"is too regular to be random (about {bits:.0f} bits by its character frequencies, "
            f"at least {MIN_BITS} are needed)"
        )
    return None
