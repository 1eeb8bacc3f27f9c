"""Who may call what: bearer tokens with scopes, verified client certificates, and a rate
limit per token. The observability interceptor asks an `Access` before each call's
handler runs; health and reflection are always open (probes and tools need them).

Tokens live in a file (a mounted Secret), one per line, hashed:

    # name  sha256 of the token  scopes
    shop-backend  9f86d081884c7d65...  read,write

`recsys token` makes a token and its line. The file is re-read when it changes, so a
token is issued or revoked by editing the Secret, with no restart.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc

from shared.config import ConfigError, Env
from shared.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from shared.tls import peer_identities

log = logging.getLogger(__name__)
SCOPES = ("read", "write", "admin")
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
RELOAD_CHECK_S = 1.0
TOKEN_BYTES = 32


class Access(Protocol):
    def check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """Returns when the caller may make the call `method` (/package.Service/Method);
        raises Unauthenticated, PermissionDenied or ResourceExhausted otherwise."""


def token_hash(token: str) -> str:
    # Tokens are 256 random bits: a plain SHA-256 cannot be reversed or guessed, and a
    # slow password hash would cost every call.
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(name: str, scopes: Sequence[str]) -> tuple[str, str]:
    """A fresh token and the line of the token file that grants it `scopes`."""
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}: {','.join(scopes)}")
    if not name or any(c.isspace() for c in name):
        raise ValueError("a token's name is one word")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, f"{name}  {token_hash(token)}  {','.join(scopes)}"


@dataclass(frozen=True)
class Grant:
    name: str
    scopes: frozenset[str]


def parse_tokens(text: str, source: str) -> dict[str, Grant]:
    """Token hash -> its grant, from the file's text; ValueError names the bad line."""
    grants: dict[str, Grant] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 3:
            raise ValueError(f"{source}:{number}: want `name sha256 scopes`")
        name, digest, scopes = words
        wanted = frozenset(scopes.split(","))
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{source}:{number}: the hash must be 64 lowercase hex digits")
        if not wanted <= set(SCOPES):
            raise ValueError(f"{source}:{number}: scopes must be some of {', '.join(SCOPES)}")
        grants[digest] = Grant(name, wanted)
    return grants


