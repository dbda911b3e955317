"""Who is calling: argon2 passwords, signed JWTs, login throttling, the session cookie with CSRF.

One token format serves both doors: the API takes it as `Authorization: Bearer <jwt>` (OAuth2 password flow at
`POST /api/v1/auth/token`), the web admin as the HttpOnly, SameSite=Lax cookie `xar_session`. A cookie is sent
by the browser on its own, so a request authenticated by it that changes something (POST/PUT/PATCH/DELETE) must
also carry the header `X-CSRF-Token` equal to the readable cookie `xar_csrf` (double submit); the session token
itself names that CSRF value, so a planted `xar_csrf` cookie alone does not pass.

Tokens are HS256 under a key derived from the Fernet secret (XAR_SECRET_KEY or the generated key file), carry the
user's `token_version` (a password change or disabling voids every issued token) and expire after
`XAR_API__TOKEN_TTL`. Logins are throttled by `LoginThrottle` (login_throttle.py): failures per (client
address, username), per address and per username make further attempts wait, exponentially and capped, and
the wait is answered 429 before the password is hashed. Nobody is locked: the right password from an address
that has not been failing always signs in, so a stranger's guesses cannot keep the owner out. The client
address is the peer's, or the one uvicorn takes from `X-Forwarded-For` when the peer is a trusted proxy
(uvicorn's FORWARDED_ALLOW_IPS, loopback by default). Hashing runs in a thread: argon2 is deliberately slow
and must not stall the accounts served by the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jwt
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request, Response
from fastapi.security import OAuth2PasswordBearer

from ..config import Settings
from ..store import Role, Store, User, UserNotFound
from ..store.crypto import KEY_FILE_NAME, load_or_create_key_file
from .errors import ApiError
from .login_throttle import LoginThrottle, Refusal, ThrottlePolicy, ThrottleScope

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Authenticator",
    "admin_user",
    "bootstrap_admin",
    "clear_session_cookies",
    "current_user",
    "hash_password",
    "issue_session_cookies",
    "login",
    "optional_user",
    "verify_password",
]

log = structlog.get_logger("xianyu_autoreply.api.auth")

SESSION_COOKIE = "xar_session"
CSRF_COOKIE = "xar_csrf"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_URL = "/api/v1/auth/token"
_ALGORITHM = "HS256"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_hasher = PasswordHasher()
# Verified against when the user does not exist, so that an unknown name costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)
# The app's authenticator while a request is handled, for helpers called without the request.
_current: contextvars.ContextVar[Authenticator | None] = contextvars.ContextVar("xar_authenticator", default=None)


# --- passwords ------------------------------------------------------------------------------------------------


async def hash_password(password: str) -> str:
    """An argon2id hash of `password` (computed in a thread)."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches the stored hash (computed in a thread); a malformed hash never matches."""

    def check() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


# --- tokens ---------------------------------------------------------------------------------------------------


