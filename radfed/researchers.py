"""Researchers' accounts for the dashboard: who may look at results and submit experiments.

The coordinator creates them (`coordinator researcher add NAME`, server/researcher_cli.py);
the dashboard checks a login against them (dashboard/auth.py). Only a salted scrypt hash
of each secret is stored (hashlib.scrypt: memory-hard, in the standard library, no new
dependency), compared in constant time. An account is either a password account or an
OIDC account (the hospital's identity provider vouches for the name, via Streamlit's
st.login); disabling one ends its dashboard sessions at their next page update.

Failed logins are rate-limited per name, whether or not the name exists (so the
answer never tells which names do): after n failures in a row the next attempt is
refused for 2^(n-1) seconds, at most 15 minutes. The lock is taken atomically before
the secret is checked, so parallel guesses from several browser sessions wait too.
Every login, refusal and account change is in the audit trail (radfed.audit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, select

from radfed.audit import Registry
from radfed.store import Store

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")  # a login name or an e-mail address
KINDS = ("password", "oidc")
STATUSES = ("active", "disabled")
MIN_SECRET_LENGTH = 12
MAX_SECRET_LENGTH = 1024  # scrypt hashes anything; a bound keeps one guess cheap to refuse
MAX_DELAY_S = 900.0
STALE_THROTTLE = timedelta(days=1)  # a name's failure count is forgotten after a quiet day
# scrypt cost: 2^15 x 8 x 128 bytes = 32 MiB and ~0.1 s per hash (OWASP's minimum is 2^17 x 8 x 1
# at 128 MiB, or this with p=3; one dashboard server checks a handful of logins per minute)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 3
SCRYPT_MAXMEM = 64 * 2**20
REFUSED = "wrong name or password"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    return value if value.utcoffset() is not None else value.replace(tzinfo=UTC)


class AccountError(ValueError):
    """An account that cannot be created or changed; one line for the coordinator."""


class LoginRefused(Exception):
    """A login that did not succeed; `message` is safe to show (it never says which part
    was wrong), `retry_after` is the seconds to wait when the name is throttled."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ResearcherAccount(SQLModel, table=True):
    """A dashboard account: a name, how it logs in, and only a salted hash of its secret."""

    __tablename__ = "researchers"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    kind: str = "password"
    secret_hash: str | None = None  # "scrypt$N$r$p$salt$hash" (base64); None for OIDC accounts
    status: str = "active"
    created_at: datetime = Field(default_factory=_utcnow)
    disabled_at: datetime | None = None
    last_login_at: datetime | None = None


class LoginThrottle(SQLModel, table=True):
    """Failed logins in a row for one name (existing or not) and when it may try again."""

    __tablename__ = "login_throttle"

    name: str = Field(primary_key=True)
    failures: int = 0
    locked_until: datetime = Field(default_factory=_utcnow)
    updated_at: datetime = Field(default_factory=_utcnow)


_TABLES = [ResearcherAccount.__table__, LoginThrottle.__table__]  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Researcher:
    """Who is logged in to the dashboard (what pages and the audit trail need to know)."""

    name: str
    kind: str = "password"


# -- secrets ---------------------------------------------------------------------------


