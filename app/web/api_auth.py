"""The order API's bearer keys: SHA-256 digests from settings, compared in constant time, each
key with its own rate budget (counted in Redis across replicas)."""

# no `from __future__ import annotations`: FastAPI must see the local dependency types
import hashlib
import hmac
from typing import Annotated, Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.web.api_problems import ApiProblem
from app.web.ingress import RateLimiter
from orderflow.settings import Settings


def api_key_guard(settings: Settings) -> Any:
    """A dependency: the caller's key id (a digest prefix), or 401; then its rate budget."""
    bearer = HTTPBearer(
        auto_error=False,
        scheme_name="ApiKey",
        description="`Authorization: Bearer <key>`; the key's SHA-256 digest is one of"
        " ORDERFLOW_API_KEY_HASHES.",
    )
    limiter = RateLimiter(
        settings,
        limit=settings.api_rate_limit,
        window_seconds=settings.api_rate_window_seconds,
        scope="api",
    )

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        given = credentials.credentials if credentials is not None else ""
        digest = hashlib.sha256(given.encode()).hexdigest()
        matched = False
        for known in settings.api_keys:  # every digest compared: no early exit to time
            matched |= hmac.compare_digest(digest, known)
        if not given or not matched:
            raise ApiProblem(
                401,
                "unauthorized",
                "Unauthorized",
                "an API key is required: `Authorization: Bearer <key>`"
                if not given
                else "this API key is not one of ORDERFLOW_API_KEY_HASHES",
                headers={"WWW-Authenticate": 'Bearer realm="orderflow"'},
            )
        key_id = digest[:12]
        if wait := await limiter.wait_seconds(key_id):
            raise ApiProblem(
                429,
                "rate-limited",
                "Too many requests",
                f"key {key_id}…: over {settings.api_rate_limit} requests in"
                f" {settings.api_rate_window_seconds}s; retry in {wait}s",
                headers={"Retry-After": str(wait)},
            )
        return key_id

    return check