def signing_key(settings: Settings) -> bytes:
    """The JWT key: derived from the first Fernet key, never the key itself (a leaked JWT key opens no secret)."""
    secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
    material = next((part.strip() for part in secret.split(",") if part.strip()), "")
    if not material:
        material = load_or_create_key_file(Path(settings.data_dir) / KEY_FILE_NAME)
    return hmac.new(material.encode("utf-8"), b"xianyu-autoreply/jwt/v1", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Claims:
    username: str
    role: str
    token_version: int
    csrf: str | None


class Authenticator:
    """Issues and checks tokens and logins for one app (kept at `app.state.auth`)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._key = signing_key(settings)
        self.throttle = LoginThrottle(ThrottlePolicy.from_settings(settings.api))

    def issue_token(self, user: User, *, csrf: str | None = None, ttl: float | None = None) -> str:
        """A signed token for `user`; `ttl` (seconds, negative allowed in tests) defaults to the configured one."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user.username,
            "role": str(user.role),
            "ver": user.token_version,
            "iat": now,
            "exp": now + int(self.settings.api.token_ttl if ttl is None else ttl),
        }
        if csrf is not None:
            claims["csrf"] = csrf
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def decode(self, token: str) -> Claims:
        """The token's claims, or 401 `token_expired` / `invalid_token`."""
        try:
            data = jwt.decode(token, self._key, algorithms=[_ALGORITHM], options={"require": ["sub", "exp", "ver"]})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token_expired", "the sign-in has expired; log in again") from None
        except jwt.InvalidTokenError:
            raise _unauthorized("invalid_token", "the token is not valid") from None
        if not isinstance(data.get("sub"), str) or not isinstance(data.get("ver"), int):
            raise _unauthorized("invalid_token", "the token is not valid")
        csrf = data.get("csrf")
        return Claims(data["sub"], str(data.get("role", "")), data["ver"], csrf if isinstance(csrf, str) else None)

    async def user_for(self, claims: Claims) -> User:
        """The user a valid token names, still enabled and at the token's version; else 401 `token_revoked`."""
        try:
            user = await self.store.get_user(claims.username)
        except UserNotFound:
            raise _unauthorized("token_revoked", "this sign-in is no longer valid; log in again") from None
        if user.disabled or user.token_version != claims.token_version:
            raise _unauthorized("token_revoked", "this sign-in is no longer valid; log in again")
        return user

    async def login(self, username: str, password: str, *, client: str) -> User:
        """Check a username and password, throttled (429 before any hashing) and audited; else ApiError 401/429."""
        refusal = self.throttle.admit(client, username)
        if refusal is not None:
            raise _throttled(refusal)
        # From here the attempt counts as a failure until it succeeds (see LoginThrottle.admit).
        try:
            credentials = await self.store.get_user_credentials(username)
        except (UserNotFound, ValueError):
            await verify_password(_DUMMY_HASH, password)
            await self._failed(username, client, known=False)
            raise _unauthorized("invalid_credentials", "wrong username or password") from None
        user = credentials.user
        # `locked_until` is not looked at: a lock would let anyone keep the owner out by failing on purpose.
        if not await verify_password(credentials.password_hash, password):
            await self._failed(username, client, known=True)
            raise _unauthorized("invalid_credentials", "wrong username or password")
        if user.disabled:
            await self.store.audit(
                "user.login_refused",
                actor=username,
                detail={"username": username, "client": client[:64], "reason": "disabled"},
            )
            raise _unauthorized("user_disabled", "this user is disabled")
        self.throttle.succeeded(client, username)
        user = await self.store.record_login_success(username, client=client)
        if _hasher.check_needs_rehash(credentials.password_hash):
            await self.store.update_user(username, password_hash=await hash_password(password), actor=username)
            user = await self.store.get_user(username)
        return user

    async def _failed(self, username: str, client: str, *, known: bool) -> None:
        """Audit a wrong password or an unknown name (the store also counts it on a known user); log a throttle."""
        counted = False
        if known:
            with contextlib.suppress(UserNotFound):  # deleted meanwhile: audited as unknown
                await self.store.record_login_failure(username, client=client)
                counted = True
        if not counted:
            detail = {"username": username[:64], "client": client[:64], "known": False}
            await self.store.audit("user.login_failed", actor="anonymous", detail=detail)
        refusal = self.throttle.check(client, username)
        if refusal is not None:
            log.info(
                "login throttled", client=client, username=username[:64], scope=str(refusal.scope), wait=refusal.wait
            )


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


def _throttled(refusal: Refusal) -> ApiError:
    seconds = max(1, math.ceil(refusal.wait))
    who = "from this address" if refusal.scope is ThrottleScope.ADDRESS else "for this user from this address"
    message = f"too many failed logins {who}; try again in {seconds} s"
    return ApiError(429, "too_many_attempts", message, headers={"Retry-After": str(seconds)})


