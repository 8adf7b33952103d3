"""Stripe's errors as the gateway's answers: a decline, an outage to retry, or a refusal of us."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import stripe

from orderflow.contracts.payment import GatewayRequest, GatewayResponse
from payments.gateway import GatewayConfigError, GatewayUnavailableError
from payments.stripe_objects import NAME

T = TypeVar("T")


def declined(detail: str) -> GatewayResponse:
    """Stripe's final no to a request, with why."""
    return GatewayResponse(succeeded=False, detail=detail, provider=NAME)


def answer(
    call: Callable[[GatewayRequest], GatewayResponse], request: GatewayRequest
) -> GatewayResponse:
    """A decline or a refused request about this payment is the gateway's final answer."""
    try:
        return call(request)
    except stripe.CardError as err:
        return declined(f"card declined: {err.user_message or err}")
    except stripe.InvalidRequestError as err:
        if (err.http_status or 0) >= 500:
            raise
        return declined(f"{request.kind.value} refused: {err.user_message or err}")


def guard(order_id: str, what: str, call: Callable[[], T]) -> T:
    """Run Stripe calls: unreachable, rate-limited or 5xx is retried; a refusal of us is not.

    Raises:
        GatewayUnavailableError: Stripe did not answer, or limited our rate (the caller retries).
        GatewayConfigError: Stripe refused our key, our permissions or the request.
    """
    try:
        return call()
    except (stripe.RateLimitError, stripe.APIConnectionError, stripe.APIError) as err:
        raise GatewayUnavailableError(NAME, order_id, what, str(err)) from err
    except stripe.StripeError as err:
        if (err.http_status or 0) >= 500 or err.http_status == 429:
            raise GatewayUnavailableError(NAME, order_id, what, str(err)) from err
        # authentication, permission, or a request Stripe refuses: fix the setup, not retry
        raise GatewayConfigError(NAME, order_id, f"{what}: {err}") from err
