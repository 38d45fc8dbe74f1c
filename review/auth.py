"""Who may see which tenant: tokens from the environment, sessions, CSRF.

``REVIEW_TOKENS`` holds ``tenant:token`` pairs separated by commas; one token may be listed
for several tenants, and the tenant ``*`` means every tenant (an operator). Signing in with
a token opens a server-side session bound to those tenants; ``Authorization: Bearer <token>``
works without a session (scripts). Behind an identity proxy, ``REVIEW_TRUSTED_HEADER`` names
the header carrying the signed-in user's tenants (e.g. oauth2-proxy's ``X-Forwarded-Groups``)
and ``REVIEW_USER_HEADER`` the user's name; only safe when nothing but the proxy reaches us.

Tokens are compared in constant time and never logged or put in a URL.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass, field

ALL_TENANTS = "*"
SESSION_COOKIE = "review_session"
#: Sessions end after this long; signing in again is cheap.
SESSION_SECONDS = 12 * 3600


class ConfigError(ValueError):
    """REVIEW_TOKENS is malformed; the message says where (never the token itself)."""


@dataclass(frozen=True)
class Access:
    """What one signed-in person may read and change."""

    tenants: frozenset[str]
    who: str
    csrf: str = ""  # empty for bearer and proxy requests: they carry no cookie to forge

    def allows(self, tenant: str) -> bool:
        return ALL_TENANTS in self.tenants or tenant in self.tenants


def parse_tokens(text: str) -> dict[str, frozenset[str]]:
    """``"shop-a:tok1,shop-b:tok2,*:tok3"`` -> token -> tenants."""
    from orchestration.partitions import BatchKey

    out: dict[str, set[str]] = {}
    for number, entry in enumerate(filter(None, (e.strip() for e in text.split(","))), 1):
        tenant, sep, token = entry.partition(":")
        if not sep or not token:
            raise ConfigError(f"REVIEW_TOKENS entry {number} is not tenant:token")
        if len(token) < 16:
            raise ConfigError(f"REVIEW_TOKENS entry {number} ({tenant}): use 16+ characters")
        if tenant != ALL_TENANTS:
            try:
                BatchKey(tenant, "x")
            except ValueError as exc:
                raise ConfigError(f"REVIEW_TOKENS entry {number}: {exc}") from exc
        out.setdefault(token, set()).add(tenant)
    return {token: frozenset(tenants) for token, tenants in out.items()}


@dataclass
class Authenticator:
    tokens: dict[str, frozenset[str]]
    trusted_header: str | None = None
    user_header: str | None = None
    _sessions: dict[str, tuple[Access, float]] = field(default_factory=dict)
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_env(cls, default_tokens: str = "") -> Authenticator:
        text = os.environ.get("REVIEW_TOKENS") or default_tokens
        return cls(
            tokens=parse_tokens(text),
            trusted_header=os.environ.get("REVIEW_TRUSTED_HEADER") or None,
            user_header=os.environ.get("REVIEW_USER_HEADER") or None,
        )

    def check_token(self, token: str) -> frozenset[str] | None:
        found = None
        for known, tenants in self.tokens.items():  # every entry: no early exit to time
            if hmac.compare_digest(known.encode(), token.encode()):
                found = tenants
        return found

    def sign_in(self, token: str, who: str) -> str | None:
        """A new session id, or None for an unknown token."""
        tenants = self.check_token(token)
        if tenants is None:
            return None
        sid = secrets.token_urlsafe(32)
        label = who.strip()[:80] or "reviewer"
        with self._lock:
            self._sessions[sid] = (Access(tenants, label, secrets.token_urlsafe(24)), time.time())
        return sid

    def sign_out(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def access(self, cookies: dict[str, str], headers) -> Access | None:
        """The request's access: its session cookie, a bearer token or the proxy's header."""
        sid = cookies.get(SESSION_COOKIE)
        if sid:
            with self._lock:
                found = self._sessions.get(sid)
                if found and time.time() - found[1] > SESSION_SECONDS:
                    del self._sessions[sid]
                    found = None
            if found:
                return found[0]
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            tenants = self.check_token(auth[7:].strip())
            return Access(tenants, "api") if tenants else None
        if self.trusted_header and headers.get(self.trusted_header):
            tenants = frozenset(t.strip() for t in headers[self.trusted_header].split(","))
            who = (headers.get(self.user_header, "") if self.user_header else "") or "proxy user"
            # The proxy's own cookie rides along on a forged cross-site form too, so these
            # sessions need a CSRF token as well: one per user, derived, nothing stored.
            csrf = hmac.new(self._secret, f"{who}|{sorted(tenants)}".encode(), "sha256")
            return Access(frozenset(t for t in tenants if t), who, csrf.hexdigest())
        return None


def csrf_ok(access: Access, submitted: str) -> bool:
    """Browser sessions must echo their CSRF token; bearer requests (a header no other site
    can make a browser send) have none."""
    if not access.csrf:
        return True
    return hmac.compare_digest(access.csrf.encode(), submitted.encode())