# --- request plumbing -----------------------------------------------------------------------------------------


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def bind_authenticator(auth: Authenticator) -> contextvars.Token[Authenticator | None]:
    """Make `auth` the one helpers use in this context (the app does this for each request)."""
    return _current.set(auth)


def unbind_authenticator(token: contextvars.Token[Authenticator | None]) -> None:
    """Undo `bind_authenticator` (end of the request)."""
    _current.reset(token)


def _resolve(request: Request | None) -> Authenticator:
    if request is not None:
        return authenticator(request)
    auth = _current.get()
    if auth is None:
        raise RuntimeError("no authenticator: call this while handling a request of the app, or pass request=")
    return auth


def client_address(request: Request) -> str:
    """The caller's address as the ASGI server reports it (behind a trusted proxy: from X-Forwarded-For)."""
    return request.client.host if request.client is not None else "unknown"


async def login(request: Request, username: str, password: str) -> User:
    """Check a login as the token endpoint does (throttling included); for the web admin's form."""
    return await authenticator(request).login(username, password, client=client_address(request))


async def _authenticate(request: Request, bearer: str | None) -> User | None:
    auth = authenticator(request)
    if bearer:
        return await auth.user_for(auth.decode(bearer))
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    claims = auth.decode(token)
    if request.method not in _SAFE_METHODS:
        header = request.headers.get(CSRF_HEADER, "")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        expected = claims.csrf or ""
        if not (header and hmac.compare_digest(header, cookie) and expected and hmac.compare_digest(header, expected)):
            raise ApiError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} header")
    return await auth.user_for(claims)


async def current_user(request: Request, bearer: Annotated[str | None, Depends(_bearer)] = None) -> User:
    """The signed-in user, by bearer token or session cookie (with CSRF on unsafe methods); else 401."""
    user = await _authenticate(request, bearer)
    if user is None:
        raise _unauthorized("not_authenticated", "log in first (bearer token or session cookie)")
    request.state.user = user
    return user


async def optional_user(request: Request, bearer: Annotated[str | None, Depends(_bearer)] = None) -> User | None:
    """Like `current_user`, but None instead of 401 when nobody (validly) signed in; for pages that redirect."""
    try:
        return await _authenticate(request, bearer)
    except ApiError as exc:
        if exc.status == 401:
            return None
        raise


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    """The signed-in user if an admin; 403 otherwise."""
    if user.role is not Role.ADMIN:
        raise ApiError(403, "forbidden", "only an admin may do this")
    return user


def issue_session_cookies(response: Response, user: User, request: Request | None = None) -> str:
    """Sign `user` in on `response`: the HttpOnly session cookie and the readable CSRF cookie; returns the CSRF
    value (the page sends it back as `X-CSRF-Token`). Call while handling a request of the app."""
    auth = _resolve(request)
    csrf = secrets.token_urlsafe(24)
    token = auth.issue_token(user, csrf=csrf)
    max_age = int(auth.settings.api.token_ttl)
    secure = auth.settings.api.cookie_secure
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="lax", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, httponly=False, samesite="lax", secure=secure, path="/")
    return csrf


def clear_session_cookies(response: Response) -> None:
    """Sign out on `response`: both cookies removed."""
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


# --- bootstrap ------------------------------------------------------------------------------------------------


async def bootstrap_admin(store: Store, settings: Settings) -> str | None:
    """Create the first admin from XAR_ADMIN_USERNAME / XAR_ADMIN_PASSWORD when there is no user at all.

    Returns the password when one was generated (no XAR_ADMIN_PASSWORD): the caller prints it once, it is
    stored only as a hash. None when a user already existed or the configured password was used.
    """
    if await store.count_users():
        return None
    given = settings.admin_password.get_secret_value() if settings.admin_password else ""
    password = given or secrets.token_urlsafe(12)
    created = await store.ensure_first_admin(settings.admin_username, await hash_password(password))
    if created:
        log.info("first admin created", username=settings.admin_username, generated_password=not given)
    return password if created and not given else None
