"""API keys: created by ``churn keys add``, stored hashed, checked on every request.

A key reads ``ck_<key id>_<secret>``. The key id is public (it appears in logs and in
``churn keys list``) and finds the stored record in O(1); the record keeps only
HMAC-SHA256(server secret, key), compared in constant time. Keys carry 256 random bits, so a
keyed hash suffices (a slow password hash protects low-entropy passwords, not random keys);
the server secret means a stolen keys file alone cannot even confirm a guessed key.

The server secret is ``settings.secret_key`` when set, otherwise a random one (32 random
bytes, 64 hex characters) generated once into ``<keys_file stem>.secret`` beside the keys file
(mode 0600). Either must meet :mod:`churn.secret_strength` (it also signs dashboard session
cookies): a weak one is refused with a ConfigError, at start-up for the service. Changing it
invalidates every key. The keys file is JSON, written atomically with mode 0600 under a lock, and
re-read by a running server when it changes, so ``churn keys add`` / ``revoke`` take effect
without a restart.

Roles: ``crm`` (score any account, read all), ``manager`` (only the accounts whose
``account_manager`` is the key's manager name), ``admin`` (everything, incl. model reload),
``metrics`` (``/metrics`` only: for a Prometheus scraper; no API route, no dashboard).

A key may expire (``churn keys add --expires-days N``): from ``expires_at`` on it is refused
like a revoked one, and the dashboard sessions it opened end with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol, TypeGuard, get_args

from churn.errors import ConfigError
from churn.secret_strength import GENERATE_HINT, secret_weakness
from churn.text import NAME_MAX_LENGTH, normalise_name, text_problem

Role = Literal["crm", "manager", "admin", "metrics"]
ROLES: tuple[str, ...] = get_args(Role)


def _is_role(value: str) -> TypeGuard[Role]:
    return value in ROLES


class _KeySettings(Protocol):
    """What ``KeyStore.from_settings`` reads of the settings."""

    @property
    def keys_file(self) -> Path: ...

    @property
    def secret_key(self) -> str | None: ...


KEY_PREFIX = "ck"
_ID_BYTES = 6  # 12 hex characters
FILE_FORMAT = 1


@dataclass(frozen=True)
class ApiKey:
    """One stored key (never the key itself): id, role, manager name, HMAC digest, dates."""

    key_id: str
    role: Role
    manager: str | None
    digest: str
    created_at: str
    revoked_at: str | None = None
    expires_at: str | None = None

    @property
    def expired(self) -> bool:
        if self.expires_at is None:
            return False
        try:
            until = datetime.fromisoformat(self.expires_at)
        except ValueError:
            return True  # an unreadable date: refuse rather than trust
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        return datetime.now(UTC) >= until

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired


def secret_file_for(keys_file: Path) -> Path:
    """Where the generated server secret lives when ``secret_key`` is not set."""
    return keys_file.with_name(f"{keys_file.stem}.secret")


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def parse_key_id(token: str) -> str | None:
    """The key id of a presented key, or None when it is not shaped like one of ours."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or len(key_id) != 2 * _ID_BYTES or not secret:
        return None
    if any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id