def new_secret() -> str:
    """A generated secret: 144 random bits, URL-safe (shown once to the coordinator)."""
    return secrets.token_urlsafe(18)


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """The stored form of a secret: scrypt with a random 16-byte salt and its parameters."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when `secret` hashes to `stored` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


_DUMMY_HASH = hash_secret("no such account", salt=b"radfed-dummy-salt")


def delay_after(failures: int) -> float:
    """Seconds a name must wait after `failures` failed logins in a row: 0, 1, 2, 4, ... 900."""
    return 0.0 if failures <= 0 else min(2.0 ** (failures - 1), MAX_DELAY_S)


def check_name(name: str) -> str:
    """The name, if it is one an account may have; else AccountError."""
    if not isinstance(name, str) or not NAME.match(name):
        raise AccountError(
            f"researcher name {name!r}: use 1-128 letters, digits and . _ @ + - "
            "(starting with a letter or digit), e.g. alice or alice@hospital.org"
        )
    return name


def _printable(name: str) -> str:
    """A name typed into the login form, safe for the audit trail (bounded, no control characters)."""
    return "".join(c if c.isprintable() else "?" for c in str(name)[:128])


# -- accounts --------------------------------------------------------------------------


class Researchers:
    """Accounts and logins on a Store's database (SQLite or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_tables(_TABLES)
        self.audit = Registry(store)

    def add(self, name: str, secret: str | None = None, kind: str = "password", replace: bool = False) -> str | None:
        """Create a password account (or, with `replace`, give one a new secret, re-enable
        it and clear its failed logins); returns the secret (generated when None given).
        An OIDC account has no secret: its identity provider vouches for the name."""
        check_name(name)
        if kind not in KINDS:
            raise AccountError(f"account kind {kind!r}; one of {', '.join(KINDS)}")
        if kind == "password":
            secret = new_secret() if secret is None else secret
            if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
                raise AccountError(
                    f"a secret needs {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} "
                    "characters; leave --stdin out to have one generated"
                )
        else:
            secret = None
        stored = hash_secret(secret) if secret is not None else None
        with self.store.session() as s:
            row = s.exec(select(ResearcherAccount).where(ResearcherAccount.name == name)).first()
            if row is not None and not replace:
                raise AccountError(
                    f"researcher {name} exists; `coordinator researcher add {name} --reset` gives it a new secret"
                )
            row = row or ResearcherAccount(name=name)
            row.kind, row.secret_hash, row.status, row.disabled_at = kind, stored, "active", None
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                raise AccountError(f"researcher {name} exists (added just now by someone else)") from None
        self._forget_failures(name)
        self.audit.event("account", researcher=name, detail=f"{'reset' if replace else 'added'} ({kind} account)")
        return secret

    def disable(self, name: str) -> None:
        """Refuse the account's logins from now on (its open sessions end at their next update)."""
        self._set_status(name, "disabled")

    def enable(self, name: str) -> None:
        """Let a disabled account log in again, and clear its failed logins."""
        self._set_status(name, "active")
        self._forget_failures(name)

    def _set_status(self, name: str, status: str) -> None:
        with self.store.session() as s:
            row = s.exec(select(ResearcherAccount).where(ResearcherAccount.name == name)).first()
            if row is None:
                raise AccountError(f"no researcher {name}; `coordinator researcher list` shows them")
            row.status = status
            row.disabled_at = _utcnow() if status == "disabled" else None
            s.add(row)
            s.commit()
        self.audit.event("account", researcher=name, detail=status)

    def get(self, name: str) -> ResearcherAccount | None:
        with self.store.session() as s:
            return s.exec(select(ResearcherAccount).where(ResearcherAccount.name == name)).first()

    def active(self, name: str) -> Researcher | None:
        """The account as a Researcher while it is active, else None (checked on every page)."""
        row = self.get(name)
        return Researcher(row.name, row.kind) if row is not None and row.status == "active" else None

    def accounts(self) -> list[dict]:
        """Every account with its failed-login count (never its hash)."""
        with self.store.session() as s:
            rows = list(s.exec(select(ResearcherAccount).order_by(ResearcherAccount.name)))
            throttle = {t.name: t.failures for t in s.exec(select(LoginThrottle))}
        return [
            {
                "name": r.name,
                "kind": r.kind,
                "status": r.status,
                "created_at": _aware(r.created_at).isoformat(),
                "last_login_at": _aware(r.last_login_at).isoformat() if r.last_login_at else None,
                "failed_logins": throttle.get(r.name, 0),
            }
            for r in rows
        ]

    def any_active(self) -> bool:
        with self.store.session() as s:
            return s.exec(select(ResearcherAccount.id).where(ResearcherAccount.status == "active")).first() is not None

    # -- logins ------------------------------------------------------------------------

    def login(self, name: str, secret: str, now: datetime | None = None) -> Researcher:
        """Check a password login; the Researcher, or LoginRefused (audited either way)."""
        now = now or _utcnow()
        shown = _printable(name)
        if (
            not isinstance(name, str)
            or not NAME.match(name)
            or not isinstance(secret, str)
            or len(secret) > MAX_SECRET_LENGTH
        ):
            self.audit.event("login-failed", researcher=shown, detail="not an account name")
            raise LoginRefused(REFUSED)
        wait = self._reserve(name, now)
        if wait > 0:
            self.audit.event("login-failed", researcher=name, detail=f"throttled ({wait:.0f} s left)")
            raise LoginRefused(f"too many failed logins for {name}: try again in {wait:.0f} s", wait)
        row = self.get(name)
        usable = row is not None and row.kind == "password" and row.secret_hash is not None
        matches = verify_secret(secret, row.secret_hash if usable else _DUMMY_HASH)  # type: ignore[union-attr,arg-type]
        if not (usable and matches and row.status == "active"):  # type: ignore[union-attr]
            why = (
                "unknown name"
                if row is None
                else "not a password account"
                if not usable
                else "wrong secret"
                if not matches
                else "account disabled"
            )
            failures = self._failed(name, now)
            self.audit.event("login-failed", researcher=name, detail=f"{why} ({failures} in a row)")
            raise LoginRefused(REFUSED)
        self._forget_failures(name)
        return self.logged_in(row.name, "password", now)  # type: ignore[union-attr]

    def logged_in(self, name: str, via: str, now: datetime | None = None) -> Researcher:
        """Record a successful login (password here, or OIDC checked by the dashboard)."""
        with self.store.session() as s:
            s.execute(
                update(ResearcherAccount)
                .where(ResearcherAccount.name == name)  # type: ignore[arg-type]
                .values(last_login_at=now or _utcnow())
            )
            s.commit()
        self.audit.event("login", researcher=name, detail=via)
        return Researcher(name, via)

    def _reserve(self, name: str, now: datetime) -> float:
        """Take this name's next attempt: 0 when it may try now (and the lock is moved as if
        it fails), else the seconds left. One UPDATE ... WHERE locked_until <= now, so of
        parallel attempts one goes ahead and the others wait."""
        with self.store.session() as s:
            s.execute(delete(LoginThrottle).where(LoginThrottle.updated_at < now - STALE_THROTTLE))  # type: ignore[arg-type]
            row = s.get(LoginThrottle, name)
            if row is None:
                s.add(
                    LoginThrottle(
                        name=name, failures=0, locked_until=now + timedelta(seconds=delay_after(1)), updated_at=now
                    )
                )
                try:
                    s.commit()
                    return 0.0
                except IntegrityError:  # a parallel attempt created it first
                    s.rollback()
                    row = s.get(LoginThrottle, name)
                    return max((_aware(row.locked_until) - now).total_seconds(), 1.0) if row else 1.0
            s.commit()
            failures = row.failures
            took = s.execute(
                update(LoginThrottle)
                .where(LoginThrottle.name == name, LoginThrottle.locked_until <= now)  # type: ignore[arg-type]
                .values(locked_until=now + timedelta(seconds=delay_after(failures + 1)), updated_at=now)
            )
            s.commit()
            if took.rowcount == 1:
                return 0.0
            s.expire_all()
            row = s.get(LoginThrottle, name)
            return max((_aware(row.locked_until) - now).total_seconds(), 1.0) if row else 1.0

    def _failed(self, name: str, now: datetime) -> int:
        """Count one more failure; the lock already covers it (taken by _reserve)."""
        with self.store.session() as s:
            s.execute(
                update(LoginThrottle)
                .where(LoginThrottle.name == name)  # type: ignore[arg-type]
                .values(failures=LoginThrottle.failures + 1, updated_at=now)
            )
            s.commit()
            row = s.get(LoginThrottle, name)
            return row.failures if row else 1

    def _forget_failures(self, name: str) -> None:
        with self.store.session() as s:
            s.execute(delete(LoginThrottle).where(LoginThrottle.name == name))  # type: ignore[arg-type]
            s.commit()
