"""Failed authentication, counted per client address: after ``limit`` failures within
``window`` seconds that address is refused (429 with ``Retry-After``) until the oldest of those
failures is ``window`` seconds old.

One :class:`AuthThrottle` lives on the serving state and is shared by everything that checks
a secret: bearer keys on the API (a missing key is not a failure, a wrong one is) and the
dashboard's login form. A success does not wipe the count: an address guessing keys cannot
reset it with one valid key of its own.

Each failure is logged (event ``auth_failed``) with the public key id the caller named, when
the token was shaped like one of ours, and a short hash of the address - never the token and
never the address itself, which can be personal data. Per process: with ``serve.workers``
above one, each worker counts its own failures.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque

log = logging.getLogger(__name__)

#: Addresses tracked at most; beyond it the stalest is forgotten (a flood of spoofed
#: addresses cannot grow the table without bound).
MAX_ADDRESSES = 100_000


def client_tag(address: str) -> str:
    """A short, stable, non-reversible tag for a client address (for logs)."""
    return hashlib.sha256(address.encode("utf-8", "replace")).hexdigest()[:12]


class AuthThrottle:
    """Sliding-window count of failed authentications per client address; thread-safe."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        stamps = self._failures.get(address)
        if stamps is None:
            return None
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self._failures[address]
            return None
        return stamps

    def wait(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: it may try now)."""
        now = time.monotonic()
        with self._lock:
            stamps = self._recent(address, now)
            if stamps is None or len(stamps) < self.limit:
                return 0.0
            return max(stamps[-self.limit] + self.window - now, 0.001)

    def failed(self, address: str, key_id: str | None, where: str) -> None:
        """Count one failed attempt from ``address`` (``where``: ``api`` or ``login``)."""
        now = time.monotonic()
        with self._lock:
            stamps = self._recent(address, now)
            if stamps is None:
                if len(self._failures) >= MAX_ADDRESSES:
                    del self._failures[next(iter(self._failures))]
                stamps = self._failures[address] = deque(maxlen=self.limit)
            stamps.append(now)
            count = len(stamps)
        log.warning(
            "authentication failed",
            extra={
                "event": "auth_failed",
                "key_id": key_id,
                "client": client_tag(address),
                "route": where,
                "failures": count,
            },
        )