class KeyStore:
    """The keys file plus the server secret; safe to share between request threads."""

    def __init__(self, path: Path, secret: str | None = None) -> None:
        self.path = Path(path)
        reason = secret_weakness(secret) if secret else None
        if reason is not None:
            raise ConfigError(f"the server secret {reason}", hint=GENERATE_HINT)
        self._secret = secret.encode() if secret else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[str, ApiKey] = {}

    @classmethod
    def from_settings(cls, settings: _KeySettings) -> KeyStore:
        """The store named by ``settings.keys_file`` with ``settings.secret_key`` (if set).

        A generated secret file that exists already is read and checked here, so a weak or
        unreadable one stops the service at start-up rather than failing its requests.
        """
        store = cls(settings.keys_file, settings.secret_key or None)
        store.server_secret()
        return store

    # ------------------------------------------------------------------------------ secret
    def _server_secret(self, create: bool) -> bytes | None:
        if self._secret is not None:
            return self._secret
        path = secret_file_for(self.path)
        if not path.exists():
            if not create:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another `keys add` won the race: use its secret
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32) + "\n")
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the server secret {path}: {exc.strerror or exc}",
                hint="set CHURN_SECRET_KEY or fix the file's permissions",
            ) from exc
        if not value:
            raise ConfigError(
                f"the server secret file {path} is empty",
                hint="delete it and re-create the keys with `churn keys add`",
            )
        reason = secret_weakness(value)
        if reason is not None:
            raise ConfigError(
                f"the server secret in {path} {reason}",
                hint="delete it and re-create the keys with `churn keys add` (a new secret is "
                "generated; the old keys stop working), or set CHURN_SECRET_KEY: " + GENERATE_HINT,
            )
        self._secret = value.encode()
        return self._secret

    def server_secret(self) -> bytes | None:
        """The server secret (checked), or None while none is set and none was generated."""
        return self._server_secret(create=False)

    def _digest(self, token: str, secret: bytes) -> str:
        return hmac.new(secret, token.encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------------------- file
    def _read_file(self) -> dict[str, ApiKey]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"cannot read the API keys file {self.path}: {exc}",
                hint="restore it from a backup or delete it and create new keys",
            ) from exc
        try:
            # Names in the form the import stores them, also for keys made before it did.
            keys = [
                ApiKey(**{**record, "manager": normalise_name(record["manager"] or "") or None})
                for record in data["keys"]
            ]
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"the API keys file {self.path} is not in the expected format",
                hint="restore it from a backup or delete it and create new keys",
            ) from exc
        return {k.key_id: k for k in keys}

    def _write_file(self, keys: dict[str, ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"format": FILE_FORMAT, "keys": [asdict(k) for k in keys.values()]}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(body, fh, indent=2)
                fh.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, ApiKey]]:
        """Read-modify-write under an exclusive file lock (concurrent ``churn keys`` calls)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self._read_file()
            yield keys
            self._write_file(keys)
        self._stamp = None

    def _current(self) -> dict[str, ApiKey]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or stamp is None:
            with self._lock:
                self._keys = self._read_file() if stamp is not None else {}
                self._stamp = stamp
        return self._keys

    # -------------------------------------------------------------------------------- API
    def add(
        self, role: str, manager: str | None = None, expires_days: float | None = None
    ) -> tuple[ApiKey, str]:
        """Create a key; returns the stored record and the key (shown once, never stored).

        ``expires_days``: the key stops working that many days from now (None: never).
        """
        if expires_days is not None and not 0 < expires_days <= 3650:
            raise ConfigError(
                f"--expires-days must be between 1 and 3650, not {expires_days:g}",
                hint="leave it out for a key that does not expire",
            )
        if not _is_role(role):
            raise ConfigError(f"unknown role {role!r}", hint=f"use one of {', '.join(ROLES)}")
        if manager and text_problem(manager, NAME_MAX_LENGTH):
            raise ConfigError(
                f"--manager {text_problem(manager, NAME_MAX_LENGTH)}",
                hint="give the name as in accounts.account_manager",
            )
        # The form the import stores names in, so the key matches its manager's accounts.
        manager = normalise_name(manager) if manager else None
        if role == "manager" and not manager:
            raise ConfigError(
                "a manager key needs the account manager's name",
                hint="churn keys add --role manager --manager NAME (as in account_manager)",
            )
        if role != "manager" and manager:
            raise ConfigError(
                f"--manager applies only to the manager role, not {role}",
                hint="drop --manager, or use --role manager",
            )
        secret = self._server_secret(create=True)
        assert secret is not None
        with self._locked() as keys:
            key_id = secrets.token_hex(_ID_BYTES)
            while key_id in keys:
                key_id = secrets.token_hex(_ID_BYTES)
            token = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
            now = datetime.now(UTC).replace(microsecond=0)
            expires = (now + timedelta(days=expires_days)).isoformat() if expires_days else None
            record = ApiKey(
                key_id,
                role,
                manager,
                self._digest(token, secret),
                now.isoformat(),
                expires_at=expires,
            )
            keys[key_id] = record
        return record, token

    def list(self) -> list[ApiKey]:
        """Every key ever created (revoked ones keep their revocation date), oldest first."""
        return sorted(self._read_file().values(), key=lambda k: (k.created_at, k.key_id))

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by its id; it stops working at the next request."""
        with self._locked() as keys:
            if key_id not in keys:
                raise ConfigError(
                    f"no API key with id {key_id!r} in {self.path}",
                    hint="`churn keys list` shows the ids",
                )
            record = keys[key_id]
            if record.revoked_at is None:
                record = replace(record, revoked_at=_now())
                keys[key_id] = record
        return record

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key matching ``token``, else None (unknown, wrong, revoked, expired)."""
        key_id = parse_key_id(token)
        if key_id is None:
            return None
        record = self._current().get(key_id)
        secret = self._server_secret(create=False)
        if record is None or secret is None:
            return None
        if not hmac.compare_digest(record.digest, self._digest(token, secret)):
            return None
        return record if record.active else None

    def has_keys(self) -> bool:
        """Whether any active key exists (the server says how to create one otherwise)."""
        return any(k.active for k in self._current().values())
