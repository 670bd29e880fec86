"""Dashboard sessions: an API key exchanged at ``/login`` for a signed session cookie.

The cookie (HttpOnly, SameSite=Strict) names the key and a random session id and is signed
with the server secret of the API keys. Every page re-checks the key against the key store,
so a revoked or expired key ends its sessions at once. ``/logout`` revokes the session id, so
a copied cookie stops working too.

Revocations are written to ``<data_dir>/dashboard-sessions.json``, never beside the keys file:
the service needs only read access to the keys folder. When that file cannot be written the
revocation is kept in this process's memory and logged (event ``session_revocation_unsaved``):
the cookie is still deleted and refused, until the process restarts.

Login and logout are POST only and refused when the browser says the form came from another
site (:func:`cross_site_reason`, checking ``Origin``, else ``Referer``); failed logins are
counted per client address by the shared :class:`serving.throttle.AuthThrottle`.
See ``docs/security.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response

log = logging.getLogger(__name__)

SESSION_COOKIE = "churn_session"
SESSION_MAX_AGE = 8 * 3600
SESSION_SALT = "churn-dashboard-session"
#: The revocations file, under ``settings.data_dir``.
REVOCATIONS_FILE = "dashboard-sessions.json"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Viewer:
    """The logged-in user as the dashboard needs it: role and (for managers) the manager."""

    role: str
    manager: str | None = None
    key_id: str | None = None

    @property
    def display(self) -> str:
        return self.manager or {"admin": "Administrator", "crm": "CRM integration"}.get(
            self.role, self.role
        )

    @property
    def scope(self) -> str | None:
        """The manager whose accounts this viewer may see; None for all accounts."""
        return self.manager if self.role == "manager" else None


class SessionRevocations:
    """Session ids ended by logging out, each kept until its cookie would have expired.

    A JSON file ``{session id: expiry (epoch seconds)}`` written atomically under a lock and
    re-read when it changes, so revocations survive a restart and are shared by the worker
    processes. A revocation is also kept in memory: when the file cannot be written (a
    read-only folder, a full disk) the logout still holds in this process, and is logged.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._revoked: dict[str, float] = {}
        self._memory: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SessionRevocations:
        return cls(Path(data_dir) / REVOCATIONS_FILE)

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("session revocations unreadable; sessions stay valid until they expire")
            return {}
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _current(self) -> dict[str, float]:
        try:
            st = self.path.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._revoked = self._read() if stamp is not None else {}
                self._stamp = stamp
            return self._revoked

    def is_revoked(self, session_id: str) -> bool:
        with self._lock:
            if session_id in self._memory:
                return True
        return session_id in self._current()

    def revoke(self, session_id: str, until: float) -> bool:
        """Revoke ``session_id`` until ``until``; False when only memory holds it (logged)."""
        now = time.time()
        with self._lock:
            self._memory = {k: v for k, v in self._memory.items() if v > now}
            self._memory[session_id] = until
        try:
            self._write(session_id, until, now)
        except OSError as exc:
            log.warning(
                "session revocation kept in memory only: the revocations file cannot be written",
                extra={
                    "event": "session_revocation_unsaved",
                    "error": exc.strerror or type(exc).__name__,
                },
            )
            return False
        return True

    def _write(self, session_id: str, until: float, now: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            revoked = {k: v for k, v in self._read().items() if v > now}
            revoked[session_id] = until
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump(revoked, fh)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


def _serializer(request: Request) -> Any:
    """Signs session cookies with the server secret of the API keys (so sessions survive a
    restart), or a per-process secret while no key exists yet."""
    from itsdangerous import URLSafeTimedSerializer

    state = request.app.state
    secret = getattr(state, "dashboard_secret", None)
    if secret is None:
        secret = state.serving.keys.server_secret()
        if secret is None:
            # No key exists yet, so nobody can log in; do not cache the stand-in secret.
            return URLSafeTimedSerializer(secrets.token_urlsafe(32), salt=SESSION_SALT)
        state.dashboard_secret = secret
    return URLSafeTimedSerializer(secret, salt=SESSION_SALT)


def _revocations(request: Request) -> SessionRevocations:
    state = request.app.state
    revocations = getattr(state, "session_revocations", None)
    if revocations is None:
        revocations = SessionRevocations.in_data_dir(state.serving.settings.data_dir)
        state.session_revocations = revocations
    return revocations


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port or _DEFAULT_PORTS.get(scheme, 0)


def cross_site_reason(request: Request) -> str | None:
    """Why a form post looks cross-site, or None when it may proceed.

    Browsers send ``Origin`` with every POST (``null`` when they hide it); without it,
    ``Referer``. Either must name this site: the same host and port as the request's ``Host``
    header (the scheme is not compared: behind a TLS proxy the service sees plain HTTP). A
    post with neither header does not come from a browser's form, so it cannot be forged by
    another site, and is let through. The dashboard's pages use ``Referrer-Policy:
    same-origin`` so that browsers do send their origin on these posts.
    """
    origin = request.headers.get("origin")
    if origin is None:
        origin = request.headers.get("referer")
        if origin is None:
            return None
    if origin.strip().lower() == "null":
        return "the browser did not say which site the form came from"
    claimed = urlsplit(origin.strip())
    scheme = claimed.scheme.lower()
    ours = _host_port(request.headers.get("host", ""), scheme)
    theirs = _host_port(claimed.netloc, scheme) if scheme in _DEFAULT_PORTS else None
    if ours is None or theirs != ours:
        return "the form was sent from another site"
    return None


def _session(request: Request) -> tuple[str, str, float] | None:
    """(key id, session id, signed at) of a validly signed, unexpired, unrevoked cookie."""
    from itsdangerous import BadSignature

    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        data, signed = _serializer(request).loads(
            token, max_age=SESSION_MAX_AGE, return_timestamp=True
        )
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    key_id, session_id = data.get("k"), data.get("s")
    if not isinstance(key_id, str) or not isinstance(session_id, str):
        return None  # includes cookies from before sessions had ids: log in again
    if _revocations(request).is_revoked(session_id):
        return None
    return key_id, session_id, signed.timestamp()


def current_viewer(request: Request) -> Viewer | None:
    """The logged-in viewer from the session cookie, re-checked against the key store so a
    revoked or expired key ends its sessions at once, and against the logged-out sessions."""
    session = _session(request)
    if session is None:
        return None
    key_id = session[0]
    keys = request.app.state.serving.keys
    record = next((k for k in keys.list() if k.key_id == key_id), None)
    if record is None or not record.active:
        return None
    # The access log records who looked (key id and role), never what they saw.
    request.state.key_id, request.state.role = record.key_id, record.role
    return Viewer(role=record.role, manager=record.manager, key_id=record.key_id)


def start_session(request: Request, response: Response, api_key: str) -> bool:
    """Set a new session cookie on ``response`` when ``api_key`` is a valid key."""
    token = api_key.strip()
    key = request.app.state.serving.keys.authenticate(token) if token else None
    if key is None or key.role == "metrics":  # a scraper's key opens no dashboard session
        return False
    response.set_cookie(
        SESSION_COOKIE,
        _serializer(request).dumps({"k": key.key_id, "s": secrets.token_urlsafe(18)}),
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return True


def end_session(request: Request, response: Response) -> None:
    """Revoke the request's session for good (not only in this browser) and drop its cookie.

    Never fails for want of a writable folder: the revocation then lives in memory only
    (:meth:`SessionRevocations.revoke` logs it) and the cookie is deleted all the same.
    """
    session = _session(request)
    if session is not None:
        _revocations(request).revoke(session[1], until=session[2] + SESSION_MAX_AGE)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def safe_next(value: str | None) -> str:
    """Where to go after logging in: only same-site paths, never another host."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value