class TokenFile:
    """The grants of a token file, re-read (at most once a second) when it changes; a file
    that does not parse keeps the last good grants, and says so in the log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        try:
            self._grants = parse_tokens(path.read_text(), str(path))
        except (OSError, ValueError) as error:
            raise ConfigError(f"token file {path}: {error}") from None
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int]:
        try:
            status = self.path.stat()
        except OSError:
            return (-1, -1)
        return (status.st_mtime_ns, status.st_size)

    def grant(self, token: str) -> Grant | None:
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK_S:
            self._checked = now
            stamp = self._stat()
            if stamp != self._stamp:
                self._reload(stamp)
        return self._grants.get(token_hash(token))

    def _reload(self, stamp: tuple[int, int]) -> None:
        try:
            self._grants = parse_tokens(self.path.read_text(), str(self.path))
        except (OSError, ValueError) as error:
            log.warning("token file not reloaded", extra={"why": str(error)})
            return
        self._stamp = stamp
        log.info("token file reloaded", extra={"tokens": len(self._grants)})


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimits:
    """A token bucket per client and scope: `rate` calls a second on average, bursts of
    `burst`; a scope without a rate is not limited."""

    rate: Mapping[str, float]
    burst: Mapping[str, float]
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, client: str, scope: str) -> float:
        """0.0 when the call may go now, else the seconds until it may."""
        rate = self.rate.get(scope, 0.0)
        if rate <= 0:
            return 0.0
        burst = max(1.0, self.burst.get(scope, rate))
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault((client, scope), _Bucket(burst, now))
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            kind, _, token = text.partition(" ")
            return token.strip() if kind.lower() == "bearer" and token.strip() else None
    return None


ANY_CERTIFICATE = "*"  # in Policy.identities: any client certificate the CA signed


@dataclass(frozen=True)
class Policy:
    """The scope each method needs, by full method name; a method of a service not listed
    and not open is refused, so a new method is closed until it is given a scope."""

    scopes: Mapping[str, str]
    # Client-certificate names (SAN or CN; ANY_CERTIFICATE for all) that hold a scope.
    identities: Mapping[str, frozenset[str]] = field(default_factory=dict)
    open_scopes: frozenset[str] = frozenset()  # scopes that need no credential
    # Scopes that need none while TLS is off (no certificate to tell the suite's own by).
    open_without_tls: frozenset[str] = frozenset()

    @classmethod
    def of(cls, service: str, scopes: Mapping[str, str], **rest: object) -> Policy:
        """`scopes` by method name, for the methods of `service` (its full name)."""
        full = {f"/{service}/{method}": scope for method, scope in scopes.items()}
        return cls(full, **rest)  # type: ignore[arg-type]


def _service(method: str) -> str:
    return method.lstrip("/").rpartition("/")[0]


class ScopedAccess:
    """A call needs its method's scope: from a bearer token of `tokens`, or from a verified
    client certificate that `policy.identities` names; each client's calls are
    rate-limited per scope."""

    def __init__(self, policy: Policy, tokens: TokenFile | None, limits: RateLimits) -> None:
        self.policy = policy
        self.tokens = tokens
        self.limits = limits

    def check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        if _service(method) in OPEN_SERVICES:
            return
        scope = self.policy.scopes.get(method)
        if scope in self.policy.open_scopes:
            return
        client, scopes = self._caller(context)
        if scope is None or scope not in scopes:
            raise PermissionDenied(f"{client} may not call {method.rpartition('/')[2]}")
        wait_s = self.limits.take(client, scope)
        if wait_s > 0:
            raise ResourceExhausted(
                f"{client} is over its rate limit of {self.limits.rate[scope]:g} {scope}"
                " calls a second",
                retry_after_s=wait_s,
            )

    def _caller(self, context: grpc.aio.ServicerContext) -> tuple[str, frozenset[str]]:
        """Who calls, and the scopes they hold."""
        token = bearer_token(context)
        if token is not None:
            grant = self.tokens.grant(token) if self.tokens is not None else None
            if grant is None:
                raise Unauthenticated("the bearer token is not one this service knows")
            return f"token {grant.name}", grant.scopes
        names = peer_identities(context)
        if not names:
            raise Unauthenticated("send `authorization: Bearer <token>` metadata")
        held = frozenset(
            scope
            for scope, allowed in self.policy.identities.items()
            if ANY_CERTIFICATE in allowed or names & allowed
        )
        return f"certificate {min(names)}", held


@dataclass(frozen=True)
class AccessConfig:
    """A service's access settings, under its prefix: TOKENS_FILE (the bearer tokens it
    takes), <SCOPE>_IDENTITIES (client-certificate names that hold a scope, comma-
    separated), RATE_<SCOPE> (calls a second per client; 0: unlimited) and BURST_<SCOPE>
    (default: one second's worth)."""

    tokens_file: Path | None = None
    identities: Mapping[str, frozenset[str]] = field(default_factory=dict)
    rate: Mapping[str, float] = field(default_factory=dict)
    burst: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Env) -> AccessConfig:
        rate = {s: env.number(f"RATE_{s.upper()}", 0.0) for s in SCOPES}
        if any(math.isinf(r) for r in rate.values()):
            raise ConfigError(f"{env.prefix}RATE_*: a rate must be finite")
        burst = {
            s: env.number(f"BURST_{s.upper()}", max(1.0, rate[s]), minimum=1.0) for s in SCOPES
        }
        identities = {s: _names(env.string(f"{s.upper()}_IDENTITIES", "")) for s in SCOPES}
        path = env.string("TOKENS_FILE", "")
        if path:
            TokenFile(Path(path))  # a bad file stops the service at start, named
        return cls(
            Path(path) if path else None, {k: v for k, v in identities.items() if v}, rate, burst
        )

    def build(self, policy: Policy | None, tls_on: bool) -> ScopedAccess | None:
        """The service's access check; None (anyone may call) when nothing asks for one:
        no token file, no identities configured, and TLS off or no rule that needs it."""
        if policy is None:
            return None
        asked = self.tokens_file is not None or bool(self.identities)
        if not asked and not (tls_on and policy.identities):
            return None
        identities = {s: policy.identities.get(s, frozenset()) for s in policy.identities}
        for scope, names in self.identities.items():
            identities[scope] = identities.get(scope, frozenset()) | names
        opened = policy.open_scopes | (frozenset() if tls_on else policy.open_without_tls)
        effective = Policy(policy.scopes, identities, opened)
        tokens = TokenFile(self.tokens_file) if self.tokens_file else None
        return ScopedAccess(effective, tokens, RateLimits(self.rate, self.burst))


def _names(text: str) -> frozenset[str]:
    return frozenset(p.strip() for p in text.split(",") if p.strip())
